package cli

import (
	"fmt"
	"io"
	"strings"
	"time"

	"connectrpc.com/connect"
	"github.com/covedev/cove/internal/autostop"
	"github.com/covedev/cove/internal/termsafe"
	"github.com/covedev/cove/internal/usererr"
	covev1 "github.com/covedev/cove/proto/cove/v1"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// Auto-stop in the CLI (docs/autostop.md): `cove env keepalive`, the
// create flags, and what `cove env get` says about activity and stops.

func envKeepAlive() *cobra.Command {
	var dur time.Duration
	var reason string
	var stop bool
	cmd := &cobra.Command{
		Use:   "keepalive NAME",
		Short: "Keep an environment running whatever its inactivity (a lease with an expiry)",
		Long: "Keep an environment running whatever its inactivity, for --for (default 1h), e.g.\n" +
			"  cove env keepalive demo --for 2h --reason \"training run\"\n" +
			"Taking a lease again replaces yours; --stop (or --for 0) ends it. Its maximum\n" +
			"lifetime still applies: a lease never keeps an environment beyond it.",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if stop {
				dur = 0
			}
			if dur < 0 {
				return usererr.New("--for %s is negative: give how long from now (e.g. 2h), or --stop", dur)
			}
			if dur > 0 && dur < time.Second {
				return usererr.New("--for %s is less than a second", dur)
			}
			c, _, err := clients()
			if err != nil {
				return err
			}
			resp, err := c.Environments.KeepAlive(cmd.Context(), connect.NewRequest(&covev1.KeepAliveRequest{
				Id: args[0], DurationSeconds: int64(dur / time.Second), Reason: reason}))
			if err != nil {
				return err
			}
			env := resp.Msg.Environment
			out := cmd.ErrOrStderr()
			name := termsafe.Line(env.GetMetadata().GetName())
			if dur == 0 {
				fmt.Fprintf(out, "Your keep-alive lease on %s is ended.\n", name)
			} else {
				fmt.Fprintf(out, "%s is kept running until %s.\n", name, clock(time.Now().Add(dur), time.Now()))
			}
			d := autostop.Evaluate(autostop.ForEnvironment(env, autostop.ClassOf(env), time.Now()))
			if d.Kind == autostop.Lifetime && dur > 0 && d.Deadline.Before(time.Now().Add(dur)) {
				fmt.Fprintf(out, "Note: it still stops at %s (%s).\n", clock(d.Deadline, time.Now()), d.Why())
			}
			return nil
		},
	}
	cmd.Flags().DurationVar(&dur, "for", time.Hour, "how long from now (at most 7 days, or the class's maximum lifetime); 0 ends your lease")
	cmd.Flags().StringVar(&reason, "reason", "", "why, shown to whoever looks at the environment (e.g. \"training run\")")
	cmd.Flags().BoolVar(&stop, "stop", false, "end your lease")
	return cmd
}

// timeoutFlags are `cove env create`'s --inactivity-timeout and
// --max-lifetime.
type timeoutFlags struct {
	inactivity, lifetime time.Duration
}

func addTimeoutFlags(f *pflag.FlagSet, t *timeoutFlags) {
	f.DurationVar(&t.inactivity, "inactivity-timeout", 0, "stop after this long without activity; 0: never (default: the server's, 30m; the class may cap it)")
	f.DurationVar(&t.lifetime, "max-lifetime", 0, "stop after running this long, whatever the activity; 0: never (default: the server's, none; the class may cap it)")
}

// spec is the timeouts to send: nil (the server's defaults) unless a flag
// was given; a flag not given is then 0 (never, within the class's caps).
func (t timeoutFlags) spec(f *pflag.FlagSet) (*covev1.Timeouts, error) {
	if !f.Changed("inactivity-timeout") && !f.Changed("max-lifetime") {
		return nil, nil
	}
	out := &covev1.Timeouts{}
	for _, v := range []struct {
		flag string
		d    time.Duration
		to   *int64
	}{{"--inactivity-timeout", t.inactivity, &out.InactivitySeconds}, {"--max-lifetime", t.lifetime, &out.MaxLifetimeSeconds}} {
		switch {
		case v.d < 0:
			return nil, usererr.New("%s %s is negative: use 0 for never", v.flag, v.d)
		case v.d > 0 && v.d < time.Second:
			return nil, usererr.New("%s %s is less than a second", v.flag, v.d)
		}
		*v.to = int64(v.d / time.Second)
	}
	return out, nil
}

