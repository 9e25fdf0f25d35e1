package cli

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"connectrpc.com/connect"
	"github.com/covedev/cove/internal/apiclient"
	dc "github.com/covedev/cove/internal/devcontainer"
	"github.com/covedev/cove/internal/termsafe"
	covev1 "github.com/covedev/cove/proto/cove/v1"
	"github.com/spf13/cobra"
	"google.golang.org/protobuf/encoding/protojson"
)

// EnvCommand is `cove env`.
func EnvCommand() *cobra.Command {
	cmd := &cobra.Command{Use: "env", Aliases: []string{"environment", "environments"}, Short: "Create, list, start, stop and delete environments"}
	cmd.AddCommand(envCreateCommand(), envList(), envGet(), envStart(), envStop(), envDelete(), EnvLogsCommand(), EnvRebuildCommand(), envTop(), envKeepAlive(),
		envBackup(), envBackups(), envRestore()) // envbackup.go
	return cmd
}

func addWaitFlags(cmd *cobra.Command, wait *bool, timeout *time.Duration) {
	cmd.Flags().BoolVar(wait, "wait", false, "wait until the change is done; fail if it fails")
	cmd.Flags().DurationVar(timeout, "timeout", 10*time.Minute, "how long --wait waits")
}

// defaultName derives a DNS-label name from a source.
func defaultName(src string) string {
	base := strings.TrimSuffix(filepath.Base(strings.TrimRight(src, "/")), ".git")
	var b strings.Builder
	for _, r := range strings.ToLower(base) {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9':
			b.WriteRune(r)
		default:
			b.WriteRune('-')
		}
	}
	n := strings.Trim(b.String(), "-")
	if n == "" {
		n = "env"
	}
	if len(n) > 63 {
		n = n[:63]
	}
	return n
}

func envList() *cobra.Command {
	var all bool
	cmd := &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List your environments",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, _, err := clients()
			if err != nil {
				return err
			}
			resp, err := c.Environments.ListEnvironments(cmd.Context(), connect.NewRequest(&covev1.ListEnvironmentsRequest{IncludeDeleted: all}))
			if err != nil {
				return err
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tPHASE\tIMAGE\tSSH\tAGE\tMESSAGE")
			for _, e := range resp.Msg.Environments {
				// Every cell is text the server (and through it git
				// servers, registries, repositories) controls.
				phase, msg := listPhase(e.GetStatus()) // envwait.go
				msg = stopReasonShort(e, msg)          // envautostop.go
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", termsafe.Line(e.Metadata.GetName()), phase,
					termsafe.Line(e.Status.GetImage()), termsafe.Line(e.Status.GetSsh().GetHost()), age(e.Metadata.GetCreatedAt().AsTime()),
					termsafe.Line(msg))
			}
			return tw.Flush()
		},
	}
	cmd.Flags().BoolVar(&all, "all", false, "include deleted environments")
	return cmd
}

func envGet() *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "get NAME",
		Short: "Show one environment",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, _, err := clients()
			if err != nil {
				return err
			}
			resp, err := c.Environments.GetEnvironment(cmd.Context(), connect.NewRequest(&covev1.GetEnvironmentRequest{Id: args[0]}))
			if err != nil {
				return err
			}
			e := resp.Msg.Environment
			out := cmd.OutOrStdout()
			switch output {
			case "json":
				b, err := protojson.MarshalOptions{Multiline: true, Indent: "  "}.Marshal(e)
				if err != nil {
					return err
				}
				fmt.Fprintln(out, string(b))
			case "", "text":
				printEnv(out, e)
			default:
				return fmt.Errorf("unknown output format %q (use text or json)", output)
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "text", "output format: text or json")
	return cmd
}

