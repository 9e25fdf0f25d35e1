package content

import (
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"net/http/cgi"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/covedev/cove/internal/idmap"
	"github.com/covedev/cove/internal/testutil"
	"github.com/covedev/cove/internal/usererr"
)

type fixture struct {
	base    string // searchable test root
	repo    string // source repository, under a 0700 root-owned directory
	first   string // sha of the first commit (on main)
	feature string // sha of the commit on branch feature
	opts    Options
}

func needRoot(t *testing.T) {
	t.Helper()
	testutil.RequireRoot(t, "user namespaces with arbitrary id maps, chown")
	testutil.RequireTool(t, "git", "chown")
}

// hostGit runs git as host root (the test's own setup, not code under test).
func hostGit(t *testing.T, dir string, args ...string) string {
	t.Helper()
	cmd := exec.Command("git", append([]string{"-c", "user.name=T", "-c", "user.email=t@example.com", "-c", "safe.directory=*", "-c", "init.defaultBranch=main"}, args...)...)
	cmd.Dir = dir
	cmd.Env = []string{"PATH=" + basePath, "HOME=/nonexistent", "GIT_CONFIG_NOSYSTEM=1", "GIT_CONFIG_GLOBAL=/dev/null"}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("git %v: %v\n%s", args, err, out)
	}
	return strings.TrimSpace(string(out))
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	needRoot(t)
	base := t.TempDir()
	// t.TempDir's directories are 0700: let the environment's uid through.
	for _, d := range []string{filepath.Dir(base), base} {
		if err := os.Chmod(d, 0o711); err != nil {
			t.Fatal(err)
		}
	}
	private := filepath.Join(base, "private")
	if err := os.Mkdir(private, 0o700); err != nil {
		t.Fatal(err)
	}
	repo := filepath.Join(private, "myrepo")
	if err := os.Mkdir(repo, 0o755); err != nil {
		t.Fatal(err)
	}
	hostGit(t, repo, "init", "-q")
	must(t, os.WriteFile(filepath.Join(repo, "README"), []byte("hello\n"), 0o644))
	must(t, os.Symlink("/etc/passwd", filepath.Join(repo, "passwd-link")))
	must(t, os.Symlink("/etc", filepath.Join(repo, "etc-link")))
	must(t, os.MkdirAll(filepath.Join(repo, "dir", "sub"), 0o755))
	must(t, os.WriteFile(filepath.Join(repo, "dir", "sub", "f"), []byte("f"), 0o600))
	hostGit(t, repo, "add", "-A")
	hostGit(t, repo, "commit", "-q", "-m", "first")
	first := hostGit(t, repo, "rev-parse", "HEAD")
	hostGit(t, repo, "checkout", "-q", "-b", "feature")
	must(t, os.WriteFile(filepath.Join(repo, "feature.txt"), []byte("feature\n"), 0o644))
	hostGit(t, repo, "add", "-A")
	hostGit(t, repo, "commit", "-q", "-m", "feature")
	feature := hostGit(t, repo, "rev-parse", "HEAD")
	hostGit(t, repo, "checkout", "-q", "main")
	must(t, os.WriteFile(filepath.Join(repo, "second.txt"), []byte("2\n"), 0o644))
	hostGit(t, repo, "add", "-A")
	hostGit(t, repo, "commit", "-q", "-m", "second")

	m := idmap.Range{HostID: 3100000000 + uint32(rand.IntN(10000))*65536, Size: 65536}
	return &fixture{
		base: base, repo: repo, first: first, feature: feature,
		opts: Options{
			WorkspaceDir: filepath.Join(base, "env", "workspace"),
			StagingDir:   filepath.Join(base, "env", "staging"),
			IDMap:        m,
			UID:          1000,
			GID:          1000,
			// git runs in the clone sandbox, as the runner runs it.
			Sandbox: []string{sandboxExe, "internal-sandbox"},
		},
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func owner(t *testing.T, p string) (uid, gid uint32) {
	t.Helper()
	var st syscall.Stat_t
	must(t, syscall.Lstat(p, &st))
	return st.Uid, st.Gid
}

func TestCloneLocal(t *testing.T) {
	f := newFixture(t)
	passwdUID, passwdGID := owner(t, "/etc/passwd")
	fi, err := os.Stat("/etc/passwd")
	must(t, err)

	dir, err := Clone(ctxT(t), Source{GitURL: f.repo}, f.opts)
	must(t, err)
	if want := filepath.Join(f.opts.WorkspaceDir, "myrepo"); dir != want {
		t.Fatalf("Clone = %q, want %q", dir, want)
	}
	if _, err := os.Stat(filepath.Join(dir, ".git", "HEAD")); err != nil {
		t.Fatalf(".git missing: %v", err)
	}
	wantUID := f.opts.IDMap.ToHost(1000)
	for _, p := range []string{"", "README", "passwd-link", "etc-link", "dir/sub/f", ".git", ".git/config", ".git/HEAD"} {
		if u, g := owner(t, filepath.Join(dir, p)); u != wantUID || g != wantUID {
			t.Errorf("%s owned by %d:%d, want %d:%d", p, u, g, wantUID, wantUID)
		}
	}
	if u, _ := owner(t, f.opts.WorkspaceDir); u != wantUID {
		t.Errorf("workspace owned by %d, want %d", u, wantUID)
	}
	// Nothing outside the workspace was followed.
	if u, g := owner(t, "/etc/passwd"); u != passwdUID || g != passwdGID {
		t.Fatalf("/etc/passwd owner changed to %d:%d", u, g)
	}
	if fi2, _ := os.Stat("/etc/passwd"); fi2.Mode() != fi.Mode() || !fi2.ModTime().Equal(fi.ModTime()) {
		t.Fatalf("/etc/passwd changed")
	}
	if u, _ := owner(t, "/etc"); u != 0 {
		t.Fatalf("/etc owner changed to %d", u)
	}
	if l, err := os.Readlink(filepath.Join(dir, "passwd-link")); err != nil || l != "/etc/passwd" {
		t.Errorf("passwd-link = %q, %v", l, err)
	}
	if got := hostGit(t, dir, "config", "remote.origin.url"); got != f.repo {
		t.Errorf("origin url = %q, want %q", got, f.repo)
	}
	if got := hostGit(t, dir, "rev-parse", "--abbrev-ref", "HEAD"); got != "main" {
		t.Errorf("HEAD = %q, want main", got)
	}
	if _, err := os.Stat(filepath.Join(dir, "second.txt")); err != nil {
		t.Errorf("second.txt missing: %v", err)
	}
	if _, err := os.Stat(f.opts.StagingDir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("staging dir not removed: %v", err)
	}
	if _, err := os.Stat(f.opts.StagingDir + ".content-done"); err != nil {
		t.Errorf("completion marker missing: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, ".git", "hooks")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("clone has a hooks directory from a template: %v", err)
	}

	// Idempotent: a second call returns at once and keeps the user's work.
	must(t, os.WriteFile(filepath.Join(dir, "README"), []byte("user work\n"), 0o644))
	dir2, err := Clone(ctxT(t), Source{GitURL: f.repo}, f.opts)
	must(t, err)
	if dir2 != dir {
		t.Fatalf("second Clone = %q", dir2)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "README")); string(b) != "user work\n" {
		t.Fatalf("second Clone touched the workspace: README = %q", b)
	}
}

func TestCloneFileURLAndRefs(t *testing.T) {
	f := newFixture(t)
	for _, tc := range []struct {
		name, ref, wantHead, wantFile string
	}{
		{"branch", "feature", f.feature, "feature.txt"},
		{"full sha", f.first, f.first, "README"},
		{"short sha", f.feature[:10], f.feature, "feature.txt"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			opts := f.opts
			opts.WorkspaceDir = filepath.Join(f.base, tc.name, "ws")
			opts.StagingDir = filepath.Join(f.base, tc.name, "staging")
			url := "file://" + f.repo
			dir, err := Clone(ctxT(t), Source{GitURL: url, Ref: tc.ref}, opts)
			must(t, err)
			if got := hostGit(t, dir, "rev-parse", "HEAD"); got != tc.wantHead {
				t.Errorf("HEAD = %s, want %s", got, tc.wantHead)
			}
			if _, err := os.Stat(filepath.Join(dir, tc.wantFile)); err != nil {
				t.Errorf("%s missing: %v", tc.wantFile, err)
			}
			if got := hostGit(t, dir, "config", "remote.origin.url"); got != url {
				t.Errorf("origin url = %q, want %q", got, url)
			}
		})
	}
}

