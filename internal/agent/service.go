package agent

import (
	"fmt"
	"strconv"
	"syscall"
	"time"

	"github.com/covedev/cove/internal/atomicfile"
)

// ExitError is what Run returns in service mode (Config.ExitWithCommand)
// when the entrypoint chain did not exit 0: the agent's process should exit
// with Code, as a container exits with its command's status.
type ExitError struct {
	Code int // the chain's exit code, 128+signal, or 127 when it could not start
}

func (e *ExitError) Error() string {
	return fmt.Sprintf("command exited with code %d", e.Code)
}

// Exit codes of service mode that do not come from the chain itself.
const (
	exitCannotStart = 127             // as a shell's "command not found"
	exitUnreaped    = 128 + 9         // still running after SIGKILL (as if killed)
	exitSignalBase  = 128             // a chain killed by signal N exits 128+N
	chainDrainWait  = 2 * time.Second // bound on waiting for the chain's status after shutdown
)

// chainExitCode maps a wait status to a process exit code as shells and
// container engines do: the exit status, or 128+signal.
func chainExitCode(ws syscall.WaitStatus) int {
	if ws.Signaled() {
		return exitSignalBase + int(ws.Signal())
	}
	return ws.ExitStatus()
}

// finishService ends service mode after the agent has shut down: it
// collects the chain's exit code (pr is nil when the chain could not be
// started), writes it to Config.ExitCodeFile, and returns Run's result.
func (a *agent) finishService(pr *proc) error {
	code := exitCannotStart
	if pr != nil {
		select {
		case <-pr.done:
			code = chainExitCode(pr.status)
		case <-time.After(chainDrainWait):
			a.log.Warn("command did not exit after SIGKILL", "pid", pr.pid)
			code = exitUnreaped
		}
	}
	a.log.Info("service exiting", "code", code)
	if path := a.cfg.ExitCodeFile; path != "" {
		if err := atomicfile.Write(path, []byte(strconv.Itoa(code)+"\n"), 0o644); err != nil {
			a.log.Error("write exit code", "err", err)
		}
	}
	if code == 0 {
		return nil
	}
	return &ExitError{Code: code}
}
