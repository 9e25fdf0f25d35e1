package autostop

import (
	"testing"
	"time"

	covev1 "github.com/covedev/cove/proto/cove/v1"
	"google.golang.org/protobuf/types/known/timestamppb"
)

func TestEvaluate(t *testing.T) {
	t0 := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
	at := func(d time.Duration) time.Time { return t0.Add(d) }
	const m, h = time.Minute, time.Hour
	cases := []struct {
		name     string
		in       Input
		deadline time.Time // zero: never
		kind     Kind
		reason   string
		held     bool
	}{
		{"no activity yet counts from the start",
			Input{Now: at(10 * m), StartedAt: t0, Inactivity: 30 * m},
			at(30 * m), Inactivity, "stopped after 30 min without activity", false},
		{"last activity moves the deadline",
			Input{Now: at(40 * m), StartedAt: t0, Inactivity: 30 * m, LastActive: at(25 * m)},
			at(55 * m), Inactivity, "stopped after 30 min without activity", false},
		{"activity before the start (a previous run) does not count",
			Input{Now: at(5 * m), StartedAt: t0, Inactivity: 30 * m, LastActive: at(-5 * h)},
			at(30 * m), Inactivity, "stopped after 30 min without activity", false},
		{"activity in the future counts as now",
			Input{Now: at(10 * m), StartedAt: t0, Inactivity: 30 * m, LastActive: at(1000 * h)},
			at(40 * m), Inactivity, "stopped after 30 min without activity", false},
		{"never",
			Input{Now: at(100 * h), StartedAt: t0},
			time.Time{}, None, "", false},
		{"class caps never",
			Input{Now: at(m), StartedAt: t0, ClassInactivity: 2 * h},
			at(2 * h), Inactivity, "stopped after 2h without activity", false},
		{"class caps a longer timeout",
			Input{Now: at(m), StartedAt: t0, Inactivity: 10 * h, ClassInactivity: 2 * h},
			at(2 * h), Inactivity, "stopped after 2h without activity", false},
		{"class cap above the timeout changes nothing",
			Input{Now: at(m), StartedAt: t0, Inactivity: 20 * m, ClassInactivity: 2 * h},
			at(20 * m), Inactivity, "stopped after 20 min without activity", false},
		{"an attached session holds the inactivity stop off",
			Input{Now: at(10 * h), StartedAt: t0, Inactivity: 30 * m, Attached: []string{"ssh session from alice (pty)"}},
			time.Time{}, None, "", true},
		{"an attached session does not hold the lifetime",
			Input{Now: at(7 * h), StartedAt: t0, Inactivity: 30 * m, Lifetime: 8 * h, Attached: []string{"ssh session from alice (pty)"}},
			at(8 * h), Lifetime, "stopped after its maximum lifetime of 8h", true},
		{"class caps the lifetime",
			Input{Now: at(m), StartedAt: t0, ClassLifetime: 8 * h},
			at(8 * h), Lifetime, "stopped after its maximum lifetime of 8h", false},
		{"lifetime first when it comes first",
			Input{Now: at(7*h + 50*m), StartedAt: t0, Inactivity: 30 * m, Lifetime: 8 * h, LastActive: at(7*h + 45*m)},
			at(8 * h), Lifetime, "stopped after its maximum lifetime of 8h", false},
		{"inactivity first when it comes first",
			Input{Now: at(m), StartedAt: t0, Inactivity: 30 * m, Lifetime: 8 * h},
			at(30 * m), Inactivity, "stopped after 30 min without activity", false},
		{"a lease holds the stop off until it expires",
			Input{Now: at(h), StartedAt: t0, Inactivity: 30 * m, Leases: []Lease{{Holder: "bob", Reason: "training run", Expires: at(3 * h)}}},
			at(3 * h), Inactivity, "stopped after 30 min without activity", true},
		{"the latest lease counts",
			Input{Now: at(h), StartedAt: t0, Inactivity: 30 * m, Leases: []Lease{{Expires: at(3 * h)}, {Expires: at(5 * h)}, {Expires: at(2 * h)}}},
			at(5 * h), Inactivity, "stopped after 30 min without activity", true},
		{"an expired lease holds nothing",
			Input{Now: at(h), StartedAt: t0, Inactivity: 30 * m, Leases: []Lease{{Expires: at(50 * m)}}},
			at(30 * m), Inactivity, "stopped after 30 min without activity", false},
		{"activity after a lease's end counts from the activity",
			Input{Now: at(3 * h), StartedAt: t0, Inactivity: 30 * m, LastActive: at(2*h + 50*m), Leases: []Lease{{Expires: at(2 * h)}}},
			at(3*h + 20*m), Inactivity, "stopped after 30 min without activity", false},
		{"a lease does not extend the lifetime",
			Input{Now: at(h), StartedAt: t0, Inactivity: 30 * m, Lifetime: 4 * h, Leases: []Lease{{Expires: at(6 * h)}}},
			at(4 * h), Lifetime, "stopped after its maximum lifetime of 4h", true},
		{"not running: no deadline",
			Input{Now: at(h), Inactivity: 30 * m, Lifetime: 4 * h},
			time.Time{}, None, "", false},
		{"seconds",
			Input{Now: at(0), StartedAt: t0, Inactivity: 20 * time.Second},
			at(20 * time.Second), Inactivity, "stopped after 20 s without activity", false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			d := Evaluate(c.in)
			if !d.Deadline.Equal(c.deadline) || d.Kind != c.kind || d.StopReason() != c.reason || d.Held != c.held {
				t.Errorf("Evaluate = deadline %v kind %v reason %q held %v; want %v %v %q %v",
					d.Deadline, d.Kind, d.StopReason(), d.Held, c.deadline, c.kind, c.reason, c.held)
			}
			if d.Kind != None && (d.Due(d.Deadline.Add(-time.Second)) || !d.Due(d.Deadline)) {
				t.Errorf("Due is not exactly from the deadline %v on", d.Deadline)
			}
			if d.Kind == None && d.Due(c.in.Now.Add(100000*time.Hour)) {
				t.Error("due without a deadline")
			}
		})
	}
}

