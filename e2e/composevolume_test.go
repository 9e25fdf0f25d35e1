package e2e

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
)

// TestComposeShortNamedVolumes: short-syntax named volumes ("data:/..."
// and the one-letter "d:/...", which compose-go alone reads as a Windows
// drive path) are the declared named volumes, shared by the services that
// name them and kept across stop/start; `cove env get` lists them with
// their services, and a "SERVICE:PORT" forwardPorts entry is reported
// against its service.
func TestComposeShortNamedVolumes(t *testing.T) {
	requireTools(t)
	c := newCluster(t)
	u := c.user
	bb := images(t) + "/test/busybox:latest"
	repo := gitRepo(t, filepath.Join(c.dir, "vols"), map[string]string{
		".devcontainer/devcontainer.json": `{"dockerComposeFile": ["compose.yml"], "service": "app",
			"workspaceFolder": "/workspaces/vols", "forwardPorts": ["db:5432"]}`,
		".devcontainer/compose.yml": `services:
  app:
    image: ` + bb + `
    command: ["sleep", "100000"]
    volumes: ["data:/var/lib/db", "d:/srv/d", "../..:/workspaces"]
  db:
    image: ` + bb + `
    command: ["sleep", "100000"]
    volumes: ["data:/shared"]
volumes:
  data:
  d:
`,
	})
	u.must("env", "create", repo, "--name", "vols", "--wait", "--timeout", "3m")
	u.must("ssh", "vols", "--", "echo kept > /var/lib/db/file; echo one > /srv/d/file")
	u.must("env", "stop", "vols", "--wait")
	u.must("env", "start", "vols", "--wait", "--timeout", "2m")
	if out := u.must("ssh", "vols", "--", "cat /var/lib/db/file /srv/d/file"); out != "kept\none\n" {
		t.Fatalf("named volumes after stop/start: %q", out)
	}

	var env struct {
		Status struct {
			Volumes []struct{ Kind, Name, Target, Service string }
			Ports   []struct {
				Port    int
				Service string
			}
		}
	}
	if err := json.Unmarshal([]byte(u.must("env", "get", "vols", "-o", "json")), &env); err != nil {
		t.Fatal(err)
	}
	var vols []string
	for _, v := range env.Status.Volumes {
		vols = append(vols, v.Service+" "+v.Kind+" "+v.Name+" "+v.Target)
	}
	all := strings.Join(vols, "\n")
	for _, want := range []string{"app named devcontainer_data /var/lib/db", "app named devcontainer_d /srv/d", "db named devcontainer_data /shared"} {
		if !strings.Contains(all, want) {
			t.Errorf("volumes lack %q:\n%s", want, all)
		}
	}
	if strings.Contains(all, "anonymous") {
		t.Errorf("a short-syntax named volume became anonymous:\n%s", all)
	}
	found := false
	for _, p := range env.Status.Ports {
		found = found || p.Port == 5432 && p.Service == "db"
	}
	if !found {
		t.Errorf("port 5432 not reported against db: %+v", env.Status.Ports)
	}
}
