package cli

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"connectrpc.com/connect"
	covev1 "github.com/covedev/cove/proto/cove/v1"
	"github.com/covedev/cove/proto/cove/v1/covev1connect"
	"github.com/spf13/cobra"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

// scriptedEnvs is an environment service whose watch sends a script of
// statuses for the environment it creates, and which records creates.
type scriptedEnvs struct {
	covev1connect.UnimplementedEnvironmentServiceHandler
	script []*covev1.EnvironmentStatus
	mu     sync.Mutex
	creats []*covev1.CreateEnvironmentRequest
}

func scriptedEnv(st *covev1.EnvironmentStatus) *covev1.Environment {
	return &covev1.Environment{Id: "env-1", Metadata: &covev1.EnvironmentMetadata{Name: "demo", RunnerId: "r1"},
		Spec: &covev1.EnvironmentSpec{SpecVersion: 2, DesiredPhase: covev1.EnvironmentPhase_ENVIRONMENT_PHASE_RUNNING}, Status: st}
}

func (s *scriptedEnvs) CreateEnvironment(_ context.Context, req *connect.Request[covev1.CreateEnvironmentRequest]) (*connect.Response[covev1.CreateEnvironmentResponse], error) {
	s.mu.Lock()
	s.creats = append(s.creats, proto.Clone(req.Msg).(*covev1.CreateEnvironmentRequest))
	s.mu.Unlock()
	return connect.NewResponse(&covev1.CreateEnvironmentResponse{Environment: scriptedEnv(&covev1.EnvironmentStatus{})}), nil
}

func (s *scriptedEnvs) UpdateEnvironment(context.Context, *connect.Request[covev1.UpdateEnvironmentRequest]) (*connect.Response[covev1.UpdateEnvironmentResponse], error) {
	return connect.NewResponse(&covev1.UpdateEnvironmentResponse{Environment: scriptedEnv(&covev1.EnvironmentStatus{})}), nil
}

func (s *scriptedEnvs) RebuildEnvironment(context.Context, *connect.Request[covev1.RebuildEnvironmentRequest]) (*connect.Response[covev1.RebuildEnvironmentResponse], error) {
	return connect.NewResponse(&covev1.RebuildEnvironmentResponse{Environment: scriptedEnv(&covev1.EnvironmentStatus{})}), nil
}

func (s *scriptedEnvs) ListEnvironments(context.Context, *connect.Request[covev1.ListEnvironmentsRequest]) (*connect.Response[covev1.ListEnvironmentsResponse], error) {
	return connect.NewResponse(&covev1.ListEnvironmentsResponse{Environments: []*covev1.Environment{scriptedEnv(s.script[len(s.script)-1])}}), nil
}

func (s *scriptedEnvs) GetEnvironment(context.Context, *connect.Request[covev1.GetEnvironmentRequest]) (*connect.Response[covev1.GetEnvironmentResponse], error) {
	return connect.NewResponse(&covev1.GetEnvironmentResponse{Environment: scriptedEnv(s.script[len(s.script)-1])}), nil
}

func (s *scriptedEnvs) WatchEnvironments(_ context.Context, _ *connect.Request[covev1.WatchEnvironmentsRequest], stream *connect.ServerStream[covev1.WatchEnvironmentsResponse]) error {
	for _, st := range s.script {
		if err := stream.Send(&covev1.WatchEnvironmentsResponse{Environment: scriptedEnv(st)}); err != nil {
			return err
		}
	}
	return nil
}

func (s *scriptedEnvs) created() []*covev1.CreateEnvironmentRequest {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.creats
}

// serve points the CLI at svc.
func serve(t *testing.T, svc covev1connect.EnvironmentServiceHandler) {
	mux := http.NewServeMux()
	mux.Handle(covev1connect.NewEnvironmentServiceHandler(svc))
	mux.Handle(covev1connect.NewRunnerServiceHandler(covev1connect.UnimplementedRunnerServiceHandler{}))
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	t.Setenv("COVE_CONFIG_DIR", t.TempDir())
	t.Setenv("COVE_SERVER", srv.URL)
	t.Setenv("COVE_TOKEN", "cove_pat_test")
}

