package e2e

import (
	"bufio"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// scrapeValue returns the value of the series name{env="id"} in the
// runner's /metrics at addr, or -1 when it is not there.
func scrapeValue(t *testing.T, addr, name, id string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatalf("scrape: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("scrape: %s", resp.Status)
	}
	prefix := name + `{env="` + id + `"} `
	s := bufio.NewScanner(resp.Body)
	for s.Scan() {
		if v, ok := strings.CutPrefix(s.Text(), prefix); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("%s: %v", s.Text(), err)
			}
			return f
		}
	}
	return -1
}

// TestUsageVisible: a busy environment's CPU shows in the runner's
// /metrics (read from its cgroup at the scrape), in `cove env top --once`,
// and, once the runner has sampled it twice, in `cove env get`'s Usage
// line, with the class's limits.
func TestUsageVisible(t *testing.T) {
	metrics := freePort(t)
	c := newClusterWith(t, "--metrics-listen", metrics, "--class-cpus", "1")
	u := c.user
	reg := images(t)
	repo := gitRepo(t, filepath.Join(c.dir, "usagerepo"), map[string]string{
		".devcontainer/devcontainer.json": `{"image": "` + reg + `/test/busybox:latest"}`,
	})
	u.must("env", "create", repo, "--name", "busy", "--wait", "--timeout", "3m")
	envID := field(u.envJSON("busy"), "id")

	stop := u.background("ssh", "busy", "--", `while [ ! -e /tmp/stop ]; do :; done`)
	defer stop()
	defer u.must("ssh", "busy", "--", "touch /tmp/stop")
	var first float64
	waitFor(t, "the environment's CPU time in /metrics", func() bool {
		first = scrapeValue(t, metrics, "cove_environment_cpu_seconds_total", envID)
		return first > 0
	})
	waitFor(t, "the environment's CPU time to grow between scrapes", func() bool {
		return scrapeValue(t, metrics, "cove_environment_cpu_seconds_total", envID) > first
	})
	if v := scrapeValue(t, metrics, "cove_environment_memory_limit_bytes", envID); v != 1<<30 {
		t.Errorf("memory limit scraped as %v, want the class's 1 GiB", v)
	}
	if v := scrapeValue(t, metrics, "cove_environment_pids", envID); v < 1 {
		t.Errorf("pids scraped as %v", v)
	}

	if out := u.must("env", "top", "--once"); !strings.Contains(out, "busy") || !strings.Contains(out, "RUNNING") {
		t.Errorf("cove env top --once:\n%s", out)
	}
	// The runner samples every 30 s and reports the second sample (CPU is
	// an average between two).
	var get string
	waitFor(t, "a Usage line with CPU in cove env get", func() bool {
		get = u.must("env", "get", "busy")
		return strings.Contains(get, "Usage:       CPU ") && !strings.Contains(get, "Usage:       CPU 0 ")
	})
	if !strings.Contains(get, " / 1 GiB") {
		t.Errorf("Usage line without the memory limit:\n%s", get)
	}
	if out := u.must("env", "top", "--once"); !strings.Contains(out, "/1 GiB") {
		t.Errorf("cove env top --once without the sampled usage:\n%s", out)
	}
}
