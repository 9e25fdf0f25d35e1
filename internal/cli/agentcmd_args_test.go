package cli

import (
	"reflect"
	"testing"

	"github.com/covedev/cove/internal/envconfig"
	"github.com/covedev/cove/internal/guest"
)

// TestAgentTakesRunnerArgs: the command line the runner builds for the
// agent (envconfig) is one `cove agent` understands, flag for flag, for
// the dev container and for a service container.
func TestAgentTakesRunnerArgs(t *testing.T) {
	r := &envconfig.Resolved{User: "dev", DC: &envconfig.DevcontainerState{WorkspaceFolder: "/workspaces/repo",
		Entrypoints: []string{"/e1", "/e2"}, Command: []string{"/init", "--flag", "a b"}, WorkingDir: "/srv", UserEnvProbe: "loginShell"},
		Compose: &envconfig.ComposeState{DevService: "app", Order: []string{"app", "db"},
			Services: []envconfig.ServiceState{{Name: "db", User: "postgres", WorkingDir: "/var/lib/db", Command: []string{"postgres", "-c", "x=1"}}}}}
	ms, err := envconfig.Machines(envconfig.Identity{ID: "e1", Name: "n", RepoName: "repo"}, r, envconfig.Options{Networked: true})
	if err != nil {
		t.Fatal(err)
	}
	want := []map[string]any{
		{"listen-fd": guest.ListenFD, "host-key": guest.HostKey, "authorized-keys": guest.RunnerKeys, "user": "dev", "workdir": "/workspaces/repo",
			"post-attach": guest.PostAttach, "entrypoint": []string{"/e1", "/e2"}, "command": []string{"/init", "--flag", "a b"},
			"entrypoint-workdir": "/srv", "user-env-probe": "loginShell", "command-user": "", "exit-with-command": false, "exit-code-file": "", "log-file": "",
			"remote-env": guest.RemoteEnv, "keep-profile-path": true},
		{"listen-fd": guest.ListenFD, "host-key": guest.HostKey, "authorized-keys": guest.RunnerKeys, "user": "postgres", "workdir": "/var/lib/db",
			"post-attach": "", "entrypoint": []string{}, "command": []string{"postgres", "-c", "x=1"},
			"entrypoint-workdir": "/var/lib/db", "user-env-probe": "", "command-user": "postgres", "exit-with-command": true,
			"exit-code-file": guest.ExitCodeFile, "log-file": guest.AgentLog, "remote-env": "", "keep-profile-path": false},
	}
	for i, m := range ms {
		if m.Process.Args[0] != guest.AgentBinary || m.Process.Args[1] != "agent" {
			t.Fatalf("%s: %q does not run the agent", m.ID, m.Process.Args[:2])
		}
		cmd := AgentCommand()
		f := cmd.Flags()
		if err := f.Parse(m.Process.Args[2:]); err != nil {
			t.Fatalf("%s: cove agent refuses %q: %v", m.ID, m.Process.Args, err)
		}
		if f.NArg() != 0 {
			t.Errorf("%s: arguments left over: %q", m.ID, f.Args())
		}
		for name, w := range want[i] {
			var got any
			var err error
			switch w.(type) {
			case int:
				got, err = f.GetInt(name)
			case bool:
				got, err = f.GetBool(name)
			case []string:
				got, err = f.GetStringArray(name)
			default:
				got, err = f.GetString(name)
			}
			if err != nil || !reflect.DeepEqual(got, w) {
				t.Errorf("%s: --%s = %#v (%v), want %#v", m.ID, name, got, err, w)
			}
		}
	}
}
