// Package testutil holds helpers shared by the tests of many packages:
// skipping a test that needs root or a program the machine lacks, and
// waiting for a condition without assuming how fast a loaded machine is.
package testutil

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"
)

// RequireRoot skips the test unless it runs as root (effective uid 0).
// why, if given, says what needs root ("mounts", "chown, mknod"), so that
// the skip message tells the reader what the test would have exercised.
// CI runs the suite as root.
func RequireRoot(tb testing.TB, why ...string) {
	tb.Helper()
	if euid := os.Geteuid(); euid != 0 {
		reason := "needs root"
		if len(why) > 0 {
			reason += " (" + strings.Join(why, ", ") + ")"
		}
		tb.Skipf("%s; running as uid %d (CI runs the tests as root)", reason, euid)
	}
}

// RequireTool skips the test unless every named program is on PATH and,
// for those with a probe (runc: "runc --version"), runs. The skip message
// names the program and how to install it.
func RequireTool(tb testing.TB, names ...string) {
	tb.Helper()
	for _, name := range names {
		if err := toolMissing(name); err != nil {
			tb.Skipf("needs %s: %v%s", name, err, installHint(name))
			return
		}
	}
}

// toolProbes are commands that show a program works, not only that it is
// installed; they must be quick and harmless.
var toolProbes = map[string][]string{
	"runc": {"--version"},
}

// toolInstall says where each program the suite uses comes from.
var toolInstall = map[string]string{
	"runc":         "runc",
	"git":          "git",
	"ssh":          "openssh-client",
	"scp":          "openssh-client",
	"sftp":         "openssh-client",
	"rsync":        "rsync",
	"mmdebstrap":   "mmdebstrap",
	"ip":           "iproute2",
	"nft":          "nftables",
	"busybox":      "busybox-static",
	"newuidmap":    "uidmap",
	"sqlite3":      "sqlite3",
	"devcontainer": "npm @devcontainers/cli",
}

func installHint(name string) string {
	if pkg, ok := toolInstall[name]; ok {
		return fmt.Sprintf(" (%s; scripts/install-deps.sh test installs it)", pkg)
	}
	return ""
}

// probeTimeout bounds a tool's probe; it only guards against a hung
// binary, so it is generous for a loaded machine.
const probeTimeout = 30 * time.Second

var toolChecks sync.Map // name → func() error (sync.OnceValue): each tool is checked once per test binary

func toolMissing(name string) error {
	f, _ := toolChecks.LoadOrStore(name, sync.OnceValue(func() error {
		path, err := exec.LookPath(name)
		if err != nil {
			return fmt.Errorf("not found on PATH")
		}
		args, ok := toolProbes[name]
		if !ok {
			return nil
		}
		ctx, cancel := context.WithTimeout(context.Background(), probeTimeout)
		defer cancel()
		if out, err := exec.CommandContext(ctx, path, args...).CombinedOutput(); err != nil {
			return fmt.Errorf("%s %s failed: %v: %s", path, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
		}
		return nil
	}))
	return f.(func() error)()
}