func TestWarnAt(t *testing.T) {
	t0 := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
	d := Evaluate(Input{Now: t0, StartedAt: t0, Inactivity: 30 * time.Minute})
	if got, want := d.WarnAt(5*time.Minute), t0.Add(25*time.Minute); !got.Equal(want) {
		t.Errorf("30 min timeout, 5 min lead: warn at %v, want %v", got, want)
	}
	// A short timeout: the lead shrinks to half of it.
	d = Evaluate(Input{Now: t0, StartedAt: t0, Inactivity: 20 * time.Second})
	if got, want := d.WarnAt(5*time.Minute), t0.Add(10*time.Second); !got.Equal(want) {
		t.Errorf("20 s timeout: warn at %v, want %v", got, want)
	}
	if got := Evaluate(Input{Now: t0, StartedAt: t0}).WarnAt(time.Minute); !got.IsZero() {
		t.Errorf("no deadline, warned at %v", got)
	}
}

func TestFormat(t *testing.T) {
	for d, want := range map[time.Duration]string{
		45 * time.Second:                      "45 s",
		30 * time.Minute:                      "30 min",
		90 * time.Second:                      "1 min 30 s",
		8 * time.Hour:                         "8h",
		90 * time.Minute:                      "1h 30 min",
		7 * 24 * time.Hour:                    "7 days",
		52 * time.Hour:                        "2 days 4h",
		30*time.Minute + 400*time.Millisecond: "30 min",
	} {
		if got := Format(d); got != want {
			t.Errorf("Format(%v) = %q, want %q", d, got, want)
		}
	}
}