// printAutoStop writes what `cove env get` says about activity and
// automatic stops:
//
//	Activity:    ssh session from alice, 2 min ago
//	Kept alive by: ssh session from alice (pty); lease 'training run' by bob until 14:00
//	Stops:       at 14:32 if nothing happens (30 min without activity)
//	Stopped:     stopped after 30 min without activity
func printAutoStop(w io.Writer, e *covev1.Environment, now time.Time) {
	l, st, spec := termsafe.Line, e.GetStatus(), e.GetSpec()
	if a := st.GetActivity(); a.GetLastActive() != nil {
		what := a.GetReason()
		if what == "" {
			what = "activity"
		}
		fmt.Fprintf(w, "Activity:    %s, %s\n", l(what), ago(a.GetLastActive().AsTime(), now))
	}
	d := autostop.Evaluate(autostop.ForEnvironment(e, autostop.ClassOf(e), now))
	var keep []string
	if st.GetPhase() == covev1.EnvironmentPhase_ENVIRONMENT_PHASE_RUNNING {
		keep = append(keep, st.GetActivity().GetAttached()...)
	}
	for _, ls := range d.Leases {
		keep = append(keep, autostop.LeaseText(ls, clockLayout(ls.Expires, now)))
	}
	if len(keep) > 0 {
		fmt.Fprintf(w, "Kept alive by: %s\n", l(strings.Join(keep, "; ")))
	}
	if r := spec.GetStopReason(); r != "" {
		fmt.Fprintf(w, "Stopped:     %s\n", l(r))
	}
	if st.GetPhase() != covev1.EnvironmentPhase_ENVIRONMENT_PHASE_RUNNING || spec.GetDesiredPhase() != covev1.EnvironmentPhase_ENVIRONMENT_PHASE_RUNNING {
		return
	}
	switch {
	case d.Kind == autostop.Lifetime:
		fmt.Fprintf(w, "Stops:       at %s (%s)\n", clock(d.Deadline, now), d.Why())
	case d.Kind == autostop.Inactivity && !d.Deadline.After(now):
		fmt.Fprintf(w, "Stops:       now (%s)\n", d.Why())
	case d.Kind == autostop.Inactivity:
		fmt.Fprintf(w, "Stops:       at %s if nothing happens (%s)\n", clock(d.Deadline, now), d.Why())
	case d.Held && d.Inactivity > 0:
		fmt.Fprintf(w, "Stops:       %s after the last session ends and leases expire\n", autostop.Format(d.Inactivity))
	default:
		fmt.Fprintln(w, "Stops:       never on its own (no inactivity timeout or lifetime)")
	}
	if wa := st.GetActivity().GetWarnedAt(); wa != nil {
		fmt.Fprintf(w, "Warned:      open terminals were warned %s\n", ago(wa.AsTime(), now))
	}
}

// ago is "2 min ago" ("just now" under a second; future times count as
// now).
func ago(t, now time.Time) string {
	d := now.Sub(t)
	if d < time.Second {
		return "just now"
	}
	return autostop.Format(d) + " ago"
}

// clock is t in local time: "14:32" today, "Mon 14:32" within a week,
// else "Jan 2 14:32".
func clock(t, now time.Time) string { return t.Local().Format(clockLayout(t, now)) }

func clockLayout(t, now time.Time) string {
	t, now = t.Local(), now.Local()
	y1, m1, d1 := t.Date()
	y2, m2, d2 := now.Date()
	switch {
	case y1 == y2 && m1 == m2 && d1 == d2:
		return "15:04"
	case t.Sub(now) < 6*24*time.Hour && t.After(now):
		return "Mon 15:04"
	}
	return "Jan 2 15:04"
}

// stopReasonShort is the stop reason for `cove env list`'s MESSAGE
// column, when the environment is stopped and says nothing else.
func stopReasonShort(e *covev1.Environment, msg string) string {
	if msg != "" || e.GetSpec().GetStopReason() == "" {
		return msg
	}
	switch e.GetStatus().GetPhase() {
	case covev1.EnvironmentPhase_ENVIRONMENT_PHASE_STOPPING, covev1.EnvironmentPhase_ENVIRONMENT_PHASE_STOPPED:
		return e.GetSpec().GetStopReason()
	}
	return msg
}
