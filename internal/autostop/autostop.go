// Package autostop is the one rule deciding when a running environment
// stops on its own, and why. The server enforces it, the runner warns open
// terminals before it, and the CLI explains it; all three call Evaluate so
// they never disagree.
//
// The rule (docs/autostop.md):
//   - Inactivity: the environment stops once it has been without activity
//     for its inactivity timeout, counted from its last activity or, when
//     there was none since it started, from its start. While a session is
//     attached (an SSH session with a pty, or a port forward) it is not
//     inactive. An unexpired keep-alive lease holds the stop off until the
//     lease expires.
//   - Lifetime: the environment stops once it has run for its maximum
//     lifetime, whatever its activity, sessions or leases.
//
// Both timeouts come from the environment's spec (0: never), capped by its
// class (an environment asking for more, or for never, gets the cap).
package autostop

import (
	"fmt"
	"strings"
	"time"

	covev1 "github.com/covedev/cove/proto/cove/v1"
)

// Kind is which timeout a deadline comes from.
type Kind int

const (
	// None: nothing will stop the environment.
	None Kind = iota
	// Inactivity: the inactivity timeout.
	Inactivity
	// Lifetime: the maximum lifetime.
	Lifetime
)

// Lease is a keep-alive lease.
type Lease struct {
	Holder, Reason string
	Expires        time.Time
}

// Input is what the rule looks at.
type Input struct {
	Now time.Time
	// StartedAt is when the environment's current run began: its first
	// RUNNING after a user's start, restore or move (metadata.runStartedAt),
	// unchanged when the runner restarts its container; zero means it is
	// not running (no deadline).
	StartedAt time.Time
	// Inactivity and Lifetime are the environment's own timeouts (0: never).
	Inactivity, Lifetime time.Duration
	// ClassInactivity and ClassLifetime are its class's caps (0: none).
	ClassInactivity, ClassLifetime time.Duration
	// LastActive is the last user activity (zero: none seen). A time in the
	// future counts as now.
	LastActive time.Time
	// Attached describes the sessions attached right now.
	Attached []string
	Leases   []Lease
}

// Decision is the rule's answer.
type Decision struct {
	// Deadline is when the environment stops if nothing happens; zero when
	// nothing will stop it (or it is not running).
	Deadline time.Time
	Kind     Kind
	// Limit is the effective timeout Deadline comes from.
	Limit time.Duration
	// Inactivity and Lifetime are the effective timeouts (0: never).
	Inactivity, Lifetime time.Duration
	// Held says an attached session or a lease holds off the inactivity
	// stop right now.
	Held bool
	// Leases are the unexpired leases.
	Leases []Lease
}

// Cap is v capped by limit: limit when limit is set (> 0) and v is never
// (0) or more; v otherwise.
func Cap(v, limit time.Duration) time.Duration {
	if limit > 0 && (v <= 0 || v > limit) {
		return limit
	}
	return max(v, 0)
}

// Evaluate applies the rule.
func Evaluate(in Input) Decision {
	d := Decision{Inactivity: Cap(in.Inactivity, in.ClassInactivity), Lifetime: Cap(in.Lifetime, in.ClassLifetime)}
	var leaseEnd time.Time
	for _, l := range in.Leases {
		if l.Expires.After(in.Now) {
			d.Leases = append(d.Leases, l)
			if l.Expires.After(leaseEnd) {
				leaseEnd = l.Expires
			}
		}
	}
	d.Held = len(in.Attached) > 0 || !leaseEnd.IsZero()
	if in.StartedAt.IsZero() {
		return d
	}
	if d.Inactivity > 0 && len(in.Attached) == 0 {
		base := in.StartedAt
		last := in.LastActive
		if last.After(in.Now) {
			last = in.Now
		}
		if last.After(base) {
			base = last
		}
		dl := base.Add(d.Inactivity)
		if leaseEnd.After(dl) {
			dl = leaseEnd
		}
		d.Deadline, d.Kind, d.Limit = dl, Inactivity, d.Inactivity
	}
	if d.Lifetime > 0 {
		dl := in.StartedAt.Add(d.Lifetime)
		if d.Deadline.IsZero() || !dl.After(d.Deadline) {
			d.Deadline, d.Kind, d.Limit = dl, Lifetime, d.Lifetime
		}
	}
	return d
}

// Due reports whether the environment must stop at now.
func (d Decision) Due(now time.Time) bool {
	return !d.Deadline.IsZero() && !now.Before(d.Deadline)
}

// Why is the cause of the deadline for people: "30 min without activity",
// "its maximum lifetime of 8h".
func (d Decision) Why() string {
	switch d.Kind {
	case Inactivity:
		return Format(d.Limit) + " without activity"
	case Lifetime:
		return "its maximum lifetime of " + Format(d.Limit)
	}
	return ""
}

