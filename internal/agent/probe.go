package agent

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"strings"
	"syscall"
	"time"

	"github.com/covedev/cove/internal/agent/agentproto"
)

const (
	defaultProbeTimeout = 10 * time.Second
	probeMark           = "-cove-env-probe-7c1b-"
)

// probeUserEnv runs the user's shell the way mode asks (login and/or
// interactive) and returns the environment it exports, as the reference
// devcontainer CLI's userEnvProbe does. Anything the shell's rc files print
// is ignored: the environment is read between two markers. Variables that
// describe the probe's own shell (PWD, SHLVL, _) are dropped.
func (a *agent) probeUserEnv(mode, shell string, attr os.ProcAttr) ([]string, error) {
	var flags []string
	switch mode {
	case agentproto.ProbeLoginShell:
		flags = []string{"-l"}
	case agentproto.ProbeInteractiveShell:
		flags = []string{"-i"}
	case agentproto.ProbeLoginInteractiveShell:
		flags = []string{"-l", "-i"}
	default:
		return nil, nil
	}
	script := fmt.Sprintf("printf '%%s' '%s'; cat /proc/self/environ 2>/dev/null || env -0; printf '%%s' '%s'", probeMark, probeMark)
	argv := append(append([]string{shell}, flags...), "-c", script)

	devnull, err := os.Open(os.DevNull)
	if err != nil {
		return nil, err
	}
	defer devnull.Close()
	r, w, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	defer r.Close()
	attr.Files = []*os.File{devnull, w, devnull}
	sys := *attr.Sys
	sys.Setsid = true
	sys.Setctty = false
	attr.Sys = &sys
	pr, err := a.procs.start(shell, argv, &attr)
	w.Close()
	if err != nil {
		return nil, fmt.Errorf("user env probe: %w", err)
	}

	var out bytes.Buffer
	read := make(chan struct{})
	go func() { io.Copy(&out, io.LimitReader(r, 4<<20)); close(read) }()
	timeout := a.cfg.probeTimeout
	if timeout == 0 {
		timeout = defaultProbeTimeout
	}
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case <-pr.done:
	case <-timer.C:
		a.procs.signal(pr, syscall.SIGKILL, true)
		pr.wait()
		return nil, fmt.Errorf("user env probe: %s did not finish within %s", shell, timeout)
	}
	// A background process started by an rc file may hold the pipe open.
	select {
	case <-read:
	case <-time.After(outputGrace):
		r.Close()
		<-read
	}

	_, rest, ok := strings.Cut(out.String(), probeMark)
	body, _, ok2 := strings.Cut(rest, probeMark)
	if !ok || !ok2 {
		return nil, fmt.Errorf("user env probe: %s printed no environment (%s)", shell, exitDescription(pr.status))
	}
	var env []string
	for _, kv := range strings.Split(body, "\x00") {
		k, _, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			continue
		}
		switch k {
		case "PWD", "OLDPWD", "SHLVL", "_":
			continue
		}
		env = append(env, kv)
	}
	return env, nil
}

// mergeEnv sets every variable of over in env.
func mergeEnv(env, over []string) []string {
	for _, kv := range over {
		if k, v, ok := strings.Cut(kv, "="); ok && k != "" {
			env = setEnv(env, k, v)
		}
	}
	return env
}
