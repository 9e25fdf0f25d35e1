package e2e

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The review of 2026-12 (shared/reviews/security-2026-12.md) broke
// isolation with three users on one runner, using only what every user
// has: root inside their own environment and control of their own
// repository. TestIsolation replays those attacks through the real binary,
// alice the victim and carol the attacker, and checks the safe outcome.
func TestIsolation(t *testing.T) {
	requireTools(t)
	c := newCluster(t)
	alice := c.user
	carol := c.newUser("carol", "owner") // owner only to use local repositories
	reg := images(t)
	bb := reg + "/test/busybox:latest"
	deb := reg + "/test/debian:latest" // runs chmod from PATH (busybox's sh has it built in)

	// A host directory the attacks aim at, with a secret any host uid
	// could not read either.
	hostDir := filepath.Join(c.dir, "host-secret")
	if err := os.Mkdir(hostDir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(hostDir, "ssh_user_ca"), []byte("HOST-SECRET-KEY\n"), 0o600); err != nil {
		t.Fatal(err)
	}

	// alice's environment, with a secret in root's home.
	victimRepo := gitRepo(t, filepath.Join(c.dir, "victim"), map[string]string{
		".devcontainer/devcontainer.json": `{"image": "` + bb + `"}`,
	})
	alice.must("env", "create", victimRepo, "--name", "victim", "--wait", "--timeout", "3m")
	alice.must("ssh", "victim", "--", "mkdir -p /root && echo ALICE-SECRET > /root/secret.txt")
	victimID := field(alice.envJSON("victim"), "id")

	t.Run("AgentChannel", func(t *testing.T) {
		// F1: carol's feature tries to point the runner's agent connection
		// at alice's agent, then her onCreateCommand (run as uid 0, which
		// used to open a new connection) would run in alice's environment.
		repo := gitRepo(t, filepath.Join(c.dir, "plant"), map[string]string{
			".devcontainer/devcontainer.json": `{"image": "` + bb + `", "features": {"./plant": {}}, "remoteUser": "0",
				"onCreateCommand": "echo \"[runs in] $COVE_ENVIRONMENT_ID\"; cat /root/secret.txt; echo pwned > /root/pwned.txt"}`,
			".devcontainer/plant/devcontainer-feature.json": `{"id": "plant", "version": "1.0.0"}`,
			".devcontainer/plant/install.sh": `#!/bin/sh
mkdir -p /.cove/run 2>/dev/null
cd /.cove/run 2>/dev/null && ln -s ../../` + victimID + `/agent.sock evil 2>/dev/null && mv agent.sock real.sock 2>/dev/null; mv evil agent.sock 2>/dev/null
find / -xdev -type s > /tmp/sockets 2>/dev/null
echo planted
`,
		})
		carol.must("env", "create", repo, "--name", "plant", "--wait", "--timeout", "3m")
		carolID := field(carol.envJSON("plant"), "id")
		waitFor(t, "carol's lifecycle commands", func() bool {
			return field(carol.envJSON("plant"), "status", "devcontainer", "phase") == "SUB_PHASE_READY"
		})
		logs := carol.must("env", "logs", "plant")
		if !strings.Contains(logs, "[runs in] "+carolID) || strings.Contains(logs, "ALICE-SECRET") || strings.Contains(logs, victimID) && strings.Contains(logs, "[runs in] "+victimID) {
			t.Fatalf("carol's onCreateCommand did not run in her own environment:\n%s", logs)
		}
		if _, _, code := alice.run("ssh", "victim", "--", "test -e /root/pwned.txt"); code == 0 {
			t.Fatal("carol's command ran in alice's environment")
		}
		// No agent socket is reachable from inside an environment.
		if out, _, code := carol.run("ssh", "plant", "--", "cat /tmp/sockets"); code != 0 || strings.Contains(out, "agent.sock") {
			t.Fatalf("sockets inside carol's environment: %d %q", code, out)
		}
		// S9: the environments' host directories (overlays with the
		// images' set-id files) are out of other host users' reach.
		if out, err := exec.Command("setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups",
			"ls", filepath.Join(c.runnerDir(), "envs", victimID, "rootfs")).CombinedOutput(); err == nil {
			t.Fatalf("another host user lists alice's root file system:\n%s", out)
		}
	})

	t.Run("FeatureCache", func(t *testing.T) {
		// F3: carol's repository carries the same local feature as alice's
		// and a containerEnv PATH that makes the install run her own
		// chmod. She creates first; alice must not get her layer.
		common := map[string]string{
			".devcontainer/common/devcontainer-feature.json": `{"id": "common", "version": "1.0.0"}`,
			".devcontainer/common/install.sh":                "#!/bin/sh\nmkdir -p /opt/common && echo legit > /opt/common/tool\n",
		}
		with := func(extra map[string]string) map[string]string {
			for k, v := range common {
				extra[k] = v
			}
			return extra
		}
		crepo := gitRepo(t, filepath.Join(c.dir, "crepo"), with(map[string]string{
			".devcontainer/devcontainer.json": `{"image": "` + deb + `", "features": {"./common": {}},
				"containerEnv": {"PATH": "/workspaces/crepo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}}`,
			"bin/chmod": "#!/bin/sh\necho planted by carol > /etc/trojan-from-carol\nexec /bin/chmod \"$@\"\n",
		}))
		if err := os.Chmod(filepath.Join(crepo, "bin/chmod"), 0o755); err != nil {
			t.Fatal(err)
		}
		gitCommitAll(t, crepo)
		carol.must("env", "create", crepo, "--name", "crepo", "--wait", "--timeout", "3m")
		if out, _, code := carol.run("ssh", "crepo", "--", "cat /etc/trojan-from-carol"); code != 0 || !strings.Contains(out, "planted") {
			t.Fatalf("the attack did not run in carol's own environment (%d %q): the test proves nothing", code, out)
		}
		arepo := gitRepo(t, filepath.Join(c.dir, "arepo"), with(map[string]string{
			".devcontainer/devcontainer.json": `{"image": "` + deb + `", "features": {"./common": {}}}`,
		}))
		alice.must("env", "create", arepo, "--name", "arepo", "--wait", "--timeout", "3m")
		if out, _, code := alice.run("ssh", "arepo", "--", "cat /etc/trojan-from-carol"); code == 0 {
			t.Fatalf("alice's environment holds carol's trojan: %q", out)
		}
		if out, _, code := alice.run("ssh", "arepo", "--", "cat /opt/common/tool"); code != 0 || out != "legit\n" {
			t.Fatalf("alice's feature: %d %q", code, out)
		}
	})

	t.Run("FeatureTarball", func(t *testing.T) {
		// F4: a feature tarball with a symlink to a host directory, then a
		// directory entry of the same name with mode 0777.
		var buf bytes.Buffer
		tw := tar.NewWriter(&buf)
		add := func(h tar.Header, body string) {
			h.Size = int64(len(body))
			if err := tw.WriteHeader(&h); err != nil {
				t.Fatal(err)
			}
			io.WriteString(tw, body)
		}
		add(tar.Header{Name: "devcontainer-feature.json", Typeflag: tar.TypeReg, Mode: 0o644}, `{"id": "evil", "version": "1.0.0"}`)
		add(tar.Header{Name: "install.sh", Typeflag: tar.TypeReg, Mode: 0o755}, "#!/bin/sh\necho evil-installed\n")
		add(tar.Header{Name: "x", Typeflag: tar.TypeSymlink, Linkname: hostDir}, "")
		add(tar.Header{Name: "x/", Typeflag: tar.TypeDir, Mode: 0o777}, "")
		tw.Close()
		url := serveOnce(t, "/evil.tar", buf.Bytes())
		repo := gitRepo(t, filepath.Join(c.dir, "tarball"), map[string]string{
			".devcontainer/devcontainer.json": `{"image": "` + bb + `", "features": {"` + url + `": {}}}`,
		})
		out, errOut, code := carol.run("env", "create", repo, "--name", "tarball", "--wait", "--timeout", "3m")
		t.Logf("create: exit %d\n%s%s", code, out, errOut)
		if logs, _, _ := carol.run("env", "logs", "tarball"); !strings.Contains(logs, "evil-installed") {
			t.Fatalf("the feature tarball was not unpacked and installed (the test proves nothing): %s%s\nlogs: %s", out, errOut, logs)
		}
		fi, err := os.Stat(hostDir)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o700 {
			t.Fatalf("the runner chmodded a host directory through the feature's symlink: %o", fi.Mode().Perm())
		}
	})

	t.Run("FeatureSnapshotRace", func(t *testing.T) {
		// F2: while the runner snapshots the installed features, the
		// environment keeps swapping a directory of its upper layer for a
		// symlink to a host directory. No host file may reach the layer.
		repo := gitRepo(t, filepath.Join(c.dir, "steal"), map[string]string{
			".devcontainer/devcontainer.json":               `{"image": "` + bb + `", "features": {"./steal": {}}}`,
			".devcontainer/steal/devcontainer-feature.json": `{"id": "steal", "version": "1.0.0"}`,
			".devcontainer/steal/install.sh": `#!/bin/sh
mkdir -p /zzz
i=0; while [ $i -lt 300 ]; do echo pad > /zzz/f$i; i=$((i+1)); done
cat > /tmp/swap.sh <<'EOF'
while :; do mv /zzz /zzz.real; ln -s ` + hostDir + ` /zzz; rm -f /zzz; mv /zzz.real /zzz; done
EOF
setsid sh /tmp/swap.sh </dev/null >/dev/null 2>&1 &
echo swapping
`,
		})
		carol.must("env", "create", repo, "--name", "steal", "--wait", "--timeout", "3m")
		waitFor(t, "the features installed", func() bool {
			return field(carol.envJSON("steal"), "status", "devcontainer", "phase") == "SUB_PHASE_READY"
		})
		carol.must("env", "stop", "steal", "--wait")
		layers := filepath.Join(c.runnerDir(), "images", "features")
		// The snapshot holds zzz, or zzz.real, or neither (the swap loop
		// decides); it exists, or failed with the warning.
		m, _ := filepath.Glob(filepath.Join(layers, "sha256-*[0-9a-f]"))
		if len(m) == 0 && c.up.count("features installed but not cached") == 0 {
			t.Fatalf("no snapshot was taken (the test proves nothing); layers: %v", m)
		}
		err := filepath.WalkDir(layers, func(p string, d fs.DirEntry, err error) error {
			if err != nil || !d.Type().IsRegular() {
				return nil
			}
			if b, _ := os.ReadFile(p); bytes.Contains(b, []byte("HOST-SECRET")) {
				return fmt.Errorf("host secret copied into a feature layer: %s", p)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	})

	t.Run("WorkspaceMountSwap", func(t *testing.T) {
		// F5: the environment replaces its checkout with a symlink to the
		// host's /; the next start must not mount the host at the
		// workspaceMount target.
		repo := gitRepo(t, filepath.Join(c.dir, "wsm"), map[string]string{
			".devcontainer/devcontainer.json": `{"image": "` + bb + `",
				"workspaceMount": "source=${localWorkspaceFolder},target=/code,type=bind", "workspaceFolder": "/code"}`,
		})
		carol.must("env", "create", repo, "--name", "wsm", "--wait", "--timeout", "3m")
		carol.must("ssh", "wsm", "--", "cd /workspaces && mv wsm wsm.orig && ln -s / wsm")
		carol.must("env", "stop", "wsm", "--wait")
		_, errOut, code := carol.run("env", "start", "wsm", "--wait", "--timeout", "2m")
		if code == 0 {
			out, _, _ := carol.run("ssh", "wsm", "--", "ls /code")
			if strings.Contains(out, "proc") && strings.Contains(out, "etc") || strings.Contains(out, "var") {
				t.Fatalf("the host's / is mounted at /code:\n%s", out)
			}
			t.Fatalf("start after the swap succeeded; /code holds %q", out)
		}
		if !strings.Contains(errOut, "symlink") {
			t.Fatalf("start after the swap: exit %d, want a message about the symlink: %s", code, errOut)
		}
	})

	t.Run("ComposeBindSwap", func(t *testing.T) {
		// F6: a sibling service swaps the dev service's bind source for a
		// symlink to / while the dev service waits for it to be healthy.
		// The dev service must get the directory that was there (staged
		// before anything of the environment ran), or fail: never the
		// host's /.
		repo := gitRepo(t, filepath.Join(c.dir, "cbind"), map[string]string{
			"data/keep": "mine\n",
			".devcontainer/devcontainer.json": `{"dockerComposeFile": ["compose.yml"], "service": "dev",
				"workspaceFolder": "/workspaces/cbind"}`,
			".devcontainer/compose.yml": `services:
  dev:
    image: ` + bb + `
    command: ["sleep", "100000"]
    volumes: ["../data:/hostroot", "../..:/workspaces"]
    depends_on: {evil: {condition: service_healthy}}
  evil:
    image: ` + bb + `
    volumes: ["..:/ws"]
    command: ["sh", "-c", "mv /ws/data /ws/data.real && ln -s / /ws/data; touch /tmp/ready; exec sleep 100000"]
    healthcheck: {test: ["CMD", "test", "-f", "/tmp/ready"], interval: 1s, retries: 30}
`,
		})
		_, errOut, code := carol.run("env", "create", repo, "--name", "cbind", "--wait", "--timeout", "3m")
		if code != 0 {
			if !strings.Contains(errOut, "/hostroot") || !strings.Contains(errOut, "symlink") {
				t.Fatalf("create: exit %d, want a message about /hostroot's source: %s", code, errOut)
			}
			return
		}
		out, _, code := carol.run("ssh", "cbind", "--", "ls /hostroot; ls -la /workspaces/cbind")
		if code != 0 || !strings.HasPrefix(out, "keep\n") || !strings.Contains(out, "data -> /") {
			t.Fatalf("/hostroot after the swap (want the repository's data directory, and the swap done): %d %q", code, out)
		}
		// A restart stages again: the checkout now holds a symlink there.
		carol.must("env", "stop", "cbind", "--wait")
		if _, errOut, code := carol.run("env", "start", "cbind", "--wait", "--timeout", "2m"); code == 0 || !strings.Contains(errOut, "symlink") {
			out, _, _ := carol.run("ssh", "cbind", "--", "ls /hostroot")
			t.Fatalf("restart after the swap: exit %d %s; /hostroot holds %q", code, errOut, out)
		}
	})

	t.Run("VolumeName", func(t *testing.T) {
		// F7: a volume named ".." would mount the environment's runner
		// directory.
		repo := gitRepo(t, filepath.Join(c.dir, "dotdot"), map[string]string{
			".devcontainer/devcontainer.json": `{"image": "` + bb + `", "mounts": [{"type": "volume", "source": "..", "target": "/envdir"}]}`,
		})
		_, errOut, code := carol.run("env", "create", repo, "--name", "dotdot", "--wait", "--timeout", "3m")
		if code == 0 || !strings.Contains(errOut, `volume name ".."`) {
			t.Fatalf("create with a volume named '..': exit %d %s", code, errOut)
		}
	})
}

// runnerDir is the data directory of the cluster's runner (cove up's).
func (c *cluster) runnerDir() string { return filepath.Join(c.dir, "data", "runner") }

// newUser creates a user in the cluster's organization and returns a CLI
// logged in as them.
func (c *cluster) newUser(name, role string) *env {
	c.t.Helper()
	body, _ := json.Marshal(map[string]string{"name": name, "role": role})
	req, err := http.NewRequest("POST", "http://"+c.server+"/cove.v1.UserService/CreateUser", bytes.NewReader(body))
	if err != nil {
		c.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+c.token())
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	var out struct{ Token string }
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || resp.StatusCode != 200 || out.Token == "" {
		c.t.Fatalf("create user %s: %d %v", name, resp.StatusCode, err)
	}
	cfgDir := filepath.Join(c.dir, name)
	if err := os.MkdirAll(cfgDir, 0o700); err != nil {
		c.t.Fatal(err)
	}
	cfg, _ := json.Marshal(map[string]string{"server": "http://" + c.server, "token": out.Token})
	if err := os.WriteFile(filepath.Join(cfgDir, "config.json"), cfg, 0o600); err != nil {
		c.t.Fatal(err)
	}
	return &env{t: c.t, cove: c.user.cove, cfgDir: cfgDir, sshConf: filepath.Join(cfgDir, "ssh_config")}
}

// serveOnce serves body at path over HTTP on loopback for the test and
// returns its URL.
func serveOnce(t *testing.T, path string, body []byte) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != path {
			http.NotFound(w, r)
			return
		}
		w.Write(body)
	}), ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return "http://" + ln.Addr().String() + path
}