// StopReason is what the server writes in spec.stopReason when it stops
// the environment for d: "stopped after 30 min without activity".
func (d Decision) StopReason() string {
	if d.Kind == None {
		return ""
	}
	return "stopped after " + d.Why()
}

// WarnAt is when open terminals are warned of the stop: lead before the
// deadline, but at most half the timeout before it (a 1 min timeout warns
// 30 s before). Zero when there is no deadline.
func (d Decision) WarnAt(lead time.Duration) time.Time {
	if d.Deadline.IsZero() {
		return time.Time{}
	}
	return d.Deadline.Add(-min(lead, d.Limit/2))
}

// Format writes a duration the way people say it: "45 s", "30 min",
// "1h 30 min", "8h", "2 days", "1 day 4h".
func Format(d time.Duration) string {
	d = d.Round(time.Second)
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%d s", int(d/time.Second))
	case d < time.Hour:
		m, s := int(d/time.Minute), int(d%time.Minute/time.Second)
		if s != 0 {
			return fmt.Sprintf("%d min %d s", m, s)
		}
		return fmt.Sprintf("%d min", m)
	case d < 48*time.Hour:
		h, m := int(d/time.Hour), int(d%time.Hour/time.Minute)
		if m != 0 {
			return fmt.Sprintf("%dh %d min", h, m)
		}
		return fmt.Sprintf("%dh", h)
	}
	days, h := int(d/(24*time.Hour)), int(d%(24*time.Hour)/time.Hour)
	out := fmt.Sprintf("%d days", days)
	if h != 0 {
		out += fmt.Sprintf(" %dh", h)
	}
	return out
}

// ForEnvironment is the rule's input for env at now, with its class (nil:
// no caps). Only a RUNNING environment has a start to count from.
//
// The class's caps are those of the runner the environment is on; a
// client that does not know them passes ClassOf(env): the caps the server
// put in the status of its answer.
func ForEnvironment(env *covev1.Environment, class *covev1.EnvironmentClass, now time.Time) Input {
	spec, st := env.GetSpec(), env.GetStatus()
	in := Input{
		Now:             now,
		Inactivity:      seconds(spec.GetTimeouts().GetInactivitySeconds()),
		Lifetime:        seconds(spec.GetTimeouts().GetMaxLifetimeSeconds()),
		ClassInactivity: seconds(class.GetMaxInactivitySeconds()),
		ClassLifetime:   seconds(class.GetMaxLifetimeSeconds()),
		Attached:        st.GetActivity().GetAttached(),
	}
	if st.GetPhase() == covev1.EnvironmentPhase_ENVIRONMENT_PHASE_RUNNING {
		// The run's start (a user's start, restore or move), not the
		// last time the runner brought the container back: an
		// environment restarting itself must not restart its clocks.
		// started_at only for records older than run_started_at.
		if t := env.GetMetadata().GetRunStartedAt(); t != nil {
			in.StartedAt = t.AsTime()
		} else if t := env.GetMetadata().GetStartedAt(); t != nil {
			in.StartedAt = t.AsTime()
		}
	}
	if t := st.GetActivity().GetLastActive(); t != nil {
		in.LastActive = t.AsTime()
	}
	for _, l := range spec.GetLeases() {
		in.Leases = append(in.Leases, Lease{Holder: l.GetHolder(), Reason: l.GetReason(), Expires: l.GetExpiresAt().AsTime()})
	}
	return in
}

// ClassOf is the class caps the server gave in env's status (nil: none).
func ClassOf(env *covev1.Environment) *covev1.EnvironmentClass {
	c := env.GetStatus().GetClassCaps()
	if c == nil {
		return nil
	}
	return &covev1.EnvironmentClass{Id: env.GetSpec().GetClassId(), MaxInactivitySeconds: c.GetInactivitySeconds(), MaxLifetimeSeconds: c.GetMaxLifetimeSeconds()}
}

func seconds(s int64) time.Duration {
	const most = int64(1<<63-1) / int64(time.Second)
	if s <= 0 {
		return 0
	}
	return time.Duration(min(s, most)) * time.Second
}

// LeaseText describes a lease for people: "lease 'training run' by bob
// until 14:00" (when in the clock format given, e.g. "15:04").
func LeaseText(l Lease, when string) string {
	var b strings.Builder
	b.WriteString("lease")
	if l.Reason != "" {
		fmt.Fprintf(&b, " '%s'", l.Reason)
	}
	if l.Holder != "" {
		fmt.Fprintf(&b, " by %s", l.Holder)
	}
	fmt.Fprintf(&b, " until %s", l.Expires.Local().Format(when))
	return b.String()
}
