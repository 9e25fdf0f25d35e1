package envconfig

import (
	"reflect"
	"testing"
)

// TestAgentArgs pins the agent's command line for each shape the runner
// starts: the order is the one containers started by earlier runners
// have in their runtime spec.
func TestAgentArgs(t *testing.T) {
	tests := []struct {
		name string
		a    Agent
		want string
	}{
		{"bare", Agent{User: "root", WorkDir: "/"}, agentPrefix + "--user root --workdir /"},
		{"dev container", Agent{User: "u", WorkDir: "/w", PostAttach: "/.cove/etc/post-attach.json", Entrypoints: []string{"/a", "/b"},
			Command: []string{"x", "y"}, EntrypointWorkDir: "/srv", UserEnvProbe: "loginShell"},
			agentPrefix + "--user u --workdir /w --post-attach /.cove/etc/post-attach.json --entrypoint /a --entrypoint /b " +
				"--command x --command y --entrypoint-workdir /srv --user-env-probe loginShell"},
		{"service", Agent{User: "s", WorkDir: "/d", CommandUser: "s", EntrypointWorkDir: "/d", ExitWithCommand: true,
			ExitCodeFile: "/.cove/run/exit-code", LogFile: "/.cove/run/agent.log", Command: []string{"run"}},
			agentPrefix + "--user s --workdir /d --command-user s --entrypoint-workdir /d --exit-with-command " +
				"--exit-code-file /.cove/run/exit-code --log-file /.cove/run/agent.log --command run"},
		// An empty directory is the agent's default, not an empty flag.
		{"command user, default directory", Agent{User: "s", WorkDir: "/", CommandUser: "s"},
			agentPrefix + "--user s --workdir / --command-user s"},
	}
	for _, tt := range tests {
		if got := tt.a.Args(); !reflect.DeepEqual(got, args(tt.want)) {
			t.Errorf("%s:\n%q\nwant\n%q", tt.name, got, args(tt.want))
		}
	}
	// An argument with spaces stays one argument.
	got := Agent{User: "u", WorkDir: "/w", Command: []string{"sh", "-c", "echo a b"}}.Args()
	if got[len(got)-1] != "echo a b" || got[len(got)-2] != "--command" {
		t.Errorf("command with spaces: %q", got)
	}
}