// printEnv shows an environment for a terminal. Every field but the
// phases is text the server, a repository, a git server or a registry
// controls, so it goes through termsafe; multi-line messages keep their
// lines, indented so that they cannot pass for other fields.
func printEnv(w io.Writer, e *covev1.Environment) {
	l, st := termsafe.Line, e.GetStatus()
	fmt.Fprintf(w, "Name:        %s\nID:          %s\nPhase:       %s\nDesired:     %s\n", l(e.Metadata.GetName()), l(e.Id), phaseName(st.GetPhase()), phaseName(e.Spec.GetDesiredPhase()))
	fmt.Fprintf(w, "Source:      %s %s\nClass:       %s\nRunner:      %s\n", l(e.Spec.GetContent().GetGitUrl()), l(e.Spec.GetContent().GetRef()), l(e.Spec.GetClassId()), l(e.Metadata.GetRunnerId()))
	fmt.Fprintf(w, "Image:       %s %s\nWorkspace:   %s\n", l(st.GetImage()), l(st.GetImageDigest()), l(st.GetWorkspaceFolder()))
	fmt.Fprintf(w, "Content:     %s %s\nMachine:     %s %s\n", subName(st.GetContent()), l(st.GetContent().GetMessage()), subName(st.GetMachine()), l(st.GetMachine().GetMessage()))
	if dc := st.GetDevcontainer(); dc != nil {
		fmt.Fprintf(w, "Devcontainer: %s %s %s\n", subName(dc), l(st.GetDevcontainerPath()), l(dc.GetMessage()))
	}
	if n := st.GetDevcontainerName(); n != "" {
		fmt.Fprintf(w, "Config name: %s\n", l(n))
	}
	if lc := st.GetLifecycle(); lc != nil {
		fmt.Fprintf(w, "Lifecycle:   %s %s\n", subName(lc), indented(lc.GetMessage()))
	}
	if ext := st.GetExtensions(); len(ext) > 0 {
		fmt.Fprintf(w, "Extensions:  %s\n", l(strings.Join(ext, ", ")))
	}
	printFeatures(w, st.GetFeatures())
	printVolumes(w, st.GetVolumes())
	for _, warn := range st.GetWarnings() {
		fmt.Fprintf(w, "Warning:     %s\n", indented(warn))
	}
	if u := usageLine(st.GetUsage(), time.Now()); u != "" { // envusage.go
		fmt.Fprintf(w, "Usage:       %s\n", u)
	}
	if m := oomLine(st.GetUsage(), time.Now()); m != "" { // envusage.go
		fmt.Fprintf(w, "Last OOM:    %s\n", m)
	}
	printAutoStop(w, e, time.Now()) // envautostop.go
	if s := st.GetSsh(); s != nil {
		fmt.Fprintf(w, "SSH:         ssh %s   (gateway %s; run `cove config-ssh` once)\n", l(s.GetHost()), l(s.GetAddress()))
	}
	printBackupStatus(w, e, time.Now()) // envbackup.go
	if m := st.GetFailureMessage(); m != "" {
		fmt.Fprintf(w, "Failure:     %s\n", indented(m))
	}
}

// indented is remote text made safe, its later lines indented under the
// first field's value.
func indented(s string) string { return indentLines(s, "             ") }

// indentLines is remote text made safe, its later lines indented by
// indent so that they cannot pass for lines of cove's own.
func indentLines(s, indent string) string {
	s = strings.TrimRight(termsafe.String(s), "\n")
	return strings.ReplaceAll(s, "\n", "\n"+indent)
}

func phaseName(p covev1.EnvironmentPhase) string {
	return strings.TrimPrefix(p.String(), "ENVIRONMENT_PHASE_")
}

func subName(s *covev1.SubStatus) string {
	return strings.TrimPrefix(s.GetPhase().String(), "SUB_PHASE_")
}

