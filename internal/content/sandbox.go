package content

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/covedev/cove/internal/idmap"
	"golang.org/x/sys/unix"
)

// The clone sandbox. git talks to a remote the repository's author may
// control, and git's own bugs are a frequent class of CVEs: whatever runs
// in the clone runs as the environment's unprivileged uid (its user
// namespace), in its network namespace, and — in the sandbox — in a mount
// namespace that holds only the host's programs and libraries (read-only)
// and the environment's own workspace and staging directories, and in a
// pid namespace of its own, whose processes all end with the clone. It sees
// no other environment's files, no host process, and leaves nothing behind.
//
// The runner starts it as `cove internal-sandbox [--resolv FILE] --rw DIR...
// -- COMMAND ARG...` in new user, mount and pid namespaces (sandboxAttr);
// SandboxMain then builds the new root, and runs COMMAND as the child of
// PID 1.

// sandboxRO are the host directories the sandbox sees, read-only: programs,
// libraries, and /etc (CA certificates, ssh_config, nsswitch, ld.so.cache;
// nothing in it is readable there that any host user cannot read).
var sandboxRO = []string{"/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc"}

// sandboxDevs are the device nodes bound into the sandbox's /dev.
var sandboxDevs = []string{"null", "zero", "full", "random", "urandom"}

// sandboxAttr is userNSAttr with new mount and pid namespaces.
func sandboxAttr(m idmap.Range) *syscall.SysProcAttr {
	a := userNSAttr(m)
	a.Cloneflags |= syscall.CLONE_NEWNS | syscall.CLONE_NEWPID
	return a
}

// sandboxArgs is the command line that runs argv in the sandbox.
func sandboxArgs(sandbox []string, resolv string, rw []string, argv []string) []string {
	out := append([]string{}, sandbox...)
	if resolv != "" {
		out = append(out, "--resolv", resolv)
	}
	for _, d := range rw {
		out = append(out, "--rw", d)
	}
	out = append(out, "--")
	return append(out, argv...)
}

// SandboxMain is `cove internal-sandbox`: it must be PID 1 of new user,
// mount and pid namespaces. It returns the exit code to exit with.
func SandboxMain(args []string) int {
	code, err := sandboxMain(args)
	if err != nil {
		fmt.Fprintf(os.Stderr, "clone sandbox: %v\n", err)
		return 125
	}
	return code
}

func sandboxMain(args []string) (int, error) {
	var resolv string
	var rw []string
	for len(args) > 0 && args[0] != "--" {
		if len(args) < 2 {
			return 0, fmt.Errorf("usage: internal-sandbox [--resolv FILE] [--rw DIR]... -- COMMAND [ARG...]")
		}
		switch args[0] {
		case "--resolv":
			resolv = args[1]
		case "--rw":
			rw = append(rw, args[1])
		default:
			return 0, fmt.Errorf("unknown option %s", args[0])
		}
		args = args[2:]
	}
	if len(args) < 2 {
		return 0, errors.New("no command")
	}
	argv := args[1:]
	if os.Getpid() != 1 {
		return 0, errors.New("must be PID 1 of a new pid namespace")
	}
	// Whatever descriptor reached this process by mistake (one the runner
	// held open without close-on-exec when it forked) never reaches the
	// command: it would lead past every boundary below.
	if err := unix.CloseRange(3, ^uint(0), unix.CLOSE_RANGE_CLOEXEC); err != nil {
		return 0, fmt.Errorf("close inherited descriptors: %w", err)
	}
	cwd, err := os.Getwd()
	if err != nil {
		cwd = "/"
	}
	if err := buildRoot("/tmp", resolv, rw); err != nil {
		return 0, err
	}
	if err := os.Chdir(cwd); err != nil {
		_ = os.Chdir("/")
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	if err := cmd.Start(); err != nil {
		return 127, err
	}
	// When this process (PID 1) exits, the kernel kills every process left
	// in the namespace: nothing the clone started outlives it.
	err = cmd.Wait()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0, nil
	case errors.As(err, &ee):
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return 128 + int(ws.Signal()), nil
		}
		return ee.ExitCode(), nil
	}
	return 0, err
}

