package server_test

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"connectrpc.com/connect"
	"github.com/covedev/cove/internal/server"
	covev1 "github.com/covedev/cove/proto/cove/v1"
	"google.golang.org/protobuf/proto"
)

// TestSpecValidation (F17): the review's table of bad specs, sent by a
// member; each is refused with a message naming the field, and nothing is
// stored.
func TestSpecValidation(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	alice := h.owner(t)
	bob := h.member(t, alice, "bob")
	h.joinRunner(t, alice, "host-a", &covev1.RunnerCapabilities{MaxEnvironments: 4,
		Classes: []*covev1.EnvironmentClass{{Id: "default"}, {Id: "large"}}})

	base := func(edit func(*covev1.EnvironmentSpec)) *covev1.EnvironmentSpec {
		s := gitSpec("https://example.com/a.git")
		edit(s)
		return s
	}
	localEnv := func(n int, v string) func(*covev1.EnvironmentSpec) {
		return func(s *covev1.EnvironmentSpec) {
			s.LocalEnv = map[string]string{}
			for i := range n {
				s.LocalEnv[fmt.Sprintf("V%d", i)] = v
			}
		}
	}
	ports := func(p ...*covev1.PortSpec) func(*covev1.EnvironmentSpec) {
		return func(s *covev1.EnvironmentSpec) { s.Ports = p }
	}
	cases := []struct {
		name  string
		spec  *covev1.EnvironmentSpec
		code  connect.Code
		field string
	}{
		{"port -7", base(ports(&covev1.PortSpec{Port: -7})), connect.CodeInvalidArgument, "spec.ports[0].port"},
		{"port 99999", base(ports(&covev1.PortSpec{Port: 8080}, &covev1.PortSpec{Port: 99999})), connect.CodeInvalidArgument, "spec.ports[1].port"},
		{"port twice", base(ports(&covev1.PortSpec{Port: 80}, &covev1.PortSpec{Port: 80})), connect.CodeInvalidArgument, "spec.ports[1].port"},
		{"visibility 42", base(ports(&covev1.PortSpec{Port: 8080, Visibility: 42})), connect.CodeInvalidArgument, "spec.ports[0].visibility"},
		{"class ../../etc", base(func(s *covev1.EnvironmentSpec) { s.ClassId = "../../etc" }), connect.CodeInvalidArgument, "spec.classId"},
		{"class not offered", base(func(s *covev1.EnvironmentSpec) { s.ClassId = "gpu" }), connect.CodeInvalidArgument, "spec.classId"},
		{"negative inactivity", base(func(s *covev1.EnvironmentSpec) { s.Timeouts = &covev1.Timeouts{InactivitySeconds: -1} }), connect.CodeInvalidArgument, "spec.timeouts.inactivitySeconds"},
		{"negative lifetime", base(func(s *covev1.EnvironmentSpec) { s.Timeouts = &covev1.Timeouts{MaxLifetimeSeconds: -5} }), connect.CodeInvalidArgument, "spec.timeouts.maxLifetimeSeconds"},
		{"absurd lifetime", base(func(s *covev1.EnvironmentSpec) { s.Timeouts = &covev1.Timeouts{MaxLifetimeSeconds: 1 << 62} }), connect.CodeInvalidArgument, "spec.timeouts.maxLifetimeSeconds"},
		{"negative rebuildGeneration", base(func(s *covev1.EnvironmentSpec) { s.RebuildGeneration = -3 }), connect.CodeInvalidArgument, "spec.rebuildGeneration"},
		{"preset rebuildGeneration", base(func(s *covev1.EnvironmentSpec) { s.RebuildGeneration = 7 }), connect.CodeInvalidArgument, "spec.rebuildGeneration"},
		{"loopback image", base(func(s *covev1.EnvironmentSpec) { s.DefaultImage = "127.0.0.1:17780/x" }), connect.CodePermissionDenied, "spec.defaultImage"},
		{"localhost image", base(func(s *covev1.EnvironmentSpec) { s.DefaultImage = "localhost:5000/x:1" }), connect.CodePermissionDenied, "spec.defaultImage"},
		{"ipv6 loopback image", base(func(s *covev1.EnvironmentSpec) { s.DefaultImage = "[::1]:5000/x" }), connect.CodePermissionDenied, "spec.defaultImage"},
		{"private image", base(func(s *covev1.EnvironmentSpec) { s.DefaultImage = "10.1.2.3/x" }), connect.CodePermissionDenied, "spec.defaultImage"},
		{"metadata image", base(func(s *covev1.EnvironmentSpec) { s.DefaultImage = "169.254.169.254/x" }), connect.CodePermissionDenied, "spec.defaultImage"},
		{"not an image", base(func(s *covev1.EnvironmentSpec) { s.DefaultImage = "Not An Image" }), connect.CodeInvalidArgument, "spec.defaultImage"},
		{"NUL in gitUrl", gitSpec("https://example.com/a\x00b.git"), connect.CodeInvalidArgument, "spec.content.gitUrl"},
		{"escape in ref", base(func(s *covev1.EnvironmentSpec) { s.Content.Ref = "main\x1b]52;c;x\x07" }), connect.CodeInvalidArgument, "spec.content.ref"},
		{"option ref", base(func(s *covev1.EnvironmentSpec) { s.Content.Ref = "--upload-pack=x" }), connect.CodeInvalidArgument, "spec.content.ref"},
		{"devcontainerPath ..", base(func(s *covev1.EnvironmentSpec) { s.DevcontainerPath = "../../../etc/x.json" }), connect.CodeInvalidArgument, "spec.devcontainerPath"},
		{"devcontainerPath inner ..", base(func(s *covev1.EnvironmentSpec) { s.DevcontainerPath = "a/../../x.json" }), connect.CodeInvalidArgument, "spec.devcontainerPath"},
		{"devcontainerPath absolute", base(func(s *covev1.EnvironmentSpec) { s.DevcontainerPath = "/etc/x.json" }), connect.CodeInvalidArgument, "spec.devcontainerPath"},
		{"huge string", base(func(s *covev1.EnvironmentSpec) { s.DevcontainerPath = strings.Repeat("a", 1<<16) }), connect.CodeInvalidArgument, "spec.devcontainerPath"},
		{"deleted", base(func(s *covev1.EnvironmentSpec) { s.DesiredPhase = covev1.EnvironmentPhase_ENVIRONMENT_PHASE_DELETED }), connect.CodeInvalidArgument, "spec.desiredPhase"},
		// spec.localEnv: what a CLI sends for ${localEnv:…}, bounded.
		{"localEnv 65 variables", base(localEnv(65, "v")), connect.CodeInvalidArgument, "spec.localEnv"},
		{"localEnv name with a dash", base(func(s *covev1.EnvironmentSpec) { s.LocalEnv = map[string]string{"A-B": "x"} }), connect.CodeInvalidArgument, "spec.localEnv"},
		{"localEnv name with a digit first", base(func(s *covev1.EnvironmentSpec) { s.LocalEnv = map[string]string{"1A": "x"} }), connect.CodeInvalidArgument, "spec.localEnv"},
		{"localEnv empty name", base(func(s *covev1.EnvironmentSpec) { s.LocalEnv = map[string]string{"": "x"} }), connect.CodeInvalidArgument, "spec.localEnv"},
		{"localEnv long name", base(func(s *covev1.EnvironmentSpec) { s.LocalEnv = map[string]string{strings.Repeat("A", 129): "x"} }), connect.CodeInvalidArgument, "spec.localEnv"},
		{"localEnv huge value", base(func(s *covev1.EnvironmentSpec) { s.LocalEnv = map[string]string{"BIG": strings.Repeat("a", 4097)} }), connect.CodeInvalidArgument, "spec.localEnv.BIG"},
		{"localEnv multi-line value", base(func(s *covev1.EnvironmentSpec) { s.LocalEnv = map[string]string{"ML": "a\nb"} }), connect.CodeInvalidArgument, "spec.localEnv.ML"},
		{"localEnv escape in value", base(func(s *covev1.EnvironmentSpec) { s.LocalEnv = map[string]string{"ESC": "x\x1b]52;c;eA==\x07"} }), connect.CodeInvalidArgument, "spec.localEnv.ESC"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := bob.create("bad", proto.Clone(tc.spec).(*covev1.EnvironmentSpec))
			if code(err) != tc.code || !strings.HasPrefix(message(err), tc.field+":") && !strings.HasPrefix(message(err), tc.field+" ") {
				t.Fatalf("got %v; want %v naming %s", err, tc.code, tc.field)
			}
		})
	}
	list, err := bob.envs.ListEnvironments(ctx, connect.NewRequest(&covev1.ListEnvironmentsRequest{IncludeDeleted: true}))
	if err != nil || len(list.Msg.Environments) != 0 {
		t.Fatalf("refused specs were stored: %v %v", list, err)
	}

	// A full, valid spec is stored as sent.
	good := &covev1.EnvironmentSpec{Content: &covev1.ContentSource{GitUrl: "https://example.com/a.git", Ref: "main"}, ClassId: "large",
		DevcontainerPath: ".devcontainer/go/devcontainer.json", DefaultImage: "ghcr.io/org/img:1",
		Timeouts: &covev1.Timeouts{InactivitySeconds: 1800, MaxLifetimeSeconds: 86400},
		Ports:    []*covev1.PortSpec{{Port: 8080, Visibility: covev1.PortVisibility_PORT_VISIBILITY_PUBLIC}}}
	localEnv(64, strings.Repeat("v", 4096))(good) // the most a CLI may send
	good.LocalEnv["TZ"] = "Europe/Paris\twith a tab"
	delete(good.LocalEnv, "V0")
	env, err := bob.create("good", good)
	if err != nil {
		t.Fatal(err)
	}
	if env.Spec.ClassId != "large" || env.Spec.Ports[0].Port != 8080 || env.Spec.Timeouts.InactivitySeconds != 1800 {
		t.Fatalf("stored spec %v", env.Spec)
	}
	if got := env.Spec.GetLocalEnv(); len(got) != 64 || got["TZ"] != "Europe/Paris\twith a tab" || got["V63"] != strings.Repeat("v", 4096) {
		t.Fatalf("stored localEnv has %d variables, TZ %q", len(got), got["TZ"])
	}
	// Owners run the hosts: they may name a loopback registry.
	if _, err := alice.create("local-img", &covev1.EnvironmentSpec{Content: &covev1.ContentSource{GitUrl: "https://example.com/a.git"},
		DefaultImage: "127.0.0.1:17780/x"}); err != nil {
		t.Fatalf("owner with a loopback registry: %v", err)
	}
}

// TestPrivateImagesAllowed: with AllowPrivateImages, members may name a
// registry on a private address too.
func TestPrivateImagesAllowed(t *testing.T) {
	h := newHarnessWith(t, func(c *server.Config) { c.AllowPrivateImages = true })
	bob := h.member(t, h.owner(t), "bob")
	if _, err := bob.create("img", &covev1.EnvironmentSpec{Content: &covev1.ContentSource{GitUrl: "https://example.com/a.git"},
		DefaultImage: "127.0.0.1:17780/x"}); err != nil {
		t.Fatalf("member with a loopback registry, allowed by the server: %v", err)
	}
}
