package features

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/covedev/cove/internal/testutil"
)

// toyFeatures resolves two local features: greeter writes $TARGET/greeting
// from its message option; reader depends on greeter (with options) and
// copies the greeting plus its environment into $TARGET/reader.
func toyFeatures(t *testing.T, target string) []Feature {
	t.Helper()
	cfg := t.TempDir()
	writeFeature(t, filepath.Join(cfg, "greeter"), optsMeta("greeter", map[string]any{
		"options": map[string]any{
			"message": map[string]any{"type": "string", "default": "hello"},
			"target":  map[string]any{"type": "string", "default": "/nonexistent"},
			"loud":    map[string]any{"type": "boolean", "default": false},
		},
		"containerEnv": map[string]string{"GREETER_HOME": "/opt/greeter", "PATH": "/opt/greeter/bin:${PATH}"},
	}), `mkdir -p "$TARGET"
[ "$LOUD" = true ] && MESSAGE="$MESSAGE!"
printf '%s\n' "$MESSAGE" > "$TARGET/greeting"
`)
	writeFeature(t, filepath.Join(cfg, "reader"), optsMeta("reader", map[string]any{
		"dependsOn": map[string]any{"./greeter": map[string]any{"message": "it's \"quoted\" $HOME `x`", "target": target, "loud": true}},
	}), `T=`+shQuote(target)+`
test -f "$T/greeting"
{
	cat "$T/greeting"
	echo "remote=$_REMOTE_USER home=$_REMOTE_USER_HOME container=$_CONTAINER_USER chome=$_CONTAINER_USER_HOME"
	echo "greeter_home=$GREETER_HOME path=$PATH"
	echo "pwd=$(pwd)"
} > "$T/reader"
`)
	fs, err := newResolver(t).Resolve(context.Background(), []Ref{{ID: "./reader"}}, cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := ids(fs); len(got) != 2 || got[0] != "greeter" || got[1] != "reader" {
		t.Fatalf("order = %v", got)
	}
	return fs
}

func TestInstallScriptSyntaxAndOrder(t *testing.T) {
	fs := toyFeatures(t, "/out")
	script := InstallScript(fs, "/tmp/cove-features", "vscode", "")
	g := strings.Index(script, "cd '/tmp/cove-features/1-greeter'")
	r := strings.Index(script, "cd '/tmp/cove-features/2-reader'")
	if g < 0 || r < g {
		t.Fatalf("features not in order:\n%s", script)
	}
	if !strings.Contains(script, "export LOUD='true'") || !strings.Contains(script, "export TARGET='/out'") {
		t.Errorf("option env missing:\n%s", script)
	}
	for _, sh := range []string{"/bin/sh", "/bin/busybox"} {
		if _, err := os.Stat(sh); err != nil {
			continue
		}
		args := []string{"-n", "-c", script}
		if strings.HasSuffix(sh, "busybox") {
			args = append([]string{"sh"}, args...)
		}
		if out, err := exec.Command(sh, args...).CombinedOutput(); err != nil {
			t.Errorf("%s -n: %v\n%s", sh, err, out)
		}
	}
}

func TestInstallScriptRuns(t *testing.T) {
	out := t.TempDir()
	fs := toyFeatures(t, out)
	containerDir := t.TempDir()
	if err := Stage(context.Background(), fs, containerDir, os.Getuid(), os.Getgid()); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(containerDir, "1-greeter", "devcontainer-features.env")); err != nil || !strings.Contains(string(b), "LOUD='true'") {
		t.Errorf("devcontainer-features.env = %q, %v", b, err)
	}
	script := InstallScript(fs, containerDir, "root", "root")
	cmd := exec.Command("/bin/sh", "-c", script)
	cmd.Env = []string{"PATH=/usr/bin:/bin"}
	b, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("install: %v\n%s", err, b)
	}
	got, err := os.ReadFile(filepath.Join(out, "reader"))
	if err != nil {
		t.Fatalf("reader did not run: %v\n%s", err, b)
	}
	for _, want := range []string{
		"it's \"quoted\" $HOME `x`!\n",
		"remote=root home=/root container=root chome=/root",
		"greeter_home=/opt/greeter path=/opt/greeter/bin:/usr/bin:/bin",
		"pwd=" + filepath.Join(containerDir, "2-reader"),
	} {
		if !strings.Contains(string(got), want) {
			t.Errorf("reader output lacks %q:\n%s", want, got)
		}
	}
}