// buildRoot makes a new root file system at root (a tmpfs) and pivots into
// it: the read-only host directories, a few device nodes, a new /proc, a
// private /tmp, and the rw directories at their own paths. Every source is
// opened before the tmpfs hides what is below root, and mounted from its
// descriptor.
func buildRoot(root, resolv string, rw []string) error {
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("make mounts private: %w", err)
	}
	type bind struct {
		fd       int
		dst      string
		dir, ro  bool
		symlink  string
		required bool
	}
	var binds []bind
	defer func() {
		for _, b := range binds {
			if b.fd >= 0 {
				unix.Close(b.fd)
			}
		}
	}()
	add := func(src, dst string, dir, ro, required bool) error {
		fi, err := os.Lstat(src)
		if err != nil {
			if required {
				return err
			}
			return nil // not on this host
		}
		if fi.Mode()&os.ModeSymlink != 0 && !required { // merged /usr: /bin -> usr/bin
			t, err := os.Readlink(src)
			if err != nil {
				return err
			}
			binds = append(binds, bind{fd: -1, dst: dst, symlink: t})
			return nil
		}
		fd, err := unix.Open(src, unix.O_PATH|unix.O_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("open %s: %w", src, err)
		}
		binds = append(binds, bind{fd: fd, dst: dst, dir: dir, ro: ro})
		return nil
	}
	for _, d := range sandboxRO {
		if err := add(d, d, true, true, false); err != nil {
			return err
		}
	}
	for _, n := range sandboxDevs {
		if err := add("/dev/"+n, "/dev/"+n, false, false, true); err != nil {
			return err
		}
	}
	for _, d := range rw {
		if !filepath.IsAbs(d) {
			return fmt.Errorf("--rw %s: not absolute", d)
		}
		if err := add(d, d, true, false, true); err != nil {
			return err
		}
	}
	resolvAt := ""
	if resolv != "" {
		var err error
		if resolvAt, err = resolvTarget(); err != nil {
			return err
		}
		if err := add(resolv, resolvAt, false, true, true); err != nil {
			return err
		}
	}

	if err := unix.Mount("tmpfs", root, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "mode=0755,size=64m"); err != nil {
		return fmt.Errorf("mount root: %w", err)
	}
	for _, b := range binds {
		dst := filepath.Join(root, b.dst)
		if b.symlink != "" {
			if err := os.Symlink(b.symlink, dst); err != nil {
				return err
			}
			continue
		}
		if err := bindFD(b.fd, dst, b.dir, b.ro); err != nil {
			return fmt.Errorf("%s: %w", b.dst, err)
		}
	}
	for n, t := range map[string]string{"fd": "/proc/self/fd", "stdin": "/proc/self/fd/0", "stdout": "/proc/self/fd/1", "stderr": "/proc/self/fd/2"} {
		if err := os.Symlink(t, filepath.Join(root, "dev", n)); err != nil {
			return err
		}
	}
	if err := os.MkdirAll(filepath.Join(root, "proc"), 0o555); err != nil {
		return err
	}
	// Only this pid namespace's processes. Best effort: a kernel that
	// refuses it (a host /proc with mounts over it) leaves /proc empty.
	_ = unix.Mount("proc", filepath.Join(root, "proc"), "proc", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "")
	if err := os.MkdirAll(filepath.Join(root, "tmp"), 0o1777); err != nil {
		return err
	}
	if err := os.Chmod(filepath.Join(root, "tmp"), 0o1777); err != nil {
		return err
	}
	if err := os.Chdir(root); err != nil {
		return err
	}
	if err := unix.PivotRoot(".", "."); err != nil {
		return fmt.Errorf("pivot_root: %w", err)
	}
	if err := unix.Unmount(".", unix.MNT_DETACH); err != nil {
		return fmt.Errorf("detach the host's root: %w", err)
	}
	return os.Chdir("/")
}

// bindFD mounts a copy of the tree at fd on dst, created as a directory or
// an empty file; ro makes the whole tree read-only (and nosuid, nodev).
func bindFD(fd int, dst string, dir, ro bool) error {
	if dir {
		if err := os.MkdirAll(dst, 0o755); err != nil {
			return err
		}
	} else if _, err := os.Lstat(dst); err != nil { // else a file to mount over (/etc/resolv.conf)
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return err
		}
		f, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_EXCL, 0o644)
		if err != nil {
			return err
		}
		f.Close()
	}
	tree, err := unix.OpenTree(fd, "", unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC|unix.AT_RECURSIVE|unix.AT_EMPTY_PATH)
	if err != nil {
		return fmt.Errorf("open_tree: %w", err)
	}
	defer unix.Close(tree)
	if ro {
		attr := unix.MountAttr{Attr_set: unix.MOUNT_ATTR_RDONLY | unix.MOUNT_ATTR_NOSUID | unix.MOUNT_ATTR_NODEV}
		if err := unix.MountSetattr(tree, "", unix.AT_EMPTY_PATH|unix.AT_RECURSIVE, &attr); err != nil {
			return fmt.Errorf("make read-only: %w", err)
		}
	}
	if err := unix.MoveMount(tree, "", unix.AT_FDCWD, dst, unix.MOVE_MOUNT_F_EMPTY_PATH); err != nil {
		return fmt.Errorf("move_mount: %w", err)
	}
	return nil
}

// resolvTarget is where the sandbox's resolv.conf goes: /etc/resolv.conf,
// or where the host's links to (systemd-resolved), which is then outside
// the read-only /etc, in the new root's own tmpfs.
func resolvTarget() (string, error) {
	t, err := os.Readlink("/etc/resolv.conf")
	if err != nil {
		return "/etc/resolv.conf", nil
	}
	if !filepath.IsAbs(t) {
		t = filepath.Join("/etc", t)
	}
	p := filepath.Clean(t)
	if strings.HasPrefix(p, "/etc/") || p == "/etc" {
		return "", fmt.Errorf("/etc/resolv.conf links to %s, inside the read-only /etc", p)
	}
	return p, nil
}
