package content

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/covedev/cove/internal/errdefs"
	"github.com/covedev/cove/internal/idmap"
	"github.com/covedev/cove/internal/netenv"
	"github.com/covedev/cove/internal/usererr"
)

func lookPath(name string) (string, error) {
	p, err := exec.LookPath(name)
	if err != nil {
		return "", fmt.Errorf("%s is not installed on the runner: %w", name, err)
	}
	return p, nil
}

// execCommand returns a command that runs in its own process group, all of
// which is killed when ctx ends (git starts helpers such as
// git-remote-https and ssh).
func execCommand(ctx context.Context, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error {
		if cmd.Process == nil {
			return nil
		}
		return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
	cmd.WaitDelay = 5 * time.Second
	return cmd
}

// gitRunner runs git as root of a user namespace mapped to m.
type gitRunner struct {
	m           idmap.Range
	home        string   // HOME, in the staging directory
	allow       string   // GIT_ALLOW_PROTOCOL
	fileAllowed bool     // cloning from a staged local copy
	url         string   // the user's URL, for messages
	staged      string   // path of the staged copy, replaced by url in messages
	netns       string   // network namespace to run git in ("" = the host's)
	resolv      string   // the namespace's resolv.conf, for the sandbox
	sandbox     []string // the sandbox command ("" = none), see Options.Sandbox
	rw          []string // what the sandbox may write: workspace and staging
}

func (g *gitRunner) command(ctx context.Context, dir string, args ...string) (*exec.Cmd, error) {
	git, err := lookPath("git")
	if err != nil {
		return nil, err
	}
	all := append([]string{}, gitConfigArgs...)
	if g.fileAllowed {
		all = append(all, "-c", "protocol.file.allow=always")
	}
	all = append(all, args...)
	name, attr := git, userNSAttr(g.m)
	if len(g.sandbox) > 0 {
		full := sandboxArgs(g.sandbox, g.resolv, g.rw, append([]string{git}, all...))
		name, all, attr = full[0], full[1:], sandboxAttr(g.m)
	}
	cmd := execCommand(ctx, name, all...)
	cmd.Cancel = nil // set again below, with the namespace-aware start
	cmd.Env = gitEnv(g.home, g.allow)
	cmd.Dir = dir
	cmd.SysProcAttr = attr
	cmd.Cancel = func() error {
		if cmd.Process == nil {
			return nil
		}
		return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
	return cmd, nil
}

// git runs a git command in dir inside the user namespace.
func (g *gitRunner) git(ctx context.Context, dir string, args ...string) error {
	cmd, err := g.command(ctx, dir, args...)
	if err != nil {
		return err
	}
	return g.run(cmd)
}

// run runs cmd in the runner's network namespace for git (see Options).
func (g *gitRunner) run(cmd *exec.Cmd) error {
	if g.netns == "" {
		return run(cmd)
	}
	return runWith(cmd, func(c *exec.Cmd) error { return netenv.StartIn(g.netns, c) })
}

// clone clones from into dest and checks out ref. On failure dest does not
// exist: git removes what it created, and a failed checkout removes the
// clone.
func (g *gitRunner) clone(ctx context.Context, from, ref, dest string) error {
	useBranch := ref != "" && !shaRef.MatchString(ref)
	err := g.cloneOnce(ctx, from, ref, useBranch, dest)
	if err != nil && useBranch && shortSHA.MatchString(ref) && strings.Contains(err.Error(), "not found in upstream") {
		// Not a branch or tag: maybe an abbreviated commit.
		useBranch = false
		err = g.cloneOnce(ctx, from, ref, false, dest)
	}
	if err != nil {
		return g.userError(ctx, "git clone", err)
	}
	if ref != "" && !useBranch {
		if err := g.git(ctx, dest, "checkout", "--quiet", "--detach", ref, "--"); err != nil {
			_ = os.RemoveAll(dest)
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return usererr.Wrap(errdefs.NotFound(err), "git clone %s failed: commit %s not found in the repository", redact(g.url), ref)
		}
	}
	return nil
}

func (g *gitRunner) cloneOnce(ctx context.Context, from, ref string, useBranch bool, dest string) error {
	args := []string{"clone", "--quiet", "--origin", "origin", "--no-recurse-submodules", "--template="}
	if g.fileAllowed {
		args = append(args, "--no-hardlinks")
	}
	if useBranch {
		args = append(args, "--branch", ref)
	}
	args = append(args, "--", from, dest)
	return g.git(ctx, filepath.Dir(dest), args...)
}

// userError turns a failed git command into a user-visible error carrying
// the useful part of git's output, with the category git's output tells
// (gitCategory): a network or server failure is Unavailable, and retried.
func (g *gitRunner) userError(ctx context.Context, what string, err error) error {
	if ctx.Err() != nil {
		return fmt.Errorf("%s %s: %w", what, redact(g.url), ctx.Err())
	}
	var ce *cmdError
	if !errors.As(err, &ce) {
		return err // e.g. git is not installed: not the user's problem
	}
	msg := gitMessage(ce.stderr)
	if g.staged != "" {
		msg = strings.ReplaceAll(msg, g.staged, g.url)
	}
	if r := redact(g.url); r != g.url {
		msg = strings.ReplaceAll(msg, g.url, r)
	}
	if msg == "" {
		msg = ce.err.Error()
	}
	if cat, ok := gitCategory(ce.stderr); ok {
		err = errdefs.WithCategory(err, cat)
	}
	return usererr.Wrap(err, "%s %s failed: %s", what, redact(g.url), msg)
}

// gitMessage picks the useful lines of git's output: the last "fatal:" or
// "error:" line, preceded by what the server said ("remote:" lines).
func gitMessage(out string) string {
	var remote []string
	var last string
	for _, l := range lastLines(out, 20) {
		switch {
		case strings.HasPrefix(l, "fatal: "), strings.HasPrefix(l, "error: "):
			last = strings.TrimPrefix(strings.TrimPrefix(l, "fatal: "), "error: ")
		case strings.HasPrefix(l, "remote: "):
			if r := strings.TrimSpace(strings.TrimPrefix(l, "remote: ")); r != "" {
				remote = append(remote, r)
			}
		}
	}
	if last == "" {
		if ls := lastLines(out, 1); len(ls) > 0 {
			last = ls[0]
		}
	}
	if len(remote) > 0 && len(remote) <= 3 {
		last += " (remote: " + strings.Join(remote, " ") + ")"
	}
	if len(last) > 500 {
		last = last[:500] + "..."
	}
	return last
}

// stage copies a local repository (absolute path or file:// URL) as host
// root into StagingDir/src.git, a bare copy made through git's pack protocol
// (--no-local), and gives it to the range's root so the unprivileged clone
// can read it.
func stage(ctx context.Context, log *slog.Logger, gitURL string, opts Options) (string, error) {
	p := localPath(gitURL)
	if _, err := os.Stat(p); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return "", usererr.Wrap(errdefs.NotFound(err), "git clone %s failed: no such directory", gitURL)
		}
		return "", usererr.Wrap(err, "git clone %s failed: %v", gitURL, err)
	}
	git, err := lookPath("git")
	if err != nil {
		return "", err
	}
	dst := filepath.Join(opts.StagingDir, "src.git")
	args := append([]string{}, gitConfigArgs...)
	args = append(args,
		"-c", "safe.directory=*", // the user's repository is owned by the user, we are root
		"-c", "protocol.file.allow=always",
		"clone", "--quiet", "--bare", "--no-local", "--no-hardlinks", "--template=", "--", gitURL, dst)
	log.Debug("staging local repository", "path", p)
	cmd := execCommand(ctx, git, args...)
	cmd.Env = gitEnv(filepath.Join(opts.StagingDir, "home"), "file")
	cmd.Dir = opts.StagingDir
	if err := run(cmd); err != nil {
		g := &gitRunner{url: gitURL}
		return "", g.userError(ctx, "git clone", err)
	}
	uid := int(opts.IDMap.HostID)
	err = filepath.WalkDir(dst, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(path, uid, uid)
	})
	if err != nil {
		return "", fmt.Errorf("chown staged repository: %w", err)
	}
	return dst, nil
}