// runCLI runs cmd with args; stdout and stderr apart.
func runCLI(cmd *cobra.Command, args ...string) (stdout, stderr string, err error) {
	var out, errb bytes.Buffer
	cmd.SetArgs(args)
	cmd.SetOut(&out)
	cmd.SetErr(&errb)
	cmd.SilenceUsage, cmd.SilenceErrors = true, true
	err = cmd.ExecuteContext(context.Background())
	return out.String(), errb.String(), err
}

func running(lc *covev1.SubStatus) *covev1.EnvironmentStatus {
	return &covev1.EnvironmentStatus{Phase: covev1.EnvironmentPhase_ENVIRONMENT_PHASE_RUNNING, ObservedSpecVersion: 2,
		Ssh: &covev1.SSHAddress{Host: "demo.cove"}, Lifecycle: lc}
}

// TestWaitAndLateLifecycleFailure: the environment is ready (waitFor
// done) while postCreateCommand runs, then postCreateCommand fails.
// `--wait` returns 0 at ready, saying the rest continues and how to follow
// it; `--wait-all` waits and exits non-zero naming the command and its
// output (as does `rebuild --wait-all`).
func TestWaitAndLateLifecycleFailure(t *testing.T) {
	failed := &covev1.SubStatus{Phase: covev1.SubPhase_SUB_PHASE_FAILED, Message: "postCreateCommand failed with exit code 3: make deps\nE: package libfoo-dev has no candidate"}
	svc := &scriptedEnvs{script: []*covev1.EnvironmentStatus{
		{Phase: covev1.EnvironmentPhase_ENVIRONMENT_PHASE_CREATING, ObservedSpecVersion: 2},
		running(&covev1.SubStatus{Phase: covev1.SubPhase_SUB_PHASE_IN_PROGRESS, Message: "running"}),
		running(failed),
	}}
	serve(t, svc)

	_, stderr, err := runCLI(envCreateCommand(), "https://git.test/app.git", "--wait")
	if err != nil {
		t.Fatalf("create --wait: %v\n%s", err, stderr)
	}
	for _, want := range []string{"Ready: cove ssh demo", "remaining lifecycle commands", "cove env logs demo -f"} {
		if !strings.Contains(stderr, want) {
			t.Errorf("create --wait output lacks %q:\n%s", want, stderr)
		}
	}
	if strings.Contains(stderr, "make deps") {
		t.Errorf("create --wait waited past ready:\n%s", stderr)
	}

	_, stderr, err = runCLI(envCreateCommand(), "https://git.test/app.git", "--wait-all")
	if err == nil {
		t.Fatalf("create --wait-all succeeded after postCreateCommand failed:\n%s", stderr)
	}
	for _, want := range []string{"postCreateCommand failed", "exit code 3", "E: package libfoo-dev has no candidate", "cove env rebuild demo"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("create --wait-all error lacks %q: %v", want, err)
		}
	}
	if !strings.Contains(stderr, "Ready: cove ssh demo") {
		t.Errorf("create --wait-all did not say the environment is ready:\n%s", stderr)
	}

	_, stderr, err = runCLI(EnvRebuildCommand(), "demo", "--wait-all")
	if err == nil || !strings.Contains(err.Error(), "postCreateCommand failed with exit code 3") {
		t.Errorf("rebuild --wait-all after postCreateCommand failed: %v\n%s", err, stderr)
	}

	// All lifecycle commands succeed: --wait-all exits 0.
	svc.script[2] = running(&covev1.SubStatus{Phase: covev1.SubPhase_SUB_PHASE_READY})
	for _, cmd := range []struct {
		cmd  func() *cobra.Command
		args []string
	}{{envCreateCommand, []string{"https://git.test/app.git", "--wait-all"}}, {EnvRebuildCommand, []string{"demo", "--wait-all"}}} {
		if _, stderr, err := runCLI(cmd.cmd(), cmd.args...); err != nil || !strings.Contains(stderr, "All lifecycle commands finished.") {
			t.Errorf("%v: %v\n%s", cmd.args, err, stderr)
		}
	}
}

