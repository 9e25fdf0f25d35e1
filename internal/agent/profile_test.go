package agent

import (
	"bytes"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/covedev/cove/internal/testutil"
)

// debianProfile is the start of Debian 12's /etc/profile: it resets PATH,
// so a login shell loses what features and containerEnv put there.
const debianProfile = `# /etc/profile: system-wide .profile file for the Bourne shell (sh(1))
# and Bourne compatible shells (bash(1), ksh(1), ash(1), ...).

if [ "$(id -u)" -eq 0 ]; then
  PATH="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
else
  PATH="/usr/local/bin:/usr/bin:/bin:/usr/local/games:/usr/games"
fi
export PATH
PATH=$PATH:/already/extends
`

func TestPatchProfile(t *testing.T) {
	got := string(patchProfile([]byte(debianProfile)))
	for _, want := range []string{
		`  PATH=${PATH:-"/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}` + "\n",
		`  PATH=${PATH:-"/usr/local/bin:/usr/bin:/bin:/usr/local/games:/usr/games"}` + "\n",
		"export PATH\nPATH=$PATH:/already/extends\n", // uses $PATH already: left alone
	} {
		if !strings.Contains(got, want) {
			t.Errorf("patched profile lacks %q:\n%s", want, got)
		}
	}
	if again := string(patchProfile([]byte(got))); again != got {
		t.Errorf("not idempotent:\n%s", again)
	}
	for _, s := range []string{"", "no newline PATH=/x", "MYPATH=/x\n", "\n\n"} {
		p := string(patchProfile([]byte(s)))
		if s == "no newline PATH=/x" {
			if p != "no newline PATH=${PATH:-/x}" {
				t.Errorf("%q -> %q", s, p)
			}
			continue
		}
		if p != s {
			t.Errorf("%q changed to %q", s, p)
		}
	}

	// What it is for: a shell that reads the patched file keeps the PATH
	// it was given; the original resets it.
	dir := t.TempDir()
	orig, patched := filepath.Join(dir, "orig"), filepath.Join(dir, "patched")
	must(t, os.WriteFile(orig, []byte(debianProfile), 0o644))
	must(t, os.WriteFile(patched, []byte(got), 0o644))
	sh := func(profile string) string {
		cmd := exec.Command("/bin/sh", "-c", `. "$1"; echo "$PATH"`, "sh", profile)
		cmd.Env = []string{"PATH=/feature/bin:/usr/bin:/bin"}
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("sh: %v", err)
		}
		return strings.TrimSpace(string(out))
	}
	if p := sh(patched); !strings.HasPrefix(p, "/feature/bin:/usr/bin:/bin") {
		t.Errorf("patched profile: PATH %q, want the container's kept", p)
	}
	if p := sh(orig); strings.Contains(p, "/feature/bin") {
		t.Errorf("original profile kept PATH %q: the test does not reproduce the reset", p)
	}
}

