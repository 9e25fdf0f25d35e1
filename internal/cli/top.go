package cli

import (
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"connectrpc.com/connect"
	"github.com/covedev/cove/internal/termsafe"
	covev1 "github.com/covedev/cove/proto/cove/v1"
	"github.com/spf13/cobra"
	"golang.org/x/term"
)

// envTop is `cove env top`: the environments' usage, redrawn whenever a
// runner reports a change (every 30 s at most per environment, by
// default), until interrupted.
func envTop() *cobra.Command {
	var once bool
	cmd := &cobra.Command{
		Use:   "top",
		Short: "Show your environments' CPU, memory, IO and processes, live",
		Long: "Show your environments' CPU, memory, IO and processes as their runners sample them\n" +
			"(about every 30 seconds, sent when a figure moves), redrawn on every change until interrupted.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, _, err := clients()
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			out := cmd.OutOrStdout()
			resp, err := c.Environments.ListEnvironments(ctx, connect.NewRequest(&covev1.ListEnvironmentsRequest{}))
			if err != nil {
				return err
			}
			envs := map[string]*covev1.Environment{}
			for _, e := range resp.Msg.Environments {
				envs[e.GetId()] = e
			}
			clear := isTerminal(out)
			draw := func() error {
				if clear {
					fmt.Fprint(out, "\x1b[H\x1b[2J")
				}
				return renderTop(out, envs, time.Now())
			}
			if err := draw(); err != nil || once {
				return err
			}
			stream, err := c.Environments.WatchEnvironments(ctx, connect.NewRequest(&covev1.WatchEnvironmentsRequest{}))
			if err != nil {
				return err
			}
			defer stream.Close()
			for stream.Receive() {
				e := stream.Msg().GetEnvironment()
				if e.GetStatus().GetPhase() == covev1.EnvironmentPhase_ENVIRONMENT_PHASE_DELETED {
					delete(envs, e.GetId())
				} else {
					envs[e.GetId()] = e
				}
				if !clear {
					fmt.Fprintln(out)
				}
				if err := draw(); err != nil {
					return err
				}
			}
			if ctx.Err() != nil {
				return nil // interrupted
			}
			return stream.Err()
		},
	}
	cmd.Flags().BoolVar(&once, "once", false, "print the table once and exit")
	return cmd
}

// renderTop writes the table of envs' usage, by name. Names come from
// users and the server, figures from runners: all go through termsafe.
func renderTop(w io.Writer, envs map[string]*covev1.Environment, now time.Time) error {
	list := make([]*covev1.Environment, 0, len(envs))
	for _, e := range envs {
		if e.GetStatus().GetPhase() != covev1.EnvironmentPhase_ENVIRONMENT_PHASE_DELETED {
			list = append(list, e)
		}
	}
	slices.SortFunc(list, func(a, b *covev1.Environment) int {
		return strings.Compare(a.GetMetadata().GetName(), b.GetMetadata().GetName())
	})
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tPHASE\tCPU\tTHROTTLED\tMEMORY\tIO READ\tIO WRITE\tPIDS\tOOM\tSAMPLED")
	for _, e := range list {
		st := e.GetStatus()
		cells := []string{termsafe.Line(e.GetMetadata().GetName()), phaseName(st.GetPhase())}
		if u := st.GetUsage(); u != nil {
			cpu := cores(u.GetCpuCores())
			if l := u.GetCpuLimitCores(); l > 0 {
				cpu += "/" + cores(l)
			}
			mem := bytesIEC(u.GetMemoryBytes())
			if l := u.GetMemoryLimitBytes(); l > 0 {
				mem += "/" + bytesIEC(l)
			}
			throttled := "-"
			if t := u.GetCpuThrottledMs(); t > 0 {
				throttled = (time.Duration(t) * time.Millisecond).Round(100 * time.Millisecond).String()
			}
			sampled := "-"
			if at := u.GetSampledAt(); at != nil {
				sampled = sampledAgo(at.AsTime(), now)
			}
			cells = append(cells, cpu, throttled, mem, bytesIEC(u.GetIoReadBytes()), bytesIEC(u.GetIoWriteBytes()),
				strconv.Itoa(int(max(u.GetPids(), 0))), strconv.Itoa(int(max(u.GetOomKills(), 0))), sampled)
		} else {
			cells = append(cells, "-", "-", "-", "-", "-", "-", "-", "-")
		}
		for i := range cells {
			cells[i] = termsafe.Line(cells[i])
		}
		fmt.Fprintln(tw, strings.Join(cells, "\t"))
	}
	return tw.Flush()
}

// isTerminal reports whether w is a terminal (the table is redrawn in
// place) rather than a pipe or file (tables follow one another).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}