func TestForEnvironment(t *testing.T) {
	t0 := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
	env := &covev1.Environment{
		Metadata: &covev1.EnvironmentMetadata{StartedAt: timestamppb.New(t0)},
		Spec: &covev1.EnvironmentSpec{
			Timeouts: &covev1.Timeouts{InactivitySeconds: 1800, MaxLifetimeSeconds: 1 << 62},
			Leases:   []*covev1.Lease{{Holder: "bob", Reason: "training run", ExpiresAt: timestamppb.New(t0.Add(3 * time.Hour))}},
		},
		Status: &covev1.EnvironmentStatus{Phase: covev1.EnvironmentPhase_ENVIRONMENT_PHASE_RUNNING,
			Activity: &covev1.Activity{LastActive: timestamppb.New(t0.Add(time.Hour)), Attached: []string{"x"}}},
	}
	class := &covev1.EnvironmentClass{MaxLifetimeSeconds: 8 * 3600}
	in := ForEnvironment(env, class, t0.Add(2*time.Hour))
	d := Evaluate(in)
	if d.Kind != Lifetime || !d.Deadline.Equal(t0.Add(8*time.Hour)) || !d.Held || len(d.Leases) != 1 {
		t.Fatalf("decision %+v", d)
	}
	// Not running: no deadline whatever the times say.
	env.Status.Phase = covev1.EnvironmentPhase_ENVIRONMENT_PHASE_STOPPED
	if d := Evaluate(ForEnvironment(env, class, t0.Add(100*time.Hour))); d.Kind != None {
		t.Fatalf("stopped environment has a deadline: %+v", d)
	}
	if got := LeaseText(in.Leases[0], "15:04"); got != "lease 'training run' by bob until "+t0.Add(3*time.Hour).Local().Format("15:04") {
		t.Errorf("LeaseText = %q", got)
	}
}

// TestForEnvironmentRunStart (review REV-6): the clocks count from the
// run's start (metadata.runStartedAt), not from the last time the runner
// brought the container back (startedAt); a record from before
// runStartedAt counts from startedAt. ClassOf reads the caps the server
// put in the status.
func TestForEnvironmentRunStart(t *testing.T) {
	t0 := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
	running := covev1.EnvironmentPhase_ENVIRONMENT_PHASE_RUNNING
	env := &covev1.Environment{
		Metadata: &covev1.EnvironmentMetadata{RunStartedAt: timestamppb.New(t0), StartedAt: timestamppb.New(t0.Add(59 * time.Minute))},
		Spec:     &covev1.EnvironmentSpec{ClassId: "c", Timeouts: &covev1.Timeouts{InactivitySeconds: 8 * 3600}},
		Status:   &covev1.EnvironmentStatus{Phase: running, ClassCaps: &covev1.Timeouts{InactivitySeconds: 7200, MaxLifetimeSeconds: 3600}},
	}
	now := t0.Add(60 * time.Minute)
	d := Evaluate(ForEnvironment(env, ClassOf(env), now))
	if d.Kind != Lifetime || !d.Deadline.Equal(t0.Add(time.Hour)) || !d.Due(now) {
		t.Errorf("after a runner's restart at 59 min: %+v; want the 1h lifetime due at %s", d, t0.Add(time.Hour))
	}
	if d.Inactivity != 2*time.Hour {
		t.Errorf("inactivity %s; want the class's 2h cap", d.Inactivity)
	}
	env.Metadata.RunStartedAt = nil
	if d := Evaluate(ForEnvironment(env, ClassOf(env), now)); d.Due(now) || !d.Deadline.Equal(t0.Add(119*time.Minute)) {
		t.Errorf("older record without runStartedAt: %+v; want counted from startedAt", d)
	}
	env.Status.ClassCaps = nil
	if c := ClassOf(env); c != nil {
		t.Errorf("ClassOf without caps: %v", c)
	}
}
