package runner

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"syscall"

	"github.com/covedev/cove/internal/image"
	"github.com/covedev/cove/internal/resources"
	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// unpackWork is the name of the work cgroup image layers are unpacked in.
const unpackWork = "unpack"

// childUnpacker unpacks image layers in a child process, `bin
// internal-unpack-layer DIR` (cli.UnpackLayerCommand), placed in work
// cgroup w before it reads a byte: decompressing and writing a layer then
// uses no more CPU, memory and disk bandwidth than w allows, however
// large the image. The blob is streamed to the child's stdin; the child
// prints the diff id, which the image store checks.
func childUnpacker(bin string, w *resources.WorkCgroup) image.Unpacker {
	return func(ctx context.Context, dir string, blob io.Reader) (v1.Hash, error) {
		pr, pw, err := os.Pipe()
		if err != nil {
			return v1.Hash{}, err
		}
		defer pw.Close()
		cmd := exec.CommandContext(ctx, bin, "internal-unpack-layer", dir)
		var stdout, stderr bytes.Buffer
		cmd.Stdin, cmd.Stdout, cmd.Stderr = pr, &capped{b: &stdout, n: 256}, &capped{b: &stderr, n: 4096}
		// The child dies with the runner: a runner killed mid-unpack
		// must not leave it writing into the store's temporary
		// directory, which the restarted runner discards. The signal
		// comes when the thread that started the child exits, so this
		// goroutine keeps that thread until the child is gone.
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		err = resources.StartChild(cmd) // born outside the runner's weighted cgroup (selfcgroup.go)
		pr.Close()
		if err != nil {
			return v1.Hash{}, fmt.Errorf("start the unpacker: %w", err)
		}
		if err := w.Add(cmd.Process.Pid); err != nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
			return v1.Hash{}, err
		}
		_, cerr := io.Copy(pw, blob)
		pw.Close()
		werr := cmd.Wait()
		switch {
		case werr != nil:
			msg := strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(stderr.String()), "cove: "))
			if msg == "" {
				msg = werr.Error()
			}
			var ee *exec.ExitError
			if errors.As(werr, &ee) && ctx.Err() == nil {
				if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() && ws.Signal() == syscall.SIGKILL {
					// The kernel's OOM killer, in the work cgroup.
					msg = "the unpacker was killed, most likely for lack of memory: the layer needs more than the runner's unpack memory limit (--unpack-memory)"
				}
			}
			if cerr != nil && !errors.Is(cerr, os.ErrClosed) && !errors.Is(cerr, syscall.EPIPE) {
				// The blob failed first (a digest mismatch, a
				// dropped connection): that is the cause.
				return v1.Hash{}, cerr
			}
			return v1.Hash{}, errors.New(msg)
		case cerr != nil:
			return v1.Hash{}, cerr
		}
		return v1.NewHash(strings.TrimSpace(stdout.String()))
	}
}

// capped is a writer that keeps the first n bytes written to it.
type capped struct {
	b *bytes.Buffer
	n int
}

func (c *capped) Write(p []byte) (int, error) {
	if room := c.n - c.b.Len(); room > 0 {
		c.b.Write(p[:min(room, len(p))])
	}
	return len(p), nil
}

// unpackCgroup is the unpack work cgroup, made for the first unpack that
// needs it and removed when the last one running ends (a runner that is
// not pulling leaves no cgroup behind).
type unpackCgroup struct {
	log                   *slog.Logger
	parent, name, dataDir string
	limits                WorkLimits

	mu sync.Mutex
	n  int
	w  *resources.WorkCgroup
}

func (u *unpackCgroup) acquire() (*resources.WorkCgroup, error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.n == 0 {
		w, err := workCgroup(u.log, u.parent, u.name, u.dataDir, u.limits)
		if err != nil {
			return nil, err
		}
		u.w = w
	}
	u.n++
	return u.w, nil
}

func (u *unpackCgroup) release() {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.n--; u.n == 0 {
		removeWorkCgroup(u.log, u.w)
		u.w = nil
	}
}

// limitedUnpacker unpacks in a child process (bin) in the work cgroup
// "unpack" below parent with limits l.
func limitedUnpacker(log *slog.Logger, bin, parent, dataDir string, l WorkLimits) image.Unpacker {
	u := &unpackCgroup{log: log, parent: parent, name: unpackWork, dataDir: dataDir, limits: l}
	return func(ctx context.Context, dir string, blob io.Reader) (v1.Hash, error) {
		w, err := u.acquire()
		if err != nil {
			return v1.Hash{}, fmt.Errorf("unpack work cgroup: %w", err)
		}
		defer u.release()
		return childUnpacker(bin, w)(ctx, dir, blob)
	}
}