func TestCloneInterruptedIsRedone(t *testing.T) {
	f := newFixture(t)
	partial := filepath.Join(f.opts.WorkspaceDir, "myrepo")
	must(t, os.MkdirAll(filepath.Join(partial, ".git"), 0o755))
	must(t, os.WriteFile(filepath.Join(partial, "half-written"), []byte("x"), 0o644))
	must(t, os.MkdirAll(filepath.Join(f.opts.StagingDir, "src.git"), 0o755)) // leftover staging
	dir, err := Clone(ctxT(t), Source{GitURL: f.repo}, f.opts)
	must(t, err)
	if _, err := os.Stat(filepath.Join(dir, "half-written")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("partial clone was not removed: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "README")); err != nil {
		t.Errorf("README missing after redo: %v", err)
	}
}

func TestCloneFailuresAreUserVisible(t *testing.T) {
	f := newFixture(t)
	for _, tc := range []struct {
		name string
		src  Source
		want string
	}{
		{"missing path", Source{GitURL: "file:///nonexistent"}, "git clone file:///nonexistent failed: "},
		{"unreachable", Source{GitURL: "https://127.0.0.1:1/x.git"}, "git clone https://127.0.0.1:1/x.git failed: unable to access"},
		{"credentials redacted", Source{GitURL: "https://user:s3cret@127.0.0.1:1/x.git"}, "https://***@127.0.0.1:1/x.git failed"},
		{"missing branch", Source{GitURL: f.repo, Ref: "nope"}, "Remote branch nope not found"},
		{"missing commit", Source{GitURL: f.repo, Ref: strings.Repeat("ab", 20)}, "commit " + strings.Repeat("ab", 20) + " not found"},
		{"bad scheme", Source{GitURL: "ext::sh -c id"}, "unsupported git URL"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			opts := f.opts
			opts.WorkspaceDir = filepath.Join(f.base, tc.name, "ws")
			opts.StagingDir = filepath.Join(f.base, tc.name, "staging")
			must(t, os.MkdirAll(opts.WorkspaceDir, 0o755))
			must(t, os.WriteFile(filepath.Join(opts.WorkspaceDir, "keep.txt"), []byte("keep"), 0o644))
			_, err := Clone(ctxT(t), tc.src, opts)
			msg, ok := usererr.Message(err)
			if !ok || !strings.Contains(msg, tc.want) {
				t.Fatalf("Clone error = %v (user message %q), want user error containing %q", err, msg, tc.want)
			}
			t.Logf("user message: %s", msg)
			if strings.Contains(msg, "s3cret") || strings.Contains(msg, "/staging/") {
				t.Errorf("message leaks credentials or staging paths: %q", msg)
			}
			ents, _ := os.ReadDir(opts.WorkspaceDir)
			var names []string
			for _, e := range ents {
				names = append(names, e.Name())
			}
			if !slices.Equal(names, []string{"keep.txt"}) {
				t.Errorf("workspace after failure holds %v, want only keep.txt", names)
			}
			if _, err := os.Stat(opts.StagingDir + ".content-done"); err == nil {
				t.Error("completion marker written for a failed clone")
			}
		})
	}
}