func age(t time.Time) string {
	d := time.Since(t).Round(time.Second)
	switch {
	case d < time.Minute:
		return d.String()
	case d < time.Hour:
		return fmt.Sprintf("%dm", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh", int(d.Hours()))
	}
	return fmt.Sprintf("%dd", int(d.Hours()/24))
}

func envStart() *cobra.Command {
	return envSetPhase("start", "Start a stopped environment (or retry a failed start)", covev1.EnvironmentPhase_ENVIRONMENT_PHASE_RUNNING)
}

func envStop() *cobra.Command {
	return envSetPhase("stop", "Stop an environment; its disk is kept", covev1.EnvironmentPhase_ENVIRONMENT_PHASE_STOPPED)
}

func envSetPhase(verb, short string, want covev1.EnvironmentPhase) *cobra.Command {
	var wait, waitAll bool
	var timeout time.Duration
	var runner string
	cmd := &cobra.Command{
		Use:   verb + " NAME",
		Short: short,
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, _, err := clients()
			if err != nil {
				return err
			}
			resp, err := c.Environments.UpdateEnvironment(cmd.Context(), connect.NewRequest(&covev1.UpdateEnvironmentRequest{Id: args[0], DesiredPhase: want, RunnerId: runner}))
			if err != nil {
				return err
			}
			reportMove(cmd.ErrOrStderr(), resp.Msg.Environment, runner) // envbackup.go
			if !wait && !waitAll {
				return nil
			}
			if runner != "" {
				return waitMove(cmd.Context(), cmd.ErrOrStderr(), c, resp.Msg.Environment, timeout, waitAll) // envbackup.go
			}
			return waitForEnv(cmd.Context(), cmd.ErrOrStderr(), c, resp.Msg.Environment, want, timeout, waitAll)
		},
	}
	addWaitFlags(cmd, &wait, &timeout)
	if want == covev1.EnvironmentPhase_ENVIRONMENT_PHASE_RUNNING {
		addWaitAllFlag(cmd, &waitAll) // envwait.go
		cmd.Flags().StringVar(&runner, "runner", "", "start it on this runner (id or name): moved there from its backup, taken on stop where it is now")
	}
	return cmd
}

func envDelete() *cobra.Command {
	var wait bool
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:     "delete NAME",
		Aliases: []string{"rm"},
		Short:   "Delete an environment and everything it stored",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, _, err := clients()
			if err != nil {
				return err
			}
			resp, err := c.Environments.DeleteEnvironment(cmd.Context(), connect.NewRequest(&covev1.DeleteEnvironmentRequest{Id: args[0]}))
			if err != nil {
				return err
			}
			if !wait {
				return nil
			}
			return waitForEnv(cmd.Context(), cmd.ErrOrStderr(), c, resp.Msg.Environment, covev1.EnvironmentPhase_ENVIRONMENT_PHASE_DELETED, timeout, false)
		},
	}
	addWaitFlags(cmd, &wait, &timeout)
	return cmd
}

// classForRequirements picks the smallest class the runners offer that
// meets a local repository's devcontainer.json hostRequirements ("" when it
// has none, or the source is not a local directory: the runner checks).
func classForRequirements(ctx context.Context, c *apiclient.Clients, src, explicit string) (string, error) {
	if st, err := os.Stat(src); err != nil || !st.IsDir() {
		return "", nil
	}
	cfg, _, err := dc.Read(src, explicit, dc.LoadOptions{})
	if err != nil || cfg == nil || cfg.HostRequirements == nil {
		return "", nil // the runner reports configuration errors
	}
	resp, err := c.Runners.ListEnvironmentClasses(ctx, connect.NewRequest(&covev1.ListEnvironmentClassesRequest{}))
	if err != nil {
		return "", err
	}
	var classes []dc.Class
	for _, k := range resp.Msg.GetClasses() {
		classes = append(classes, dc.Class{ID: k.GetId(), CPUs: int(k.GetCpus()), Memory: k.GetMemoryBytes(), Storage: k.GetDiskBytes()})
	}
	return dc.ChooseClass(cfg.HostRequirements, classes)
}
