package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/covedev/cove/bench/internal/benchkit"
	"github.com/covedev/cove/internal/resources"
)

// The environments: A measures, B is its neighbour.
const envA, envB = "a", "b"

// warmupOps is how many write+fsyncs A does, unmeasured, before a
// session's first case.
const warmupOps = 300

// ioSubnet is the environments' subnet.
const ioSubnet = "10.219.0.0/16"

// probePath is where ioprobe is copied to inside the environments.
const probePath = "/tmp/ioprobe"

// session is one `cove up` with A and B running and ioprobe in both.
type session struct {
	f      *fixture
	p      policy
	cv     *benchkit.Cove
	usage  *resources.UsageReader
	bID    string
	wsA    string // A's workspace (its working directory)
	wsB    string
	dataFS string // a directory on the data dir's file system (for syncfs)
}

// session starts cove up with p's flags and the environments, runs body
// and removes everything again.
func (f *fixture) session(ctx context.Context, p policy, body func(*session) error) (retErr error) {
	var cl benchkit.Cleanups
	defer cl.Run()
	dir := filepath.Join(f.tmp, p.short)
	if err := os.MkdirAll(dir, 0o711); err != nil {
		return err
	}
	benchkit.Progress("starting cove up %s", strings.Join(p.args, " "))
	coveRunc := filepath.Join(f.runRoot, p.short+"-runc")
	cgParent := benchkit.DefaultCgroupParent() + "-" + p.short
	cl.Add(func() { benchkit.RemoveCgroups(cgParent) })
	cl.Add(func() { benchkit.DeleteContainers(f.o.runc, coveRunc) }) // after cove up stops
	// Its own subnet (the later flag wins): the other benchmarks' cove
	// up, on benchkit's subnet or bench/density's, may run at the same
	// time.
	args := append(slices.Clip(p.args), "--subnet", ioSubnet)
	cv, err := benchkit.StartCove(ctx, benchkit.CoveOptions{Bin: f.coveBin, Runc: f.o.runc, Dir: dir, RuncRoot: coveRunc,
		CgroupParent: cgParent, Args: args})
	if err != nil {
		return err
	}
	keepLog := ""
	if f.o.keepLog {
		keepLog = "bench-io-" + p.short + ".log"
	}
	cl.Add(cv.StopFunc(&retErr, keepLog))
	envs, err := benchkit.NewEnvs(ctx, cv, f.repo, f.imageRef)
	if err != nil {
		return err
	}
	cl.Add(envs.Close)
	s := &session{f: f, p: p, cv: cv, usage: resources.NewUsageReader(cgParent), dataFS: cv.DataDir}
	for _, n := range []string{envA, envB} {
		id, _, err := envs.Create(ctx, n, "")
		if err != nil {
			return err
		}
		if _, err := envs.WaitRunning(ctx, id, 2*time.Minute); err != nil {
			return err
		}
		if n == envB {
			s.bID = id
		}
		ws, err := s.install(ctx, n)
		if err != nil {
			return err
		}
		if n == envA {
			s.wsA = ws
		} else {
			s.wsB = ws
		}
	}
	if _, err := s.usage.Read(s.bID); err != nil {
		return fmt.Errorf("environment %s's cgroup: %w", envB, err)
	}
	// An unmeasured round first: the first fsyncs after the previous
	// session's gigabytes were slow here (p99 40–170 ms against a few ms
	// a round later), whatever the policy.
	benchkit.Progress("%s: warming up A's probe", p.name)
	if err := s.syncfs(); err != nil {
		return err
	}
	if _, err := s.probe(ctx, warmupOps); err != nil {
		return err
	}
	return body(s)
}

// install copies ioprobe into environment env and returns its workspace
// (the directory a command starts in).
func (s *session) install(ctx context.Context, env string) (string, error) {
	bin, err := os.Open(s.f.probeBin)
	if err != nil {
		return "", err
	}
	defer bin.Close()
	out, err := s.ssh(ctx, env, bin, fmt.Sprintf("cat > %[1]s && chmod 0755 %[1]s && pwd", probePath))
	if err != nil {
		return "", fmt.Errorf("copy ioprobe into %s: %w", env, err)
	}
	ws := strings.TrimSpace(string(out))
	if !strings.HasPrefix(ws, "/") {
		return "", fmt.Errorf("environment %s: working directory %q is not a path", env, ws)
	}
	return ws, nil
}

// ssh runs command in environment env through `cove ssh` with stdin.
func (s *session) ssh(ctx context.Context, env string, stdin io.Reader, command string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, s.cv.Bin, "ssh", env, "--", command)
	cmd.Env = s.cv.Env()
	cmd.Stdin = stdin
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return out, fmt.Errorf("cove ssh %s: %w: %s", env, err, strings.TrimSpace(stderr.String()))
	}
	return out, nil
}
