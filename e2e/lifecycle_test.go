package e2e

import (
	"path/filepath"
	"strings"
	"testing"
)

// TestLateLifecycleFailureAndLocalEnv drives the real binary:
//   - ${localEnv:VAR} in containerEnv gets the value from the creating
//     CLI's shell (seen in PID 1's environment), a variable unset there gets
//     its default, a variable the configuration does not reference is not
//     sent (the stored spec), and the runner's own environment is never
//     read (a variable only the runner has resolves to empty, with a
//     warning);
//   - with waitFor onCreateCommand, `create --wait` returns while
//     postCreateCommand still runs (it waits for a file the test creates
//     after the return) and says the rest continues; when it then fails,
//     `env list` shows it next to RUNNING and `env get` the message;
//   - `create --wait-all` on a second environment exits non-zero naming
//     postCreateCommand.
func TestLateLifecycleFailureAndLocalEnv(t *testing.T) {
	requireTools(t)
	// Only `cove up` (the runner) has this one: a repository must not read it.
	t.Setenv("COVE_E2E_RUNNER_SECRET", "runner-secret-value")
	c := newCluster(t)
	u := c.user
	reg := images(t)
	repo := gitRepo(t, filepath.Join(c.dir, "late"), map[string]string{".devcontainer.json": `{
		"image": "` + reg + `/test/debian:latest",
		"containerEnv": {
			"FROM_CLI": "${localEnv:COVE_E2E_SENT}",
			"DEFAULTED": "${localEnv:COVE_E2E_UNSET:the-default}",
			"RUNNER_SECRET": "[${localEnv:COVE_E2E_RUNNER_SECRET}]"
		},
		"waitFor": "onCreateCommand",
		"onCreateCommand": "echo set up",
		"postCreateCommand": "while [ ! -e /tmp/go ]; do sleep 0.2; done; echo 'E: package libfoo-dev has no candidate'; exit 3"
	}`})
	cliEnv := []string{"COVE_E2E_SENT=hello from the cli", "COVE_E2E_UNREFERENCED=not-for-the-server"}
	drop := []string{"COVE_E2E_RUNNER_SECRET", "COVE_E2E_UNSET"}

	// --dry-run shows the values and creates nothing.
	out, errOut, code := u.runEnv(cliEnv, drop, "env", "create", repo, "--name", "late", "--dry-run")
	if code != 0 || !strings.Contains(out, "hello from the cli") || strings.Contains(out, "not-for-the-server") || !strings.Contains(errOut, "nothing was created") {
		t.Fatalf("dry run: exit %d\n%s\n%s", code, out, errOut)
	}
	if _, _, code := u.run("env", "get", "late"); code == 0 {
		t.Fatal("--dry-run created the environment")
	}

	_, errOut, code = u.runEnv(cliEnv, drop, "env", "create", repo, "--name", "late", "--wait", "--timeout", "4m")
	if code != 0 {
		t.Fatalf("create --wait: exit %d\n%s", code, errOut)
	}
	for _, want := range []string{"Sending localEnv: COVE_E2E_SENT (from your shell", "remaining lifecycle commands", "cove env logs late -f"} {
		if !strings.Contains(errOut, want) {
			t.Errorf("create --wait output lacks %q:\n%s", want, errOut)
		}
	}
	if strings.Contains(errOut, "hello from the cli") {
		t.Errorf("create printed a value outside --dry-run:\n%s", errOut)
	}
	// postCreateCommand is still waiting for /tmp/go: the environment is
	// RUNNING with its lifecycle in progress.
	j := u.envJSON("late")
	if field(j, "status", "phase") != "ENVIRONMENT_PHASE_RUNNING" || field(j, "status", "lifecycle", "phase") != "SUB_PHASE_IN_PROGRESS" {
		t.Fatalf("while postCreateCommand runs: %v", j["status"])
	}
	if list := u.must("env", "list"); !strings.Contains(list, "RUNNING (lifecycle commands running)") {
		t.Errorf("env list while postCreateCommand runs:\n%s", list)
	}
	out, errOut, code = u.run("ssh", "late", "--", "s=; [ \"$(id -u)\" = 0 ] || s=sudo; $s cat /proc/1/environ | tr '\\0' '\\n' | grep -E '^(FROM_CLI|DEFAULTED|RUNNER_SECRET)=' | sort")
	if want := "DEFAULTED=the-default\nFROM_CLI=hello from the cli\nRUNNER_SECRET=[]\n"; code != 0 || out != want {
		t.Fatalf("PID 1's environment: exit %d %q (want %q) %s", code, out, want, errOut)
	}
	stored := u.envJSON("late")
	sent, _ := stored["spec"].(map[string]any)["localEnv"].(map[string]any)
	if len(sent) != 1 || sent["COVE_E2E_SENT"] != "hello from the cli" {
		t.Fatalf("stored spec.localEnv %v, want only COVE_E2E_SENT", sent)
	}
	if all := u.must("env", "get", "late", "-o", "json"); strings.Contains(all, "not-for-the-server") || strings.Contains(all, "runner-secret-value") {
		t.Fatalf("the stored environment has a value it must not:\n%s", all)
	}
	warns := field(u.envJSON("late"), "status", "warnings")
	for _, want := range []string{"${localEnv:COVE_E2E_UNSET} was not sent", `its default "the-default"`, "${localEnv:COVE_E2E_RUNNER_SECRET} was not sent"} {
		if !strings.Contains(warns, want) {
			t.Errorf("warnings lack %q: %s", want, warns)
		}
	}

	// Let postCreateCommand go on: it fails, the environment stays RUNNING.
	if out, errOut, code := u.run("ssh", "late", "--", "touch /tmp/go"); code != 0 {
		t.Fatalf("touch /tmp/go: %d %s %s", code, out, errOut)
	}
	waitFor(t, "postCreateCommand to fail", func() bool {
		return field(u.envJSON("late"), "status", "lifecycle", "phase") == "SUB_PHASE_FAILED"
	})
	j = u.envJSON("late")
	if field(j, "status", "phase") != "ENVIRONMENT_PHASE_RUNNING" || !strings.Contains(field(j, "status", "lifecycle", "message"), "postCreateCommand failed with exit code 3") ||
		!strings.Contains(field(j, "status", "lifecycle", "message"), "E: package libfoo-dev has no candidate") {
		t.Fatalf("after the late failure: %v", j["status"])
	}
	if list := u.must("env", "list"); !strings.Contains(list, "RUNNING (postCreateCommand failed)") {
		t.Errorf("env list does not show the failure:\n%s", list)
	}
	if get := u.must("env", "get", "late"); !strings.Contains(get, "Lifecycle:   FAILED postCreateCommand failed with exit code 3") {
		t.Errorf("env get does not show the failure:\n%s", get)
	}

	// --wait-all waits for every lifecycle command and fails with it.
	fast := gitRepo(t, filepath.Join(c.dir, "fast"), map[string]string{".devcontainer.json": `{
		"image": "` + reg + `/test/debian:latest",
		"waitFor": "onCreateCommand",
		"onCreateCommand": "echo set up",
		"postCreateCommand": "echo 'E: package libbar-dev has no candidate'; exit 4"
	}`})
	_, errOut, code = u.run("env", "create", fast, "--name", "fast", "--wait-all", "--timeout", "4m")
	if code == 0 || !strings.Contains(errOut, "postCreateCommand failed") || !strings.Contains(errOut, "exit code 4") || !strings.Contains(errOut, "libbar-dev") {
		t.Fatalf("create --wait-all: exit %d\n%s", code, errOut)
	}
	if field(u.envJSON("fast"), "status", "phase") != "ENVIRONMENT_PHASE_RUNNING" {
		t.Fatal("the environment whose postCreateCommand failed is not running")
	}
}
