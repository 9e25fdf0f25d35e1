package guest

import "testing"

// TestContract pins the paths and names environments already running
// depend on: their agents were started with these on the command line
// and mounts at these places, so a runner upgrade that changed one would
// break every running environment's agent. Change them only with a
// migration.
func TestContract(t *testing.T) {
	for got, want := range map[string]string{
		AgentBinary:           "/.cove/bin/cove",
		RunDir:                "/.cove/run",
		EtcDir:                "/.cove/etc",
		LogDir:                "/.cove/log",
		FeaturesDir:           "/.cove/features",
		Workspaces:            "/workspaces",
		HostKey:               "/.cove/etc/host_key",
		RunnerKeys:            "/.cove/etc/runner_keys",
		PostAttach:            "/.cove/etc/post-attach.json",
		RemoteEnv:             "/.cove/etc/remote-env.json",
		ExitCodeFile:          "/.cove/run/exit-code",
		AgentLog:              "/.cove/run/agent.log",
		AgentSocket:           "/.cove/run/agent.sock",
		LifecycleLog:          "/.cove/log/lifecycle.log",
		ServiceLogDir:         "/.cove/log/services",
		FeaturesInstallScript: "/.cove/features/install.sh",
		EnvEnvironmentID:      "COVE_ENVIRONMENT_ID",
		EnvEnvironmentName:    "COVE_ENVIRONMENT_NAME",
		EnvService:            "COVE_SERVICE",
		DefaultPath:           "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
	} {
		if got != want {
			t.Errorf("%q, want %q", got, want)
		}
	}
	if ListenFD != 3 {
		t.Errorf("ListenFD = %d: the runner hands the socket as the first extra file", ListenFD)
	}
}

func TestWorkspaceFolder(t *testing.T) {
	if got := WorkspaceFolder("repo"); got != "/workspaces/repo" {
		t.Errorf("WorkspaceFolder(repo) = %q", got)
	}
	if got := WorkspaceFolder(""); got != "/workspaces" {
		t.Errorf("WorkspaceFolder(\"\") = %q", got)
	}
}
