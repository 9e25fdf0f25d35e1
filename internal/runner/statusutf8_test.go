package runner

import (
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/covedev/cove/internal/envconfig"
	covev1 "github.com/covedev/cove/proto/cove/v1"
	"google.golang.org/protobuf/proto"
)

// TestStatusAlwaysEncodes (review R3): a status carrying what a repository
// controls — a lifecycle command's binary output, a feature option of
// multi-byte characters longer than the status keeps, invalid bytes in
// option keys, warnings and port labels — still encodes, so the runner's
// reports of the environment keep reaching the server.
func TestStatusAlwaysEncodes(t *testing.T) {
	long := "a" + strings.Repeat("é", 200)
	st := &envState{}
	st.Lifecycle.CreateFailure = "postCreateCommand failed with exit code 1\n" + outputTail("\xff\xfe binary junk\n", "x")
	s := &covev1.EnvironmentStatus{
		Lifecycle: lifecycleStatus(st),
		Features: append(featuresStatus([]envconfig.InstalledFeature{{ID: "./f", Options: map[string]string{"msg": long}}}),
			&covev1.InstalledFeature{Id: "./g\xff", Options: map[string]string{"k\xfe": "v\xff"}}),
		Warnings: []string{"bad \xc3"},
		Ports:    []*covev1.Port{{Port: 80, Label: "web\xff"}},
	}
	if got := s.Features[0].Options["msg"]; !utf8.ValidString(got) || len(got) > len(long) {
		t.Fatalf("option cut to %q", got)
	}
	validUTF8(s.ProtoReflect())
	if _, err := proto.Marshal(&covev1.ReportStatusRequest{EnvironmentId: "x", Status: s}); err != nil {
		t.Fatalf("status cannot be sent: %v", err)
	}
	if !strings.Contains(s.Lifecycle.Message, "binary junk") || s.Features[1].Options["k\uFFFD"] != "v\uFFFD" || s.Ports[0].Label != "web\uFFFD" {
		t.Fatalf("text lost while made valid: %q %v %q", s.Lifecycle.Message, s.Features[1].Options, s.Ports[0].Label)
	}
}
