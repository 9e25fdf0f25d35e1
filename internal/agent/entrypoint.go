package agent

import (
	"context"
	"fmt"
	"os"
	"syscall"
)

// keepAliveScript is what the reference devcontainer CLI runs as the
// container's command when overrideCommand is true: it sleeps until it is
// asked to stop. The sleep runs in the background and the shell waits for
// it with the wait builtin, which a trapped signal interrupts: a shell
// waiting for a foreground sleep runs its trap only when the sleep ends, so
// a SIGTERM that reached the shell just before it started the sleep (the
// sleep never saw it) used to cost the whole shutdown grace and a SIGKILL.
const keepAliveScript = `trap "exit 0" TERM; while sleep 1000 & wait $!; do :; done`

// entrypointArgv returns the command line of the entrypoint chain: the
// features' entrypoints, in install order, then the image's ENTRYPOINT and
// CMD (command) or, without one, the keep-alive loop. Each feature
// entrypoint does its setup and then runs `exec "$@"`. It returns nil when
// there is nothing to run (no feature entrypoint and no command: the agent
// itself keeps the environment alive).
func entrypointArgv(entrypoints, command []string) []string {
	if len(entrypoints) == 0 && len(command) == 0 {
		return nil
	}
	argv := append([]string(nil), entrypoints...)
	if len(command) > 0 {
		return append(argv, command...)
	}
	return append(argv, "/bin/sh", "-c", keepAliveScript)
}

// startEntrypoint starts the entrypoint chain as Config.CommandUser (root
// when empty), in the background, with its output going to the agent's
// stdout and stderr. It is tracked in the process table like a session, so
// it is reaped and, on shutdown, receives SIGTERM. Its exit is logged; the
// agent keeps running unless Config.ExitWithCommand is set (see Run).
func (a *agent) startEntrypoint(ctx context.Context) (*proc, error) {
	argv := entrypointArgv(a.cfg.Entrypoints, a.cfg.Command)
	if argv == nil {
		return nil, nil
	}
	acct, err := lookupAccount(a.cfg.passwdPath, a.cfg.groupPath, a.cfg.CommandUser)
	if err != nil && a.cfg.CommandUser != "" {
		return nil, fmt.Errorf("start entrypoint: %w", err)
	}
	var cred *syscall.Credential
	if a.cfg.CommandUser != "" {
		cred = credential(acct)
	}
	// Without CommandUser the chain runs as the agent (root in an
	// environment) and passwd serves only for HOME.
	user := ""
	if acct != nil {
		user = acct.Name
	}
	env := append([]string(nil), a.cfg.Env...)
	if getEnv(env, "PATH") == "" {
		env = setEnv(env, "PATH", defaultPath)
	}
	if getEnv(env, "HOME") == "" && acct != nil { // as container engines do
		env = setEnv(env, "HOME", acct.Home)
	}
	dir := workDir(a.cfg.EntrypointDir, "/")
	path, err := lookPath(argv[0], getEnv(env, "PATH"), dir)
	if err != nil {
		return nil, fmt.Errorf("start entrypoint: %w", err)
	}
	stdout, stderr := a.cfg.entrypointOut, a.cfg.entrypointOut
	if stdout == nil {
		stdout, stderr = os.Stdout, os.Stderr
	}
	devnull, err := os.Open(os.DevNull)
	if err != nil {
		return nil, fmt.Errorf("start entrypoint: %w", err)
	}
	defer devnull.Close()
	attr := &os.ProcAttr{
		Dir:   dir,
		Env:   env,
		Files: []*os.File{devnull, stdout, stderr},
		// Its own session and process group: shutdown signals the group.
		Sys: &syscall.SysProcAttr{Setsid: true, Credential: cred},
	}
	pr, err := a.procs.start(path, argv, attr)
	if err != nil {
		return nil, fmt.Errorf("start entrypoint %s: %w", argv[0], err)
	}
	a.log.Info("entrypoint started", "pid", pr.pid, "argv", argv, "user", user)
	go func() {
		ws := pr.wait()
		if ctx.Err() != nil || (!ws.Signaled() && ws.ExitStatus() == 0) {
			a.log.Info("entrypoint exited", "pid", pr.pid, "status", exitDescription(ws))
			return
		}
		a.log.Warn("entrypoint exited", "pid", pr.pid, "status", exitDescription(ws))
	}()
	return pr, nil
}
