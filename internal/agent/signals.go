package agent

import "syscall"

// sshSignals maps RFC 4254 signal names to signals.
var sshSignals = map[string]syscall.Signal{
	"ABRT": syscall.SIGABRT,
	"ALRM": syscall.SIGALRM,
	"FPE":  syscall.SIGFPE,
	"HUP":  syscall.SIGHUP,
	"ILL":  syscall.SIGILL,
	"INT":  syscall.SIGINT,
	"KILL": syscall.SIGKILL,
	"PIPE": syscall.SIGPIPE,
	"QUIT": syscall.SIGQUIT,
	"SEGV": syscall.SIGSEGV,
	"TERM": syscall.SIGTERM,
	"USR1": syscall.SIGUSR1,
	"USR2": syscall.SIGUSR2,
}

// sshSignalName returns the RFC 4254 name of sig, or "" if it has none.
func sshSignalName(sig syscall.Signal) string {
	for name, s := range sshSignals {
		if s == sig {
			return name
		}
	}
	return ""
}
