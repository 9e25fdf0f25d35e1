// Package agentproto is the wire protocol between the agent inside an
// environment (package agent, the SSH server) and its clients: the
// runner's agentclient and the user CLI, whose SSH sessions the runner's
// gateway relays unchanged. It holds only names and message shapes — the
// login name, session env requests, subsystem and channel types, values
// and the ports stream's line format — so that clients need not import the
// in-environment server.
//
// Everything travels over SSH (RFC 4254): control settings are session
// "env" requests, which the agent removes from the session's environment
// before it runs anything.
package agentproto

import (
	"net"
	"strconv"
)

// DefaultUser is the SSH login name that means "the environment's
// configured user" (the agent's Config.User). The runner's SSH gateway
// always logs in with it. Any other login name selects the session user by
// name or uid (as in an OCI image config's User field); only the runner's
// own client uses other names.
const DefaultUser = "cove"

// Session env requests the agent reads as settings. The runner (and only
// the runner: the agent honours other login names only from the runner's
// key) and the CLI steer sessions with them.
const (
	// EnvUserEnvProbe makes the agent capture the user's shell environment
	// before running the command and apply it, as the devcontainer
	// userEnvProbe property does. Values: the Probe* constants ("" and
	// ProbeNone: no probe).
	EnvUserEnvProbe = "COVE_USER_ENV_PROBE"

	// EnvExecArgv set to "1" makes the "exec" request's command a JSON array
	// of strings, executed directly (argv, no shell; argv[0] is searched in
	// the session's PATH).
	EnvExecArgv = "COVE_EXEC_ARGV"

	// EnvWorkDir selects the session's working directory (absolute; it must
	// exist). Without it sessions start in the agent's configured work
	// directory, else the home directory.
	EnvWorkDir = "COVE_WORKDIR"

	// EnvPostAttach set to "1" makes the agent run the postAttachCommand
	// list before the session's shell or command, as the session's user, in
	// its directory and environment, with their output on the session's
	// stderr (the terminal for a pty session). The session's command runs
	// whatever their result.
	EnvPostAttach = "COVE_POST_ATTACH"

	// EnvLogsFollow set to "1" makes the LogsSubsystem keep streaming what
	// is appended until the client closes the channel.
	EnvLogsFollow = "COVE_LOGS_FOLLOW"

	// EnvLogsService=NAME makes the LogsSubsystem stream the output of the
	// Docker Compose service NAME instead of the lifecycle log.
	EnvLogsService = "COVE_LOGS_SERVICE"
)

// Values of EnvUserEnvProbe, as in devcontainer.json's userEnvProbe.
const (
	ProbeNone                  = "none"
	ProbeLoginShell            = "loginShell"
	ProbeInteractiveShell      = "interactiveShell"
	ProbeLoginInteractiveShell = "loginInteractiveShell"
)

// ValidProbe reports whether v is a value the agent accepts for
// EnvUserEnvProbe ("" means none).
func ValidProbe(v string) bool {
	switch v {
	case "", ProbeNone, ProbeLoginShell, ProbeInteractiveShell, ProbeLoginInteractiveShell:
		return true
	}
	return false
}

// LogsSubsystem is the SSH subsystem that streams the environment's
// creation and lifecycle log (or a service's output, see EnvLogsService).
const LogsSubsystem = "cove-logs"

// PortsChannel is the SSH channel type on which the agent streams the
// environment's listening TCP ports. The client opens it without extra
// data; the agent accepts and writes one JSON line, an array of Port, right
// away and again after every change. Data the client sends is ignored; the
// stream ends when either side closes the channel.
const PortsChannel = "ports@cove"

// MaxPortsLine bounds one line of the ports stream; a client refuses a
// longer one (65536 ports fit easily).
const MaxPortsLine = 8 << 20

// Port is a TCP port something listens on inside the environment.
type Port struct {
	Port    int    `json:"port"`
	Address string `json:"address"` // listen address, e.g. "0.0.0.0", "::", "127.0.0.1"
}

// DialAddr is the host:port that reaches the port from inside the
// environment: a loopback address for a wildcard listener.
func (p Port) DialAddr() string {
	host := p.Address
	switch host {
	case "", "0.0.0.0":
		host = "127.0.0.1"
	case "::":
		host = "::1"
	}
	return net.JoinHostPort(host, strconv.Itoa(p.Port))
}
