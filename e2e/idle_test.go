package e2e

import (
	"encoding/json"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// TestDeadAgentRestarted: the runner no longer re-observes a quiet running
// environment every 10 s (no runc state, no probe handshake); it learns
// that the container exited from the end of its agent's ports stream. So:
// an environment whose PID 1, the agent, is killed from the host (an OOM
// kill, say) is started again and usable, and says so in its status.
func TestDeadAgentRestarted(t *testing.T) {
	c := newCluster(t)
	u := c.user
	reg := images(t)
	repo := gitRepo(t, filepath.Join(c.dir, "deadrepo"), map[string]string{
		".devcontainer/devcontainer.json": `{"image": "` + reg + `/test/busybox:latest"}`,
	})
	u.must("env", "create", repo, "--name", "dead", "--wait", "--timeout", "3m")
	id := field(u.envJSON("dead"), "id")
	pid1 := func() int {
		out, err := exec.Command("runc", "--root", c.runcRoots[0], "state", id).Output()
		if err != nil {
			return 0
		}
		var st struct {
			Pid    int
			Status string
		}
		if json.Unmarshal(out, &st) != nil || st.Status != "running" {
			return 0
		}
		return st.Pid
	}
	before := pid1()
	if before <= 0 {
		t.Fatal("no running container")
	}
	if err := syscall.Kill(before, syscall.SIGKILL); err != nil {
		t.Fatalf("kill the agent (pid %d): %v", before, err)
	}
	waitFor(t, "the environment's container to run again", func() bool {
		p := pid1()
		return p > 0 && p != before
	})
	waitFor(t, "a command in the restarted environment", func() bool {
		out, _, code := u.run("ssh", "dead", "--", "echo", "back")
		return code == 0 && strings.TrimSpace(out) == "back"
	})
	if st := field(u.envJSON("dead"), "status", "phase"); st != "ENVIRONMENT_PHASE_RUNNING" {
		t.Errorf("phase %s after the restart", st)
	}
}