// TestListPhase: `cove env list` shows a running environment's lifecycle
// failure (or progress) next to its phase, and the failure's first line as
// its message; other phases and a healthy environment show as before.
func TestListPhase(t *testing.T) {
	failed := &covev1.SubStatus{Phase: covev1.SubPhase_SUB_PHASE_FAILED, Message: "postCreateCommand failed with exit code 3: make deps\nE: package libfoo-dev has no candidate"}
	for _, tc := range []struct {
		st         *covev1.EnvironmentStatus
		phase, msg string
	}{
		{running(failed), "RUNNING (postCreateCommand failed)", "postCreateCommand failed with exit code 3: make deps"},
		{running(&covev1.SubStatus{Phase: covev1.SubPhase_SUB_PHASE_IN_PROGRESS}), "RUNNING (lifecycle commands running)", ""},
		{running(&covev1.SubStatus{Phase: covev1.SubPhase_SUB_PHASE_READY}), "RUNNING", ""},
		{running(nil), "RUNNING", ""},
		{&covev1.EnvironmentStatus{Phase: covev1.EnvironmentPhase_ENVIRONMENT_PHASE_STOPPED, Lifecycle: failed, FailureMessage: "out of disk"}, "STOPPED", "out of disk"},
	} {
		if phase, msg := listPhase(tc.st); phase != tc.phase || msg != tc.msg {
			t.Errorf("listPhase(%v) = %q, %q; want %q, %q", tc.st, phase, msg, tc.phase, tc.msg)
		}
	}
}

func TestLifecycleFailedLabel(t *testing.T) {
	for msg, want := range map[string]string{
		"postCreateCommand failed with exit code 3: x":       "postCreateCommand failed",
		`postStartCommand "db" failed with exit code 1: x`:   "postStartCommand failed",
		"lifecycle commands not run: a feature failed":       "lifecycle commands not run",
		"\x1b[31mevilCommand failed":                         "a lifecycle command failed",
		"onCreateCommand could not run: make: agent is gone": "onCreateCommand failed",
	} {
		if got := lifecycleFailedLabel(msg); got != want {
			t.Errorf("label(%q) = %q, want %q", msg, got, want)
		}
	}
}

// TestCreateSendsReferencedLocalEnv: `cove env create` of a local
// repository sends the values of exactly the variables its
// devcontainer.json references, from the CLI's environment; an unset one
// is not sent (the runner applies its default); a variable the file does
// not reference is never sent, whatever its name; stderr names what is
// sent, never its value; --dry-run shows values and creates nothing.
func TestCreateSendsReferencedLocalEnv(t *testing.T) {
	svc := &scriptedEnvs{script: []*covev1.EnvironmentStatus{running(nil)}}
	serve(t, svc)
	repo := t.TempDir()
	writeFile(t, filepath.Join(repo, ".devcontainer", "devcontainer.json"), `{
		"image": "debian",
		"containerEnv": {"EMAIL": "${localEnv:COVE_T_EMAIL}", "TZ": "${localEnv:COVE_T_TZ:UTC}", "K": "${env:COVE_T_MULTI}"}
	}`)
	t.Setenv("COVE_T_EMAIL", "dev@example.com")
	t.Setenv("COVE_T_MULTI", "line1\nline2")
	t.Setenv("COVE_T_SECRET", "not-referenced-secret")
	os.Unsetenv("COVE_T_TZ")

	out, stderr, err := runCLI(envCreateCommand(), repo, "--dry-run")
	if err != nil {
		t.Fatalf("dry run: %v\n%s", err, stderr)
	}
	if len(svc.created()) != 0 {
		t.Fatal("--dry-run created an environment")
	}
	var shown covev1.CreateEnvironmentRequest
	if err := protojson.Unmarshal([]byte(out), &shown); err != nil {
		t.Fatalf("dry run printed no request: %v\n%s", err, out)
	}
	if le := shown.GetSpec().GetLocalEnv(); len(le) != 1 || le["COVE_T_EMAIL"] != "dev@example.com" {
		t.Errorf("dry run shows localEnv %v, want COVE_T_EMAIL's value only", le)
	}
	for _, want := range []string{"Dry run: nothing was created.", "Not set in your shell (the environment gets their defaults): COVE_T_TZ"} {
		if !strings.Contains(stderr, want) {
			t.Errorf("dry run stderr lacks %q:\n%s", want, stderr)
		}
	}

	_, stderr, err = runCLI(envCreateCommand(), repo)
	if err != nil {
		t.Fatal(err)
	}
	reqs := svc.created()
	if len(reqs) != 1 {
		t.Fatalf("%d creates", len(reqs))
	}
	got := reqs[0].GetSpec().GetLocalEnv()
	if len(got) != 1 || got["COVE_T_EMAIL"] != "dev@example.com" {
		t.Errorf("sent localEnv %v, want only COVE_T_EMAIL", got)
	}
	if !strings.Contains(stderr, "Sending localEnv: COVE_T_EMAIL (from your shell") {
		t.Errorf("stderr does not name what is sent:\n%s", stderr)
	}
	if !strings.Contains(stderr, "Not sending localEnv COVE_T_MULTI: has a line break") {
		t.Errorf("stderr does not say why COVE_T_MULTI is not sent:\n%s", stderr)
	}
	if strings.Contains(stderr, "dev@example.com") || strings.Contains(stderr, "not-referenced-secret") {
		t.Errorf("stderr shows a value:\n%s", stderr)
	}
}

