package cli

import (
	"strings"
	"testing"

	covev1 "github.com/covedev/cove/proto/cove/v1"
)

// TestLifecycleInListGetAndStart: after a late postCreateCommand failure,
// `env list` shows it next to RUNNING and `env get` its message with the
// output's end; `env start --wait-all` waits for the lifecycle commands.
func TestLifecycleInListGetAndStart(t *testing.T) {
	failed := &covev1.SubStatus{Phase: covev1.SubPhase_SUB_PHASE_FAILED, Message: "postCreateCommand failed with exit code 3: make deps\nE: package libfoo-dev has no candidate"}
	svc := &scriptedEnvs{script: []*covev1.EnvironmentStatus{
		running(&covev1.SubStatus{Phase: covev1.SubPhase_SUB_PHASE_IN_PROGRESS, Message: "running"}),
		running(failed),
	}}
	serve(t, svc)
	out, _, err := runCLI(EnvCommand(), "list")
	if err != nil || !strings.Contains(out, "RUNNING (postCreateCommand failed)") || !strings.Contains(out, "postCreateCommand failed with exit code 3: make deps") {
		t.Errorf("env list (%v):\n%s", err, out)
	}
	out, _, err = runCLI(EnvCommand(), "get", "demo")
	if err != nil || !strings.Contains(out, "Lifecycle:   FAILED postCreateCommand failed with exit code 3: make deps\n             E: package libfoo-dev") {
		t.Errorf("env get (%v):\n%s", err, out)
	}
	if _, stderr, err := runCLI(EnvCommand(), "start", "demo", "--wait-all"); err == nil || !strings.Contains(err.Error(), "postCreateCommand failed") {
		t.Errorf("start --wait-all: %v\n%s", err, stderr)
	}
	svc.script[1] = running(&covev1.SubStatus{Phase: covev1.SubPhase_SUB_PHASE_READY})
	if _, stderr, err := runCLI(EnvCommand(), "start", "demo", "--wait-all"); err != nil || !strings.Contains(stderr, "All lifecycle commands finished.") {
		t.Errorf("start --wait-all: %v\n%s", err, stderr)
	}
	if out, _, _ = runCLI(EnvCommand(), "list"); strings.Contains(out, "(") {
		t.Errorf("env list annotates a healthy environment:\n%s", out)
	}
}
