package e2e

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestRepoBindMounts: devcontainer.json bind mounts of folders of the
// repository are mounted (confined to the checkout), the environment's
// volumes, configuration name and port protocol reach `cove env get`, and
// the attacks the review used against bind sources fail safely: a source
// that climbs out of the repository, a source committed as a symlink to a
// host directory, and root in the environment swapping the source for such
// a symlink before a restart. The host directory is never mounted.
func TestRepoBindMounts(t *testing.T) {
	requireTools(t)
	c := newCluster(t)
	u := c.user
	bb := images(t) + "/test/busybox:latest"

	// A host directory the attacks aim at.
	hostDir := filepath.Join(c.dir, "host-secret")
	if err := os.Mkdir(hostDir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(hostDir, "secret"), []byte("HOST-SECRET\n"), 0o600); err != nil {
		t.Fatal(err)
	}

	repo := gitRepo(t, filepath.Join(c.dir, "rbind"), map[string]string{
		".devcontainer/devcontainer.json": `{"name": "Bind demo", "image": "` + bb + `",
			"mounts": ["source=${localWorkspaceFolder}/.devcontainer/data,target=/data,type=bind",
				{"type": "bind", "source": "tools", "target": "/tools", "readonly": true},
				"type=volume,source=hist,target=/hist", "type=tmpfs,target=/scratch"],
			"forwardPorts": [3000, "abc"],
			"portsAttributes": {"3000": {"label": "tls app", "protocol": "https"}}}`,
		".devcontainer/data/keep": "from-repo\n",
		"tools/tool":              "tool\n",
	})
	u.must("env", "create", repo, "--name", "rbind", "--wait", "--timeout", "3m")
	out := u.must("ssh", "rbind", "--", "cat /data/keep /tools/tool; touch /tools/x 2>/dev/null || echo read-only; echo written > /data/new")
	if !strings.Contains(out, "from-repo") || !strings.Contains(out, "tool") || !strings.Contains(out, "read-only") {
		t.Fatalf("repository binds in the environment: %q", out)
	}
	if out := u.must("ssh", "rbind", "--", "cat /workspaces/rbind/.devcontainer/data/new"); strings.TrimSpace(out) != "written" {
		t.Fatalf("the bind is not the checkout's folder: %q", out)
	}

	var env struct {
		Status struct {
			DevcontainerName string
			Warnings         []string
			Volumes          []struct{ Kind, Name, Target, Service string }
			Ports            []struct {
				Port            int
				Protocol, Label string
				Forwarded       bool
			}
		}
	}
	if err := json.Unmarshal([]byte(u.must("env", "get", "rbind", "-o", "json")), &env); err != nil {
		t.Fatal(err)
	}
	st := env.Status
	if st.DevcontainerName != "Bind demo" {
		t.Errorf("devcontainerName = %q", st.DevcontainerName)
	}
	vols := map[string]string{}
	for _, v := range st.Volumes {
		vols[v.Target] = v.Kind + " " + v.Name
	}
	for target, want := range map[string]string{"/data": "bind /workspaces/rbind/.devcontainer/data", "/tools": "bind /workspaces/rbind/tools",
		"/hist": "named hist", "/scratch": "tmpfs "} {
		if vols[target] != want {
			t.Errorf("volume at %s = %q, want %q (all: %v)", target, vols[target], want, st.Volumes)
		}
	}
	found := false
	for _, p := range st.Ports {
		if p.Port == 3000 {
			found = p.Protocol == "https" && p.Label == "tls app" && p.Forwarded
		}
	}
	if !found {
		t.Errorf("port 3000 = %+v, want forwarded, https, labelled", st.Ports)
	}
	if w := strings.Join(st.Warnings, "\n"); !strings.Contains(w, `forwardPorts[1]: "abc" is not a port`) {
		t.Errorf("warnings lack the malformed port: %q", w)
	}
	text := u.must("env", "get", "rbind")
	if !strings.Contains(text, "Config name: Bind demo") || !strings.Contains(text, "/data  bind  from /workspaces/rbind/.devcontainer/data") {
		t.Errorf("env get:\n%s", text)
	}

	t.Run("SwapForSymlink", func(t *testing.T) {
		// Root in the environment replaces the bind source with a symlink
		// to the host directory; the restart must refuse, not mount it.
		u.must("ssh", "rbind", "--", "cd /workspaces/rbind/.devcontainer && mv data data.real && ln -s "+hostDir+" data")
		u.must("env", "stop", "rbind", "--wait")
		_, errOut, code := u.run("env", "start", "rbind", "--wait", "--timeout", "2m")
		if code == 0 {
			out, _, _ := u.run("ssh", "rbind", "--", "cat /data/secret")
			t.Fatalf("start after the swap succeeded; /data/secret: %q", out)
		}
		if !strings.Contains(errOut, "/data") || !strings.Contains(errOut, "symlink") {
			t.Fatalf("start after the swap: exit %d, want a message naming /data and the symlink: %s", code, errOut)
		}
	})

	t.Run("CommittedSymlink", func(t *testing.T) {
		r := gitRepo(t, filepath.Join(c.dir, "rblink"), map[string]string{
			".devcontainer/devcontainer.json": `{"image": "` + bb + `",
				"mounts": ["source=${localWorkspaceFolder}/.devcontainer/data,target=/data,type=bind"]}`,
		})
		if err := os.Symlink(hostDir, filepath.Join(r, ".devcontainer", "data")); err != nil {
			t.Fatal(err)
		}
		gitCommitAll(t, r)
		_, errOut, code := u.run("env", "create", r, "--name", "rblink", "--wait", "--timeout", "3m")
		if code == 0 {
			out, _, _ := u.run("ssh", "rblink", "--", "cat /data/secret")
			t.Fatalf("create with a symlinked bind source succeeded; /data/secret: %q", out)
		}
		if !strings.Contains(errOut, "symlink") {
			t.Fatalf("create: exit %d, want a message about the symlink: %s", code, errOut)
		}
	})

	t.Run("ClimbsOut", func(t *testing.T) {
		r := gitRepo(t, filepath.Join(c.dir, "rbup"), map[string]string{
			".devcontainer/devcontainer.json": `{"image": "` + bb + `",
				"mounts": ["source=${localWorkspaceFolder}/../..,target=/up,type=bind"]}`,
		})
		_, errOut, code := u.run("env", "create", r, "--name", "rbup", "--wait", "--timeout", "3m")
		if code == 0 || !strings.Contains(errOut, "mounts[0]") || !strings.Contains(errOut, "only folders of the repository") {
			t.Fatalf("create with a bind climbing out of the repository: exit %d %s", code, errOut)
		}
	})
}