// TestLocalEnvForGitURL: for a git URL the configuration comes from the
// current directory when it is a checkout of that repository (remote URLs
// compared normalised), or from --config-dir; else nothing is sent, and
// --verbose says why.
func TestLocalEnvForGitURL(t *testing.T) {
	if _, err := exec.LookPath("git"); err != nil {
		t.Skip("git not installed: the checkout test needs it")
	}
	lookup := func(n string) (string, bool) { return map[string]string{"COVE_T_A": "a"}[n], n == "COVE_T_A" }
	checkout := t.TempDir()
	writeFile(t, filepath.Join(checkout, ".devcontainer.json"), `{"image": "x", "remoteEnv": {"A": "${localEnv:COVE_T_A}"}}`)
	if err := os.MkdirAll(filepath.Join(checkout, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{"init", "-q"}, {"remote", "add", "origin", "git@Git.Example:team/app.git"}} {
		c := exec.Command("git", args...)
		c.Dir = checkout
		if out, err := c.CombinedOutput(); err != nil {
			t.Fatalf("git %v: %v\n%s", args, err, out)
		}
	}
	t.Chdir(filepath.Join(checkout, "sub"))
	ctx := context.Background()
	if p := collectLocalEnv(ctx, "https://git.example/team/app", "", "", nil, lookup); p.values["COVE_T_A"] != "a" {
		t.Errorf("in a checkout of the URL: %+v", p)
	}
	p := collectLocalEnv(ctx, "https://git.example/team/other.git", "", "", nil, lookup)
	if len(p.values) != 0 || !strings.Contains(p.why, "not a checkout of") {
		t.Errorf("in a checkout of another repository: %+v", p)
	}
	var buf bytes.Buffer
	p.explain(&buf, true)
	if !strings.Contains(buf.String(), "No ${localEnv:…} values sent") || !strings.Contains(buf.String(), "--config-dir") {
		t.Errorf("verbose explanation:\n%s", buf.String())
	}
	if p := collectLocalEnv(ctx, "https://git.example/team/other.git", "", checkout, nil, lookup); p.values["COVE_T_A"] != "a" {
		t.Errorf("with --config-dir: %+v", p)
	}
}

func TestNormalizeGitURL(t *testing.T) {
	for in, want := range map[string]string{
		"https://github.com/o/r.git":   "github.com/o/r",
		"https://user@GitHub.com/o/r/": "github.com/o/r",
		"ssh://git@github.com:22/o/r":  "github.com/o/r",
		"git@github.com:o/r.git":       "github.com/o/r",
		"github.com:o/r":               "github.com/o/r",
		"/home/me/r":                   "",
		"./r":                          "",
		"https://github.com/":          "",
	} {
		if got := normalizeGitURL(in); got != want {
			t.Errorf("normalizeGitURL(%q) = %q, want %q", in, got, want)
		}
	}
}

func writeFile(t *testing.T, p, text string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
}