// TestKeepProfilePath: the agent patches /etc/profile once (the marker),
// keeping its mode; it leaves alone a symbolic link (and what it points
// to), a directory, an oversized file and a missing one, and none of them
// stops it.
func TestKeepProfilePath(t *testing.T) {
	newAgent := func(t *testing.T) (*agent, string, string, *testutil.Buffer) {
		dir := t.TempDir()
		logs := &testutil.Buffer{}
		a := &agent{cfg: Config{profilePath: filepath.Join(dir, "etc", "profile"), profileMarker: filepath.Join(dir, "var", "devcontainer", "marker"),
			envFilePath: filepath.Join(dir, "etc", "environment"), envFileMarker: filepath.Join(dir, "var", "devcontainer", "env-marker")},
			log: slog.New(slog.NewTextHandler(logs, nil))}
		must(t, os.MkdirAll(filepath.Join(dir, "etc"), 0o755))
		return a, a.cfg.profilePath, a.cfg.profileMarker, logs
	}

	t.Run("regular file, once", func(t *testing.T) {
		a, profile, marker, _ := newAgent(t)
		must(t, os.WriteFile(profile, []byte(debianProfile), 0o640))
		a.keepProfilePath()
		b, err := os.ReadFile(profile)
		must(t, err)
		if !bytes.Contains(b, []byte(`PATH=${PATH:-"/usr/local/sbin`)) {
			t.Errorf("not patched:\n%s", b)
		}
		if fi, err := os.Stat(profile); err != nil || fi.Mode().Perm() != 0o640 {
			t.Errorf("mode after patch: %v %v", fi.Mode(), err)
		}
		if _, err := os.Stat(marker); err != nil {
			t.Errorf("no marker: %v", err)
		}
		// Once: a user who puts the reset back keeps it.
		must(t, os.WriteFile(profile, []byte(debianProfile), 0o640))
		a.keepProfilePath()
		if b, _ := os.ReadFile(profile); string(b) != debianProfile {
			t.Errorf("patched again despite the marker:\n%s", b)
		}
		if left, _ := filepath.Glob(filepath.Join(filepath.Dir(profile), ".profile.cove-*")); len(left) > 0 {
			t.Errorf("temporary files left: %q", left)
		}
	})

	t.Run("symbolic link", func(t *testing.T) {
		a, profile, _, logs := newAgent(t)
		target := filepath.Join(t.TempDir(), "elsewhere")
		must(t, os.WriteFile(target, []byte(debianProfile), 0o644))
		must(t, os.Symlink(target, profile))
		a.keepProfilePath()
		if b, _ := os.ReadFile(target); string(b) != debianProfile {
			t.Errorf("the link's target was changed:\n%s", b)
		}
		if l, err := os.Readlink(profile); err != nil || l != target {
			t.Errorf("the link was replaced: %q %v", l, err)
		}
		if !strings.Contains(logs.String(), "symbolic link") {
			t.Errorf("not logged: %s", logs.String())
		}
	})

	t.Run("odd files", func(t *testing.T) {
		a, profile, marker, _ := newAgent(t)
		a.keepProfilePath() // missing
		if _, err := os.Lstat(profile); !os.IsNotExist(err) {
			t.Errorf("a missing profile was created: %v", err)
		}
		must(t, os.Remove(marker))
		must(t, os.Mkdir(profile, 0o755)) // a directory
		a.keepProfilePath()
		must(t, os.Remove(marker))
		must(t, os.Remove(profile))
		big := bytes.Repeat([]byte("PATH=/x\n"), maxProfileSize/8+1)
		must(t, os.WriteFile(profile, big, 0o644))
		a.keepProfilePath()
		if b, _ := os.ReadFile(profile); !bytes.Equal(b, big) {
			t.Error("an oversized profile was changed")
		}
	})
}

// TestKeepEtcEnvironment: the container's environment is appended to
// /etc/environment once, as NAME="VALUE" lines a PAM session (su -, sudo
// -i) reads, without HOME or values the format cannot hold; a symbolic
// link is left alone.
func TestKeepEtcEnvironment(t *testing.T) {
	dir := t.TempDir()
	must(t, os.MkdirAll(filepath.Join(dir, "etc"), 0o755))
	envFile := filepath.Join(dir, "etc", "environment")
	must(t, os.WriteFile(envFile, []byte("LANG=C.UTF-8"), 0o644)) // no final newline
	a := &agent{cfg: Config{profilePath: filepath.Join(dir, "etc", "profile"), profileMarker: filepath.Join(dir, "m1"),
		envFilePath: envFile, envFileMarker: filepath.Join(dir, "m2"),
		Env: []string{"PATH=/opt/f/bin:/usr/bin:/bin", "HOME=/root", "MARK=c1", "Q=a\"b", "NL=a\nb", "EMPTY=", "COVE_ENVIRONMENT_ID=env-of-alice", "COVE_ENVIRONMENT_NAME=alices"}},
		log: slog.New(slog.DiscardHandler)}
	a.keepProfilePath()
	a.keepProfilePath() // once
	want := "LANG=C.UTF-8\nPATH=\"/opt/f/bin:/usr/bin:/bin\"\nMARK=\"c1\"\nEMPTY=\"\"\n"
	if b, _ := os.ReadFile(envFile); string(b) != want {
		t.Errorf("/etc/environment:\n%q\nwant\n%q", b, want)
	}

	// A symbolic link: neither it nor its target changes.
	dir2 := t.TempDir()
	target := filepath.Join(dir2, "target")
	must(t, os.WriteFile(target, []byte("X=1\n"), 0o644))
	link := filepath.Join(dir2, "environment")
	must(t, os.Symlink(target, link))
	if err := appendEnvFile(link, []string{"A=1"}); err == nil {
		t.Error("appended through a symbolic link")
	}
	if b, _ := os.ReadFile(target); string(b) != "X=1\n" {
		t.Errorf("the link's target changed: %q", b)
	}
}
