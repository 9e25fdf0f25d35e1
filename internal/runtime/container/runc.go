package container

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/covedev/cove/internal/resources"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// errNotExist is returned by runc helpers when runc does not know the
// container.
var errNotExist = errors.New("container does not exist")

const stderrTail = 2048

// runcState is the part of `runc state` output the runtime uses.
type runcState struct {
	ID     string `json:"id"`
	Pid    int    `json:"pid"`
	Status string `json:"status"`
	Bundle string `json:"bundle"`
	// Annotations are those of the container's OCI spec.
	Annotations map[string]string `json:"annotations"`
}

// runc runs the runc binary with the runtime's --root and returns its
// standard output. Errors carry the tail of runc's standard error.
func (r *Runtime) runc(ctx context.Context, args ...string) ([]byte, error) {
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, r.cfg.RuncPath, append([]string{"--root", r.cfg.Root}, args...)...)
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	if err := resources.RunChild(cmd); err != nil { // not in the runner's weighted cgroup
		return nil, runcError(args[0], err, stderr.Bytes())
	}
	return stdout.Bytes(), nil
}

// runcCreate runs `runc create` with the container's standard streams on
// console (the environment's log file). runc runs in a session of its own so
// the container does not share the runner's session or terminal; the
// container's init is left behind as a child of this (subreaper) process.
// runcRun creates and starts the container in one runc process
// (`runc run --detach`, one fork/exec fewer than create + start).
// extra are handed to the container's PID 1 as descriptors 3, 4, ...
func (r *Runtime) runcRun(ctx context.Context, id, bundle, pidFile string, console *os.File, extra []*os.File) error {
	start, err := console.Seek(0, io.SeekEnd)
	if err != nil {
		return fmt.Errorf("seek console log: %w", err)
	}
	args := []string{"--root", r.cfg.Root, "run", "--detach", "--bundle", bundle, "--pid-file", pidFile}
	if len(extra) > 0 {
		args = append(args, "--preserve-fds", strconv.Itoa(len(extra)))
	}
	cmd := exec.CommandContext(ctx, r.cfg.RuncPath, append(args, id)...)
	cmd.Stdout = console
	cmd.Stderr = console
	cmd.ExtraFiles = extra
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := resources.RunChild(cmd); err != nil {
		return runcError("run", err, readTail(console.Name(), start))
	}
	return nil
}

// state returns runc's view of container id, or errNotExist.
func (r *Runtime) runcState(ctx context.Context, id string) (runcState, error) {
	// runc keeps each container's state in <root>/<id>; without it there is
	// nothing to ask runc about (and a fork/exec is saved).
	if _, err := os.Stat(filepath.Join(r.cfg.Root, id)); errors.Is(err, os.ErrNotExist) {
		return runcState{}, errNotExist
	}
	out, err := r.runc(ctx, "state", id)
	if err != nil {
		return runcState{}, err
	}
	var st runcState
	if err := json.Unmarshal(out, &st); err != nil {
		return runcState{}, fmt.Errorf("parse runc state: %w", err)
	}
	return st, nil
}

func (r *Runtime) runcList(ctx context.Context) ([]string, error) {
	out, err := r.runc(ctx, "list", "--format", "json")
	if err != nil {
		return nil, err
	}
	var cs []runcState
	if err := json.Unmarshal(out, &cs); err != nil {
		return nil, fmt.Errorf("parse runc list: %w", err)
	}
	ids := make([]string, 0, len(cs))
	for _, c := range cs {
		ids = append(ids, c.ID)
	}
	return ids, nil
}

func runcError(cmd string, err error, stderr []byte) error {
	msg := strings.TrimSpace(string(stderr))
	if strings.Contains(msg, "does not exist") {
		return fmt.Errorf("runc %s: %w", cmd, errNotExist)
	}
	if len(msg) > stderrTail {
		msg = "..." + msg[len(msg)-stderrTail:]
	}
	if msg == "" {
		return fmt.Errorf("runc %s: %w", cmd, err)
	}
	return fmt.Errorf("runc %s: %w: %s", cmd, err, msg)
}

// readTail returns what was appended to the file at path after offset, at
// most stderrTail bytes of it.
func readTail(path string, offset int64) []byte {
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil
	}
	if fi.Size()-offset > stderrTail {
		offset = fi.Size() - stderrTail
	}
	b, _ := io.ReadAll(io.NewSectionReader(f, offset, fi.Size()-offset))
	return b
}
