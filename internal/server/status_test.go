package server_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"unicode/utf8"

	"connectrpc.com/connect"
	"github.com/covedev/cove/internal/server"
	covev1 "github.com/covedev/cove/proto/cove/v1"
	"google.golang.org/protobuf/proto"
)

// TestOversizedStatusReport (S7): a fake agent's flood (a huge port list,
// megabyte messages and labels, escape sequences) reaches the server through
// ReportStatus; what is stored is bounded, says what was cut, and carries no
// control characters. The rest of the report still lands.
func TestOversizedStatusReport(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	alice := h.owner(t)
	runner, runnerID, _ := h.joinRunner(t, alice, "host-a", &covev1.RunnerCapabilities{MaxEnvironments: 4,
		Classes: []*covev1.EnvironmentClass{{Id: "default"}}})
	env, err := alice.create("demo", gitSpec("https://example.com/a.git"))
	if err != nil || env.Metadata.RunnerId != runnerID {
		t.Fatalf("create: %v %v", env, err)
	}
	flood := server.MaxReportedPorts * 20
	big := strings.Repeat("é", 1<<17) // 256 KiB of two-byte runes: cuts must respect them
	st := &covev1.EnvironmentStatus{Phase: covev1.EnvironmentPhase_ENVIRONMENT_PHASE_RUNNING, ObservedSpecVersion: 1,
		FailureMessage: "line one\nline two\x1b]52;c;ZXZpbA==\x07" + big,
		Machine:        &covev1.SubStatus{Phase: covev1.SubPhase_SUB_PHASE_READY, Message: big},
		IpAddress:      "10.0.0.2"}
	for i := range flood {
		p := &covev1.Port{Port: int32(1 + i%65535), Address: "0.0.0.0", Label: "\x1b[2Jweb"}
		if i < 10 {
			p.Label += strings.Repeat("x", 4*server.MaxStatusString)
		}
		st.Ports = append(st.Ports, p)
	}
	st.Ports = append([]*covev1.Port{{Port: -1}, {Port: 70000}}, st.Ports...)
	sent := proto.Size(&covev1.ReportStatusRequest{Status: st})
	if _, err := runner.ReportStatus(ctx, connect.NewRequest(&covev1.ReportStatusRequest{EnvironmentId: env.Id, Status: st})); err != nil {
		t.Fatal(err)
	}
	got, err := alice.envs.GetEnvironment(ctx, connect.NewRequest(&covev1.GetEnvironmentRequest{Id: env.Id}))
	if err != nil {
		t.Fatal(err)
	}
	s := got.Msg.Environment.Status
	if s.Phase != covev1.EnvironmentPhase_ENVIRONMENT_PHASE_RUNNING || s.IpAddress != "10.0.0.2" {
		t.Fatalf("the report's ordinary fields were lost: %v", s.Phase)
	}
	if len(s.Ports) != server.MaxReportedPorts {
		t.Fatalf("%d ports stored, want %d", len(s.Ports), server.MaxReportedPorts)
	}
	if !contains(strings.Join(s.Warnings, "\n"), "more ports are listening than shown", "not valid port numbers") {
		t.Fatalf("warnings do not say what was dropped: %q", s.Warnings)
	}
	for _, p := range s.Ports {
		if len(p.Label) > server.MaxStatusString || strings.ContainsRune(p.Label, '\x1b') {
			t.Fatalf("port label stored as %d bytes: %.40q", len(p.Label), p.Label)
		}
	}
	for name, msg := range map[string]string{"failureMessage": s.FailureMessage, "machine.message": s.Machine.Message} {
		if len(msg) > server.MaxStatusMessage || !strings.HasSuffix(msg, server.TruncatedMarker) || !utf8.ValidString(msg) {
			t.Fatalf("%s stored as %d bytes (limit %d), valid UTF-8 %v", name, len(msg), server.MaxStatusMessage, utf8.ValidString(msg))
		}
	}
	if !strings.HasPrefix(s.FailureMessage, "line one\nline two]52;c;ZXZpbA==") {
		t.Fatalf("failure message: line breaks kept, escapes removed? %q", s.FailureMessage[:40])
	}
	if size := proto.Size(got.Msg.Environment); size > sent/2 {
		t.Fatalf("stored environment is %d bytes of the %d sent", size, sent)
	}
	// An unknown phase is refused outright.
	bad := &covev1.EnvironmentStatus{Phase: 42}
	if _, err := runner.ReportStatus(ctx, connect.NewRequest(&covev1.ReportStatusRequest{EnvironmentId: env.Id, Status: bad})); code(err) != connect.CodeInvalidArgument {
		t.Fatalf("unknown phase: %v", err)
	}
}

// TestStatusFeatureFlood: a runner's report of installed features and
// volumes (a repository and features' authors choose their ids and option
// values) is bounded like every other field: list lengths, a feature's
// options map (entries, key and value sizes), control characters in keys
// and values.
func TestStatusFeatureFlood(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	alice := h.owner(t)
	runner, _, _ := h.joinRunner(t, alice, "host-a", &covev1.RunnerCapabilities{MaxEnvironments: 4,
		Classes: []*covev1.EnvironmentClass{{Id: "default"}}})
	env, err := alice.create("demo", gitSpec("https://example.com/a.git"))
	if err != nil {
		t.Fatal(err)
	}
	opts := map[string]string{"\x1b[2Jkey": "v\x1b]52;c;ZXZpbA==\x07" + strings.Repeat("x", 4*server.MaxStatusString)}
	for i := range 100 {
		opts[fmt.Sprintf("o%04d", i)] = "v"
	}
	st := &covev1.EnvironmentStatus{Phase: covev1.EnvironmentPhase_ENVIRONMENT_PHASE_RUNNING, ObservedSpecVersion: 1}
	for range 300 {
		st.Features = append(st.Features, &covev1.InstalledFeature{Id: "ghcr.io/x/y:1", Options: opts})
		st.Volumes = append(st.Volumes, &covev1.Volume{Kind: "named", Name: "data\x1b[2J", Target: "/data"})
	}
	if _, err := runner.ReportStatus(ctx, connect.NewRequest(&covev1.ReportStatusRequest{EnvironmentId: env.Id, Status: st})); err != nil {
		t.Fatal(err)
	}
	got, err := alice.envs.GetEnvironment(ctx, connect.NewRequest(&covev1.GetEnvironmentRequest{Id: env.Id}))
	if err != nil {
		t.Fatal(err)
	}
	s := got.Msg.Environment.Status
	if len(s.Features) != server.MaxReportedFeatures || len(s.Volumes) != server.MaxReportedVolumes {
		t.Fatalf("stored %d features and %d volumes, want %d and %d", len(s.Features), len(s.Volumes), server.MaxReportedFeatures, server.MaxReportedVolumes)
	}
	if !contains(strings.Join(s.Warnings, "\n"), "more features than shown", "more volumes than shown") {
		t.Fatalf("warnings do not say what was dropped: %q", s.Warnings)
	}
	for _, f := range s.Features {
		if len(f.Options) != server.MaxMapEntries {
			t.Fatalf("a feature's options stored with %d entries, want %d", len(f.Options), server.MaxMapEntries)
		}
		for k, v := range f.Options {
			if strings.ContainsRune(k+v, '\x1b') || len(v) > server.MaxStatusString {
				t.Fatalf("option stored as %.40q=%.40q (%d bytes)", k, v, len(v))
			}
		}
	}
	if v := s.Volumes[0].Name; strings.ContainsRune(v, '\x1b') {
		t.Fatalf("volume name stored as %q", v)
	}
}
