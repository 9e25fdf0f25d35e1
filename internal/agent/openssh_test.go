package agent

import (
	"bytes"
	"context"
	"crypto/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/covedev/cove/internal/agent/agentproto"
	"github.com/covedev/cove/internal/testutil"
)

// TestOpenSSH drives the agent with the real OpenSSH tools, the way users'
// ssh, sftp, scp and rsync reach it through the gateway.
func TestOpenSSH(t *testing.T) {
	testutil.RequireTool(t, "ssh", "sftp", "scp")
	e := newTestEnv(t)
	wantUID := os.Getuid()
	if os.Geteuid() == 0 {
		e.cfg.User = "tester"
		wantUID = 65534
	}
	e.useSFTPCopy(t)
	e.start(t)

	exe, err := os.Executable()
	must(t, err)
	opts := []string{
		"-F", "/dev/null",
		"-o", "ProxyCommand=" + exe + " nc-unix " + e.sock,
		"-o", "StrictHostKeyChecking=no",
		"-o", "UserKnownHostsFile=/dev/null",
		"-o", "IdentityFile=" + e.keyFile,
		"-o", "IdentitiesOnly=yes",
		"-o", "User=" + agentproto.DefaultUser, // the gateway logs in as agentproto.DefaultUser
		"-o", "BatchMode=yes",
		"-o", "LogLevel=ERROR",
	}
	tool := func(name string, args ...string) (string, int) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), testutil.Patience(t))
		defer cancel()
		cmd := exec.CommandContext(ctx, name, args...)
		cmd.Env = append(os.Environ(), "COVE_SENT=from-client")
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		err := cmd.Run()
		if ctx.Err() != nil {
			t.Fatalf("%s %q timed out: %s", name, args, out.String())
		}
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		return out.String(), code
	}
	ssh := func(args ...string) (string, int) {
		t.Helper()
		return tool("ssh", append(append(append([]string{}, opts...), "-o", "SendEnv=COVE_SENT", "cove-test", "--"), args...)...)
	}

	if out, code := ssh("echo", "ok"); out != "ok\n" || code != 0 {
		t.Fatalf("ssh echo ok: %q exit %d", out, code)
	}
	if out, code := ssh(`echo "$COVE_SENT"; exit 7`); out != "from-client\n" || code != 7 {
		t.Errorf("ssh SendEnv/exit: %q exit %d", out, code)
	}

	local := filepath.Join(e.dir, "local.bin")
	data := make([]byte, 256<<10)
	rand.Read(data)
	must(t, os.WriteFile(local, data, 0o644))
	work := e.cfg.WorkDir

	// sftp batch mode: put then get, relative to the work directory.
	batch := filepath.Join(e.dir, "batch")
	back1 := filepath.Join(e.dir, "back1.bin")
	must(t, os.WriteFile(batch, []byte("put "+local+" viasftp.bin\nget viasftp.bin "+back1+"\n"), 0o644))
	if out, code := tool("sftp", append(append([]string{}, opts...), "-b", batch, "cove-test")...); code != 0 {
		t.Errorf("sftp -b: exit %d: %s", code, out)
	}
	checkFile(t, back1, data, -1)
	checkFile(t, filepath.Join(work, "viasftp.bin"), data, wantUID)

	// scp over the sftp protocol (-s) and the legacy protocol (-O).
	if out, code := tool("scp", append(append([]string{}, opts...), "-s", local, "cove-test:viascp-s.bin")...); code != 0 {
		t.Errorf("scp -s: exit %d: %s", code, out)
	}
	checkFile(t, filepath.Join(work, "viascp-s.bin"), data, wantUID)
	if out, code := tool("scp", append(append([]string{}, opts...), "-O", local, "cove-test:viascp-O.bin")...); code != 0 {
		t.Errorf("scp -O upload: exit %d: %s", code, out)
	}
	checkFile(t, filepath.Join(work, "viascp-O.bin"), data, wantUID)
	back2 := filepath.Join(e.dir, "back2.bin")
	if out, code := tool("scp", append(append([]string{}, opts...), "-O", "cove-test:viascp-O.bin", back2)...); code != 0 {
		t.Errorf("scp -O download: exit %d: %s", code, out)
	}
	checkFile(t, back2, data, -1)

	if _, err := exec.LookPath("rsync"); err == nil {
		rsh := "ssh " + strings.Join(quoteAll(opts), " ")
		if out, code := tool("rsync", "-a", "-e", rsh, local, "cove-test:viarsync.bin"); code != 0 {
			t.Errorf("rsync: exit %d: %s", code, out)
		}
		checkFile(t, filepath.Join(work, "viarsync.bin"), data, wantUID)
	}
}

func quoteAll(args []string) []string {
	out := make([]string, len(args))
	for i, a := range args {
		out[i] = "'" + a + "'"
	}
	return out
}

// checkFile checks path's content and, unless uid is -1, its owner.
func checkFile(t *testing.T, path string, want []byte, uid int) {
	t.Helper()
	got, err := os.ReadFile(path)
	if err != nil {
		t.Errorf("read %s: %v", path, err)
		return
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s: %d bytes differ from the %d expected", path, len(got), len(want))
	}
	if uid >= 0 {
		fi, err := os.Stat(path)
		must(t, err)
		if got := int(fi.Sys().(*syscall.Stat_t).Uid); got != uid {
			t.Errorf("%s owned by %d, want %d", path, got, uid)
		}
	}
}
