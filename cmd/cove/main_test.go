package main

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// TestMain lets the tests run this very binary as cove: with
// COVE_TEST_RUN_MAIN set, the test binary is the cove command.
func TestMain(m *testing.M) {
	if os.Getenv("COVE_TEST_RUN_MAIN") == "1" {
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// cove runs the cove binary (this test binary as cove) with args, with no
// server configured (HOME is empty), and returns its exit code and output.
func cove(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	cmd := exec.Command(os.Args[0], args...)
	home := t.TempDir()
	cmd.Env = []string{"COVE_TEST_RUN_MAIN=1", "HOME=" + home, "XDG_CONFIG_HOME=" + home, "PATH=" + os.Getenv("PATH")}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		code = ee.ExitCode()
	case err != nil:
		t.Fatalf("run cove %s: %v", strings.Join(args, " "), err)
	}
	return code, out.String(), errb.String()
}

// TestMistypedSubcommand: a word that is not a subcommand of a group is an
// error (non-zero exit, nothing on stdout) naming it, the group and, when
// one is close, the subcommand meant; cobra alone printed the group's help
// and exited 0, so `cove env bakup demo` looked like a success to a script.
func TestMistypedSubcommand(t *testing.T) {
	for _, tt := range []struct {
		args    []string
		want    []string // in stderr
		suggest string   // "" when no subcommand is close
	}{
		{[]string{"env", "bakup", "demo"}, []string{`unknown command "bakup" for "cove env"`, "Run 'cove env --help' for usage."}, ""},
		{[]string{"env", "lsit"}, []string{`unknown command "lsit" for "cove env"`}, "list"},
		{[]string{"token", "crate", "x"}, []string{`unknown command "crate" for "cove token"`}, "create"},
		{[]string{"ports", "lst"}, []string{`unknown command "lst" for "cove ports"`}, "list"},
		{[]string{"devcontainer", "read-config"}, []string{`unknown command "read-config" for "cove devcontainer"`}, "read-configuration"},
		{[]string{"tokn"}, []string{`unknown command "tokn" for "cove"`}, "token"},
		{[]string{"runner", "lst"}, []string{`unknown command "lst" for "cove runner"`}, "list"},
	} {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			code, stdout, stderr := cove(t, tt.args...)
			if code == 0 {
				t.Fatalf("exit code 0, want non-zero; stdout:\n%s", stdout)
			}
			if stdout != "" {
				t.Errorf("stdout (help?) = %q, want nothing", stdout)
			}
			for _, w := range tt.want {
				if !strings.Contains(stderr, w) {
					t.Errorf("stderr lacks %q:\n%s", w, stderr)
				}
			}
			if tt.suggest != "" && !strings.Contains(stderr, "Did you mean this?\n\t"+tt.suggest+"\n") {
				t.Errorf("stderr does not suggest %q:\n%s", tt.suggest, stderr)
			}
		})
	}
}

// TestGroupAloneAndUnknownFlag: a group given no word still prints its
// help and exits 0 (asking for the group is asking for its help); an
// unknown flag fails.
func TestGroupAloneAndUnknownFlag(t *testing.T) {
	code, stdout, _ := cove(t, "env")
	if code != 0 || !strings.Contains(stdout, "Available Commands:") || !strings.Contains(stdout, "create") {
		t.Errorf("cove env: exit %d, stdout:\n%s", code, stdout)
	}
	code, _, stderr := cove(t, "env", "list", "--bogus")
	if code == 0 || !strings.Contains(stderr, "unknown flag: --bogus") {
		t.Errorf("cove env list --bogus: exit %d, stderr:\n%s", code, stderr)
	}
}
