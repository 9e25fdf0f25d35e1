package server

import (
	"strings"
	"testing"
	"time"

	"github.com/covedev/cove/internal/store"
	covev1 "github.com/covedev/cove/proto/cove/v1"
)

func TestPickRunner(t *testing.T) {
	active := covev1.RunnerPhase_RUNNER_PHASE_ACTIVE
	inactive := covev1.RunnerPhase_RUNNER_PHASE_INACTIVE
	caps := func(max int32, classes ...string) *covev1.RunnerCapabilities {
		c := &covev1.RunnerCapabilities{MaxEnvironments: max}
		for _, id := range classes {
			c.Classes = append(c.Classes, &covev1.EnvironmentClass{Id: id})
		}
		return c
	}
	t0 := time.Unix(1000, 0)
	a := store.Runner{ID: "a", Phase: active, Capabilities: caps(2, "default"), CreatedAt: t0}
	b := store.Runner{ID: "b", Phase: active, Capabilities: caps(5, "default", "large"), CreatedAt: t0.Add(time.Minute)}
	off := store.Runner{ID: "c", Phase: inactive, Capabilities: caps(5, "default", "gpu")}
	tests := []struct {
		name    string
		runners []store.Runner
		load    map[string]int
		class   string
		want    string
		reason  string
	}{
		{"none connected", nil, nil, "default", "", "no runner is connected"},
		{"only inactive", []store.Runner{off}, nil, "default", "", "no runner is connected"},
		{"oldest wins a tie", []store.Runner{b, a}, nil, "default", "a", ""},
		{"least loaded", []store.Runner{a, b}, map[string]int{"a": 1}, "default", "b", ""},
		{"class only on b", []store.Runner{a, b}, nil, "large", "b", ""},
		{"class only on inactive", []store.Runner{a, b, off}, nil, "gpu", "", `offers class "gpu"`},
		{"full", []store.Runner{a}, map[string]int{"a": 2}, "default", "", "is full"},
		{"full a falls to b", []store.Runner{a, b}, map[string]int{"a": 2, "b": 3}, "default", "b", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, reason := pickRunner(tt.runners, tt.load, tt.class)
			if got != tt.want {
				t.Fatalf("runner = %q, want %q (reason %q)", got, tt.want, reason)
			}
			if tt.reason != "" && !strings.Contains(reason, tt.reason) {
				t.Fatalf("reason %q does not mention %q", reason, tt.reason)
			}
			if tt.want != "" && reason != "" {
				t.Fatalf("unexpected reason %q", reason)
			}
		})
	}
}
