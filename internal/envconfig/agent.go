package envconfig

import (
	"strconv"

	"github.com/covedev/cove/internal/guest"
)

// Agent is the configuration the agent (PID 1 of every container) gets on
// its command line. It always serves SSH on the socket the runner hands it
// (guest.ListenFD) with its host key and the runner's client key from
// guest.EtcDir.
type Agent struct {
	// User is who sessions run as; WorkDir where they start.
	User, WorkDir string
	// PostAttach is the postAttachCommand list file ("" for none).
	PostAttach string
	// Entrypoints are features' entrypoints, run as a chain before
	// Command (the image's ENTRYPOINT+CMD; empty: sleep forever).
	Entrypoints, Command []string
	// CommandUser runs the chain ("" for root); EntrypointWorkDir is its
	// working directory ("" for the agent's default, /).
	CommandUser, EntrypointWorkDir string
	// UserEnvProbe is the shell environment users' sessions get.
	UserEnvProbe string
	// RemoteEnv is the remoteEnv file (guest.RemoteEnv; "" for none):
	// users' sessions get it on top of the probed environment. It is
	// never in the container's own environment.
	RemoteEnv string
	// KeepProfilePath makes the agent patch /etc/profile and
	// /etc/environment once, inside the container, so that login shells
	// keep the container's PATH (as the reference CLI does for the dev
	// container).
	KeepProfilePath bool
	// ExitWithCommand makes the agent exit with the command's exit code
	// (a service), first writing it to ExitCodeFile.
	ExitWithCommand bool
	ExitCodeFile    string
	// LogFile receives the agent's own log ("" for its stderr, the
	// container's console).
	LogFile string
}

// Args is the agent's command line: the only place it is built. The
// order of the flags is the one runners have always used (a container's
// command line is part of its runtime spec): with a CommandUser (a
// service), the chain's user and directory come right after the session's
// user and directory; without, the directory comes after the chain.
func (a Agent) Args() []string {
	args := []string{guest.AgentBinary, "agent", "--listen-fd", strconv.Itoa(guest.ListenFD),
		"--host-key", guest.HostKey, "--authorized-keys", guest.RunnerKeys,
		"--user", a.User, "--workdir", a.WorkDir}
	if a.CommandUser != "" {
		args = append(args, "--command-user", a.CommandUser)
		if a.EntrypointWorkDir != "" {
			args = append(args, "--entrypoint-workdir", a.EntrypointWorkDir)
		}
	}
	if a.ExitWithCommand {
		args = append(args, "--exit-with-command")
	}
	if a.ExitCodeFile != "" {
		args = append(args, "--exit-code-file", a.ExitCodeFile)
	}
	if a.LogFile != "" {
		args = append(args, "--log-file", a.LogFile)
	}
	if a.PostAttach != "" {
		args = append(args, "--post-attach", a.PostAttach)
	}
	for _, ep := range a.Entrypoints {
		args = append(args, "--entrypoint", ep)
	}
	for _, c := range a.Command {
		args = append(args, "--command", c)
	}
	if a.CommandUser == "" && a.EntrypointWorkDir != "" {
		args = append(args, "--entrypoint-workdir", a.EntrypointWorkDir)
	}
	if a.UserEnvProbe != "" {
		args = append(args, "--user-env-probe", a.UserEnvProbe)
	}
	// Flags added later go last: the order of the older ones is kept.
	if a.RemoteEnv != "" {
		args = append(args, "--remote-env", a.RemoteEnv)
	}
	if a.KeepProfilePath {
		args = append(args, "--keep-profile-path")
	}
	return args
}
