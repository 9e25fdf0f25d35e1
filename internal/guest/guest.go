// Package guest is the in-environment contract: the paths, file names and
// variables the runner provides inside every environment's containers and
// the agent (PID 1 there) relies on. It is defined once, here, and used by
// the runner (which mounts and writes these), internal/envconfig (which
// describes what to start) and the agent's defaults.
//
// Everything under Root belongs to cove: a devcontainer's features, image
// or repository cannot rely on it, and a features snapshot leaves it out.
package guest

// Root is cove's own directory inside an environment.
const Root = "/.cove"

// Directories inside an environment.
const (
	// BinDir holds the agent binary, bind-mounted read-only.
	BinDir = Root + "/bin"
	// RunDir is a service container's writable run directory (its exit
	// code and agent log); the dev container has none.
	RunDir = Root + "/run"
	// EtcDir holds the agent's keys and the postAttachCommand list,
	// written by the runner and mounted read-only.
	EtcDir = Root + "/etc"
	// LogDir holds the environment's logs (lifecycle log and services'
	// output), written by the runner and mounted read-only in the dev
	// container.
	LogDir = Root + "/log"
	// FeaturesDir holds the staged devcontainer features and their install
	// script while an installation is pending (writable: install scripts
	// chmod themselves).
	FeaturesDir = Root + "/features"
	// Workspaces is where the environment's checkout lives (the Dev
	// Containers default): the repository is Workspaces/<repository name>.
	Workspaces = "/workspaces"
)

// Files inside an environment.
const (
	// AgentBinary is the cove binary the agent runs from.
	AgentBinary = BinDir + "/cove"
	// HostKey is the agent's SSH host key.
	HostKey = EtcDir + "/" + HostKeyName
	// RunnerKeys are the client keys the agent accepts (the runner's, for
	// this container only).
	RunnerKeys = EtcDir + "/" + RunnerKeysName
	// PostAttach is the postAttachCommand list (JSON), run by sessions
	// that ask for it.
	PostAttach = EtcDir + "/" + PostAttachName
	// RemoteEnv is devcontainer.json's remoteEnv (a JSON list of
	// KEY=VALUE), which the agent gives users' sessions on top of the
	// user env probe; it is never in the container's own environment.
	RemoteEnv = EtcDir + "/" + RemoteEnvName
	// ExitCodeFile is where a service container's agent writes its
	// command's exit code before it exits.
	ExitCodeFile = RunDir + "/exit-code"
	// AgentLog is where a service container's agent writes its own log.
	AgentLog = RunDir + "/agent.log"
	// AgentSocket is the agent's default socket when the runner hands it
	// none (without --listen-fd).
	AgentSocket = RunDir + "/agent.sock"
	// LifecycleLog is the creation and lifecycle log the agent serves.
	LifecycleLog = LogDir + "/lifecycle.log"
	// ServiceLogDir holds each Docker Compose service's output log,
	// NAME.log, beside the lifecycle log.
	ServiceLogDir = LogDir + "/services"
	// FeaturesInstallScript installs the staged features, run as root.
	FeaturesInstallScript = FeaturesDir + "/install.sh"
	// Hosts, Hostname and ResolvConf are bind-mounted read-only from
	// files the runner writes.
	Hosts      = "/etc/hosts"
	Hostname   = "/etc/hostname"
	ResolvConf = "/etc/resolv.conf"
)

// File names in EtcDir, which the runner writes into the host directory it
// mounts there.
const (
	HostKeyName    = "host_key"
	RunnerKeysName = "runner_keys"
	PostAttachName = "post-attach.json"
	RemoteEnvName  = "remote-env.json"
)

// ListenFD is the descriptor of the listening socket the runner hands the
// agent (the first of the process's extra files).
const ListenFD = 3

// Variables every container of an environment gets.
const (
	EnvEnvironmentID   = "COVE_ENVIRONMENT_ID"
	EnvEnvironmentName = "COVE_ENVIRONMENT_NAME"
	// EnvService names the Docker Compose service of a sibling container.
	EnvService = "COVE_SERVICE"
)

// DefaultPath is the PATH a container gets when its image sets none.
const DefaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// WorkspaceFolder is the repository's folder inside the environment:
// Workspaces/<repo>, or Workspaces itself before a repository is known.
func WorkspaceFolder(repo string) string {
	if repo == "" {
		return Workspaces
	}
	return Workspaces + "/" + repo
}
