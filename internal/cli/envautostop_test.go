package cli

import (
	"bytes"
	"strings"
	"testing"
	"time"

	covev1 "github.com/covedev/cove/proto/cove/v1"
	"github.com/spf13/pflag"
	"google.golang.org/protobuf/types/known/timestamppb"
)

func TestPrintAutoStop(t *testing.T) {
	now := time.Date(2026, 12, 3, 14, 0, 0, 0, time.Local)
	ts := func(d time.Duration) *timestamppb.Timestamp { return timestamppb.New(now.Add(d)) }
	running := covev1.EnvironmentPhase_ENVIRONMENT_PHASE_RUNNING
	env := func(to *covev1.Timeouts, a *covev1.Activity, leases ...*covev1.Lease) *covev1.Environment {
		return &covev1.Environment{
			Metadata: &covev1.EnvironmentMetadata{Name: "demo", StartedAt: ts(-time.Hour)},
			Spec:     &covev1.EnvironmentSpec{DesiredPhase: running, Timeouts: to, Leases: leases},
			Status:   &covev1.EnvironmentStatus{Phase: running, Activity: a},
		}
	}
	for _, c := range []struct {
		name string
		env  *covev1.Environment
		want []string
	}{
		{"idle", env(&covev1.Timeouts{InactivitySeconds: 1800}, &covev1.Activity{LastActive: ts(-2 * time.Minute), Reason: "ssh session from alice"}),
			[]string{"Activity:    ssh session from alice, 2 min ago\n", "Stops:       at 14:28 if nothing happens (30 min without activity)\n"}},
		{"attached and leased", env(&covev1.Timeouts{InactivitySeconds: 1800},
			&covev1.Activity{LastActive: ts(-time.Minute), Reason: "terminal input from alice", Attached: []string{"ssh session from alice (pty)"}},
			&covev1.Lease{Holder: "bob", Reason: "training run", ExpiresAt: ts(2 * time.Hour)}),
			[]string{"Kept alive by: ssh session from alice (pty); lease 'training run' by bob until 16:00\n",
				"Stops:       30 min after the last session ends and leases expire\n"}},
		{"lifetime", env(&covev1.Timeouts{MaxLifetimeSeconds: 8 * 3600}, nil),
			[]string{"Stops:       at 21:00 (its maximum lifetime of 8h)\n"}},
		{"never", env(&covev1.Timeouts{}, nil), []string{"Stops:       never on its own"}},
		{"capped by the runner's class", withCaps(env(&covev1.Timeouts{InactivitySeconds: 8 * 3600}, nil), &covev1.Timeouts{InactivitySeconds: 2 * 3600, MaxLifetimeSeconds: 4 * 3600}),
			[]string{"Stops:       at 15:00 if nothing happens (2h without activity)\n"}},
		{"lifetime capped by the runner's class", withCaps(env(&covev1.Timeouts{}, nil), &covev1.Timeouts{MaxLifetimeSeconds: 4 * 3600}),
			[]string{"Stops:       at 17:00 (its maximum lifetime of 4h)\n"}},
		{"escape sequences from the server", env(&covev1.Timeouts{}, &covev1.Activity{LastActive: ts(0), Reason: "x\x1b[2Jy"}),
			[]string{"Activity:    x"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			var b bytes.Buffer
			printAutoStop(&b, c.env, now)
			for _, w := range c.want {
				if !strings.Contains(b.String(), w) {
					t.Errorf("output\n%s\nlacks %q", b.String(), w)
				}
			}
			if strings.Contains(b.String(), "\x1b") {
				t.Errorf("escape sequence printed: %q", b.String())
			}
		})
	}
	// Stopped by the server: the reason, and no "Stops" line.
	e := env(&covev1.Timeouts{InactivitySeconds: 1800}, nil)
	e.Spec.DesiredPhase, e.Status.Phase = covev1.EnvironmentPhase_ENVIRONMENT_PHASE_STOPPED, covev1.EnvironmentPhase_ENVIRONMENT_PHASE_STOPPED
	e.Spec.StopReason = "stopped after 30 min without activity"
	var b bytes.Buffer
	printAutoStop(&b, e, now)
	if b.String() != "Stopped:     stopped after 30 min without activity\n" {
		t.Errorf("stopped: %q", b.String())
	}
	if got := stopReasonShort(e, ""); got != e.Spec.StopReason {
		t.Errorf("list message %q", got)
	}
}

// withCaps is env with the class caps the server reports for its runner.
func withCaps(env *covev1.Environment, caps *covev1.Timeouts) *covev1.Environment {
	env.Status.ClassCaps = caps
	return env
}

func TestTimeoutFlags(t *testing.T) {
	parse := func(args ...string) (*covev1.Timeouts, error) {
		f := pflag.NewFlagSet("create", pflag.ContinueOnError)
		var to timeoutFlags
		addTimeoutFlags(f, &to)
		if err := f.Parse(args); err != nil {
			return nil, err
		}
		return to.spec(f)
	}
	if to, err := parse(); err != nil || to != nil {
		t.Errorf("no flags: %v %v; want nil (the server's defaults)", to, err)
	}
	if to, err := parse("--inactivity-timeout", "20s", "--max-lifetime", "8h"); err != nil || to.InactivitySeconds != 20 || to.MaxLifetimeSeconds != 8*3600 {
		t.Errorf("both: %v %v", to, err)
	}
	if to, err := parse("--inactivity-timeout", "0"); err != nil || to.InactivitySeconds != 0 || to.MaxLifetimeSeconds != 0 {
		t.Errorf("never: %v %v", to, err)
	}
	for _, bad := range [][]string{{"--max-lifetime", "-1h"}, {"--inactivity-timeout", "10ms"}} {
		if _, err := parse(bad...); err == nil {
			t.Errorf("%v accepted", bad)
		}
	}
}