func TestInstallScriptFailsFast(t *testing.T) {
	cfg := t.TempDir()
	marker := filepath.Join(t.TempDir(), "second-ran")
	writeFeature(t, filepath.Join(cfg, "a-broken"), optsMeta("a-broken", nil), "exit 3\n")
	writeFeature(t, filepath.Join(cfg, "b-after"), optsMeta("b-after", nil), "touch "+shQuote(marker)+"\n")
	fs, err := newResolver(t).Resolve(context.Background(), []Ref{{ID: "./b-after"}, {ID: "./a-broken"}}, cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := Stage(context.Background(), fs, dir, os.Getuid(), os.Getgid()); err != nil {
		t.Fatal(err)
	}
	b, err := exec.Command("/bin/sh", "-c", InstallScript(fs, dir, "", "")).CombinedOutput()
	if err == nil {
		t.Fatalf("script succeeded:\n%s", b)
	}
	if !strings.Contains(string(b), "feature a-broken 1.0.0 (./a-broken) failed to install (install.sh exit status 3)") {
		t.Errorf("failure message does not name the feature:\n%s", b)
	}
	if _, err := os.Stat(marker); err == nil {
		t.Error("a feature ran after a failure")
	}
}

// TestInstallScriptChroot runs the script as root in a busybox root
// filesystem, with a non-root remote user from its /etc/passwd.
func TestInstallScriptChroot(t *testing.T) {
	testutil.RequireRoot(t, "chroot")
	if _, err := os.Stat("/bin/busybox"); err != nil {
		t.Skip("needs /bin/busybox")
	}
	rootfs := t.TempDir()
	for _, d := range []string{"bin", "etc", "tmp", "home/vscode"} {
		if err := os.MkdirAll(filepath.Join(rootfs, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	bb, err := os.ReadFile("/bin/busybox")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(rootfs, "bin/busybox"), bb, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, c := range []string{"sh", "cat", "chmod", "mkdir", "printf", "test", "pwd", "touch"} {
		if err := os.Symlink("busybox", filepath.Join(rootfs, "bin", c)); err != nil {
			t.Fatal(err)
		}
	}
	passwd := "root:x:0:0:root:/root:/bin/sh\nvscode:x:1000:1000::/home/vscode:/bin/sh\n"
	if err := os.WriteFile(filepath.Join(rootfs, "etc/passwd"), []byte(passwd), 0o644); err != nil {
		t.Fatal(err)
	}
	fs := toyFeatures(t, "/out")
	if err := Stage(context.Background(), fs, filepath.Join(rootfs, "tmp/features"), 0, 0); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("chroot", rootfs, "/bin/sh", "-c", InstallScript(fs, "/tmp/features", "vscode", "root"))
	cmd.Env = []string{"PATH=/bin"}
	b, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("install: %v\n%s", err, b)
	}
	got, err := os.ReadFile(filepath.Join(rootfs, "out/reader"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(got), "remote=vscode home=/home/vscode container=root chome=/root") {
		t.Errorf("reader output:\n%s", got)
	}
}

// TestStageNeverWritesThroughFeatureLinks is C1 of the attacker's review of
// the isolation fixes: a feature shipping devcontainer-features.env as a
// symlink to a host file (and option values with newlines) must not make
// the runner write that file; metadata read through a link is refused.
func TestStageNeverWritesThroughFeatureLinks(t *testing.T) {
	testutil.RequireRoot(t, "the runner stages as root")
	host := filepath.Join(t.TempDir(), "authorized_keys")
	src := t.TempDir()
	if err := os.WriteFile(filepath.Join(src, "install.sh"), []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(host, filepath.Join(src, "devcontainer-features.env")); err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(t.TempDir(), "features")
	f := Feature{Ref: Ref{ID: "./f"}, Dir: src, Meta: Metadata{ID: "f"}, Env: []string{"LIB=\nssh-ed25519 AAAA attacker\n"}}
	if err := Stage(context.Background(), []Feature{f}, dst, 100000, 100000); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(host); err == nil {
		t.Fatal("the runner wrote a host file through the feature's symlink")
	}
	env := filepath.Join(dst, InstallDirName(0, f), "devcontainer-features.env")
	fi, err := os.Lstat(env)
	if err != nil || !fi.Mode().IsRegular() {
		t.Fatalf("options file: %v %v", fi, err)
	}

	// Metadata and install.sh must be the feature's own regular files.
	secret := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(secret, []byte(`{"id": "HOST-SECRET"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	meta := t.TempDir()
	if err := os.Symlink(secret, filepath.Join(meta, "devcontainer-feature.json")); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(meta, "install.sh"), nil, 0o755)
	if m, err := readMetadata(meta, "./m"); err == nil || strings.Contains(err.Error(), "HOST-SECRET") || m.ID != "" {
		t.Fatalf("metadata read through a link: %+v %v", m, err)
	}
}