// TestCloneRemoteHTTP clones through git's smart HTTP protocol from
// 127.0.0.1: the whole clone runs unprivileged, without staging.
func TestCloneRemoteHTTP(t *testing.T) {
	f := newFixture(t)
	backend := "/usr/lib/git-core/git-http-backend"
	if _, err := os.Stat(backend); err != nil {
		t.Skip("git-http-backend is not installed")
	}
	srv := httptest.NewServer(&cgi.Handler{
		Path:   backend,
		Stderr: io.Discard,
		Env:    []string{"GIT_PROJECT_ROOT=" + filepath.Dir(f.repo), "GIT_HTTP_EXPORT_ALL=1", "GIT_CONFIG_NOSYSTEM=1", "GIT_CONFIG_PARAMETERS='safe.directory'='*'"},
	})
	t.Cleanup(srv.Close)
	url := srv.URL + "/myrepo"
	dir, err := Clone(ctxT(t), Source{GitURL: url, Ref: "feature"}, f.opts)
	must(t, err)
	if got := hostGit(t, dir, "rev-parse", "HEAD"); got != f.feature {
		t.Errorf("HEAD = %s, want %s", got, f.feature)
	}
	if got := hostGit(t, dir, "config", "remote.origin.url"); got != url {
		t.Errorf("origin url = %q", got)
	}
	if u, _ := owner(t, filepath.Join(dir, "feature.txt")); u != f.opts.IDMap.ToHost(1000) {
		t.Errorf("feature.txt owned by %d", u)
	}
	_, err = Clone(ctxT(t), Source{GitURL: srv.URL + "/missing"}, Options{
		WorkspaceDir: filepath.Join(f.base, "m", "ws"), StagingDir: filepath.Join(f.base, "m", "st"), IDMap: f.opts.IDMap,
	})
	if msg, ok := usererr.Message(err); !ok || !strings.Contains(msg, "not found") {
		t.Errorf("clone of a missing repository: %v", err)
	}
}

// TestUserNSDropsHostGroups checks that commands in the user namespace do
// not keep host root's supplementary groups.
func TestUserNSDropsHostGroups(t *testing.T) {
	f := newFixture(t)
	dir := filepath.Join(f.base, "grp")
	must(t, os.Mkdir(dir, 0o755))
	secret := filepath.Join(dir, "secret")
	must(t, os.WriteFile(secret, []byte("x"), 0o640)) // root:root, group-readable
	cmd := exec.Command("cat", secret)
	cmd.SysProcAttr = userNSAttr(f.opts.IDMap)
	if out, err := cmd.CombinedOutput(); err == nil {
		t.Fatalf("read a root-group file from the user namespace: %q", out)
	}
	cmd = exec.Command("id", "-u")
	cmd.SysProcAttr = userNSAttr(f.opts.IDMap)
	out, err := cmd.Output()
	if err != nil || strings.TrimSpace(string(out)) != "0" {
		t.Fatalf("id -u in the user namespace = %q, %v", out, err)
	}
}

func TestChownRejectsOutOfRange(t *testing.T) {
	needRoot(t)
	err := Chown(context.Background(), t.TempDir(), idmap.Range{HostID: 3100000000, Size: 65536}, 70000, 0)
	if err == nil {
		t.Fatal("Chown accepted a uid outside the range")
	}
}
