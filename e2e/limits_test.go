package e2e

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/covedev/cove/internal/resources"
)

// TestClassLimits: the default class's memory, reclaim target, swap, pids
// and IO limits come from cove up's flags and hold in a real environment
// reached over SSH through the gateway: a memory hog is OOM-killed inside
// while a session opened before stays up, the kill is named in `cove env
// logs`, and a direct-IO writer stays under the write bandwidth.
func TestClassLimits(t *testing.T) {
	const (
		mem   = 256 << 20
		pids  = 300
		write = 4 << 20 // bytes/s
		total = 16 << 20
	)
	c := newClusterWith(t, "--class-memory", fmt.Sprint(mem), "--class-pids", fmt.Sprint(pids),
		"--class-io-write-bps", fmt.Sprint(write))
	u := c.user
	reg := images(t)
	repo := gitRepo(t, filepath.Join(c.dir, "limited"), map[string]string{
		".devcontainer/devcontainer.json": `{"image": "` + reg + `/test/debian:latest", "remoteUser": "dev"}`,
	})
	u.must("env", "create", repo, "--name", "limited", "--wait", "--timeout", "3m")
	u.must("config-ssh", "--ssh-config", u.sshConf)
	id := field(u.envJSON("limited"), "id")
	if id == "" {
		t.Fatal("no environment id")
	}

	// The limits on the environment's cgroup, from the flags.
	cg := resources.CgroupPath(c.cgroup, id)
	read := func(controller, file string) string {
		b, err := os.ReadFile(filepath.Join("/sys/fs/cgroup", controller, cg, file))
		if err != nil {
			t.Fatal(err)
		}
		return strings.TrimSpace(string(b))
	}
	if _, err := os.Stat("/sys/fs/cgroup/memory"); err == nil { // v1 (this host)
		for _, c := range []struct{ controller, file, want string }{
			{"memory", "memory.limit_in_bytes", fmt.Sprint(mem)},
			{"memory", "memory.soft_limit_in_bytes", fmt.Sprint(mem / 100 * 90 / os.Getpagesize() * os.Getpagesize())},
			{"pids", "pids.max", fmt.Sprint(pids)},
		} {
			if got := read(c.controller, c.file); got != c.want {
				t.Errorf("%s = %s, want %s", c.file, got, c.want)
			}
		}
		if _, err := os.Stat("/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes"); err == nil {
			if got := read("memory", "memory.memsw.limit_in_bytes"); got != fmt.Sprint(mem) {
				t.Errorf("memory+swap = %s, want the memory limit (no swap)", got)
			}
		}
	}

	// A session open before the hog, as a user's shell would be.
	sess := exec.Command("ssh", "-F", u.sshConf, "limited.cove", "--", "echo session-up; exec sleep 600")
	sess.Env = append(os.Environ(), "COVE_CONFIG_DIR="+u.cfgDir)
	out, err := sess.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := sess.Start(); err != nil {
		t.Fatal(err)
	}
	ended := make(chan struct{})
	var sessErr error
	t.Cleanup(func() { _ = sess.Process.Kill(); <-ended })
	up := make(chan bool, 1)
	go func() {
		defer close(ended)
		sc := bufio.NewScanner(out)
		up <- sc.Scan() && sc.Text() == "session-up"
		for sc.Scan() {
		}
		sessErr = sess.Wait()
	}()
	if !<-up {
		t.Fatal("the session did not start")
	}

	// dd holds one block of bs bytes: twice the class's memory.
	if o, code := u.ssh("limited.cove", "--", fmt.Sprintf("dd if=/dev/zero of=/dev/null bs=%d count=2", 2*mem)); code == 0 {
		t.Errorf("memory hog was not killed: %s", o)
	}
	select {
	case <-ended:
		t.Errorf("the session ended with the hog: %v", sessErr)
	default:
	}
	if o, code := u.ssh("limited.cove", "--", "echo usable"); code != 0 || strings.TrimSpace(o) != "usable" {
		t.Errorf("environment after the hog: %d %q", code, o)
	}
	want := fmt.Sprintf("dd was killed: out of memory at %d MB", mem>>20)
	waitFor(t, "the OOM kill in the environment's log", func() bool {
		return strings.Contains(u.must("env", "logs", "limited"), want)
	})
	// And in its status: cove env get names the process.
	waitFor(t, "the OOM kill in cove env get", func() bool {
		return strings.Contains(u.must("env", "get", "limited"), "Last OOM:    "+want)
	})

	// Direct IO to the workspace, on the data dir's disk: a limit can only
	// slow the writer, so the bound holds however loaded the host is.
	start := time.Now()
	o, code := u.ssh("limited.cove", "--", fmt.Sprintf("dd if=/dev/zero of=/workspaces/limited/f bs=1M count=%d oflag=direct 2>&1 && rm /workspaces/limited/f", total>>20))
	elapsed := time.Since(start)
	if code != 0 {
		t.Fatalf("dd: %d %s", code, o)
	}
	rate := float64(total) / elapsed.Seconds()
	if rate > 1.5*write {
		t.Errorf("wrote %d bytes at %s bytes/s, over 1.5 × the %d bytes/s limit", total, strconv.FormatFloat(rate, 'f', 0, 64), write)
	}
	t.Logf("direct IO through SSH: %d bytes at %s bytes/s (limit %d)", total, strconv.FormatFloat(rate, 'f', 0, 64), write)
}
