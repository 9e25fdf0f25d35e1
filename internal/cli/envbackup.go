package cli

import (
	"context"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"connectrpc.com/connect"
	"github.com/covedev/cove/internal/apiclient"
	"github.com/covedev/cove/internal/termsafe"
	covev1 "github.com/covedev/cove/proto/cove/v1"
	"github.com/spf13/cobra"
	"google.golang.org/protobuf/encoding/protojson"
)

// envBackup is `cove env backup NAME [--wait]`.
func envBackup() *cobra.Command {
	var wait bool
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "backup NAME",
		Short: "Back an environment up now (workspace, installed changes, volumes)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, _, err := clients()
			if err != nil {
				return err
			}
			resp, err := c.Environments.BackupEnvironment(cmd.Context(), connect.NewRequest(&covev1.BackupEnvironmentRequest{Id: args[0]}))
			if err != nil {
				return err
			}
			env := resp.Msg.Environment
			name := termsafe.Line(env.GetMetadata().GetName())
			if !wait {
				fmt.Fprintf(cmd.ErrOrStderr(), "Backup of %s requested; `cove env backups %s` lists it once it is stored.\n", name, name)
				return nil
			}
			before := env.GetStatus().GetLastBackup().GetId()
			done, err := waitBackupGeneration(cmd.Context(), c, env, env.GetSpec().GetBackupGeneration(), timeout)
			if err != nil {
				return err
			}
			switch b := done.GetStatus().GetLastBackup(); {
			case b != nil && b.GetId() != before:
				fmt.Fprintf(cmd.OutOrStdout(), "Backed up %s: %s\n", name, backupSummary(b, time.Now()))
			case b != nil:
				fmt.Fprintf(cmd.OutOrStdout(), "Nothing changed in %s since its last backup: %s\n", name, backupSummary(b, time.Now()))
			default:
				fmt.Fprintf(cmd.OutOrStdout(), "%s had nothing to back up.\n", name)
			}
			return nil
		},
	}
	addWaitFlags(cmd, &wait, &timeout)
	return cmd
}

// waitBackupGeneration waits until the runner has carried out backup
// generation gen, or the backup failed.
func waitBackupGeneration(ctx context.Context, c *apiclient.Clients, env *covev1.Environment, gen int64, timeout time.Duration) (*covev1.Environment, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	stream, err := c.Environments.WatchEnvironments(ctx, connect.NewRequest(&covev1.WatchEnvironmentsRequest{Id: env.Id}))
	if err != nil {
		return nil, err
	}
	defer stream.Close()
	// A failure already there when the request was made is an older one.
	old := env.GetStatus().GetBackupProgress().GetStartedAt().AsTime()
	var last *covev1.Environment
	check := func(e *covev1.Environment) (bool, error) {
		last = e
		st := e.GetStatus()
		if st.GetObservedBackupGeneration() >= gen {
			return true, nil
		}
		p := st.GetBackupProgress()
		if p.GetOperation() == "backup" && p.GetState().GetPhase() == covev1.SubPhase_SUB_PHASE_FAILED && !p.GetStartedAt().AsTime().Equal(old) {
			return true, fmt.Errorf("the backup of %s failed: %s", termsafe.Line(e.GetMetadata().GetName()), indentLines(p.GetState().GetMessage(), "  "))
		}
		if e.GetStatus().GetPhase() == covev1.EnvironmentPhase_ENVIRONMENT_PHASE_DELETED {
			return true, fmt.Errorf("environment %s was deleted", termsafe.Line(e.GetMetadata().GetName()))
		}
		return false, nil
	}
	if err := watchEnv(ctx, stream, env, check, fmt.Sprintf("timed out after %s waiting for the backup (it goes on: `cove env get %s` shows its progress)", timeout, termsafe.Line(env.GetMetadata().GetName()))); err != nil {
		return nil, err
	}
	return last, nil
}

// envBackups is `cove env backups NAME`.
func envBackups() *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "backups NAME",
		Short: "List an environment's backups, newest first",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, _, err := clients()
			if err != nil {
				return err
			}
			resp, err := c.Environments.ListBackups(cmd.Context(), connect.NewRequest(&covev1.ListBackupsRequest{EnvironmentId: args[0]}))
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			switch output {
			case "json":
				b, err := protojson.MarshalOptions{Multiline: true, Indent: "  "}.Marshal(resp.Msg)
				if err != nil {
					return err
				}
				fmt.Fprintln(out, string(b))
			case "", "text":
				if len(resp.Msg.Backups) == 0 {
					fmt.Fprintf(cmd.ErrOrStderr(), "No backups of %s yet (`cove env backup %s` takes one; stopping it does too).\n", termsafe.Line(args[0]), termsafe.Line(args[0]))
					return nil
				}
				return printBackups(out, resp.Msg.Backups, time.Now())
			default:
				return fmt.Errorf("unknown output format %q (use text or json)", output)
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "text", "output format: text or json")
	return cmd
}

// printBackups is the table of `cove env backups`. Ids and triggers come
// from runners through the server: they go through termsafe.
func printBackups(w io.Writer, bs []*covev1.Backup, now time.Time) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tTIME\tTRIGGER\tFILES\tSIZE\tNEW\tREUSED\tSTORED\tDURATION")
	for _, b := range bs {
		t := b.GetTime().AsTime()
		fmt.Fprintf(tw, "%s\t%s (%s)\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", termsafe.Line(b.GetId()), t.Local().Format("2006-01-02 15:04"), timeAgo(t, now),
			termsafe.Line(b.GetTrigger()), thousands(b.GetFiles()), bytesIEC(b.GetBytes()), bytesIEC(b.GetBytesNew()), bytesIEC(b.GetBytesReused()),
			bytesIEC(b.GetStoredBytes()), millis(b.GetDurationMs()))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	// The server's notes (a salvage: not restored unless named).
	for _, b := range bs {
		if n := b.GetNote(); n != "" {
			if _, err := fmt.Fprintf(w, "%s: %s\n", termsafe.Line(b.GetId()), termsafe.Line(n)); err != nil {
				return err
			}
		}
	}
	return nil
}

// envRestore is `cove env restore NAME [--backup ID] [--wait]`.
func envRestore() *cobra.Command {
	var backup string
	var wait bool
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "restore NAME",
		Short: "Roll an environment back to a backup (its current content is backed up first)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, _, err := clients()
			if err != nil {
				return err
			}
			resp, err := c.Environments.RestoreEnvironment(cmd.Context(), connect.NewRequest(&covev1.RestoreEnvironmentRequest{Id: args[0], BackupId: backup}))
			if err != nil {
				return err
			}
			env := resp.Msg.Environment
			r := env.GetSpec().GetRestore()
			fmt.Fprintf(cmd.ErrOrStderr(), "Restoring %s from backup %s; what it holds now is backed up first (`cove env backups %s` lists it, to undo).\n",
				termsafe.Line(env.GetMetadata().GetName()), termsafe.Line(r.GetBackupId()), termsafe.Line(env.GetMetadata().GetName()))
			if !wait {
				return nil
			}
			return waitRestore(cmd.Context(), cmd.ErrOrStderr(), c, env, timeout)
		},
	}
	cmd.Flags().StringVar(&backup, "backup", "", "the backup's ID (default: the latest; see `cove env backups NAME`)")
	addWaitFlags(cmd, &wait, &timeout)
	return cmd
}

// waitRestore waits until the runner has carried out the environment's
// restore and it runs again.
func waitRestore(ctx context.Context, log io.Writer, c *apiclient.Clients, env *covev1.Environment, timeout time.Duration) error {
	gen := env.GetSpec().GetRestore().GetGeneration()
	cctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	stream, err := c.Environments.WatchEnvironments(cctx, connect.NewRequest(&covev1.WatchEnvironmentsRequest{Id: env.Id}))
	if err != nil {
		return err
	}
	defer stream.Close()
	old := env.GetStatus().GetBackupProgress().GetStartedAt().AsTime()
	check := func(e *covev1.Environment) (bool, error) {
		st := e.GetStatus()
		// A runner with content of its own carries a failed restore out
		// (generation observed, FAILED) and starts that content: a
		// failure all the same.
		if p := st.GetBackupProgress(); p.GetOperation() == "restore" && p.GetState().GetPhase() == covev1.SubPhase_SUB_PHASE_FAILED &&
			!p.GetStartedAt().AsTime().Equal(old) {
			return true, fmt.Errorf("the restore of %s failed: %s", termsafe.Line(e.GetMetadata().GetName()), indentLines(p.GetState().GetMessage(), "  "))
		}
		return st.GetObservedRestoreGeneration() >= gen, nil
	}
	if err := watchEnv(cctx, stream, env, check, fmt.Sprintf("timed out after %s waiting for the restore", timeout)); err != nil {
		return err
	}
	return waitForEnv(ctx, log, c, env, covev1.EnvironmentPhase_ENVIRONMENT_PHASE_RUNNING, timeout, false)
}

// reportMove says what `cove env start NAME --runner R` set in motion.
func reportMove(w io.Writer, e *covev1.Environment, runner string) {
	if runner == "" {
		return
	}
	name := termsafe.Line(e.GetMetadata().GetName())
	if e.GetSpec().GetDesiredPhase() == covev1.EnvironmentPhase_ENVIRONMENT_PHASE_STOPPED {
		fmt.Fprintf(w, "Moving %s to runner %s: it is stopped and backed up where it runs now, then started there from that backup.\n", name, termsafe.Line(runner))
		return
	}
	if r := e.GetSpec().GetRestore(); r != nil && !r.GetBackupFirst() {
		fmt.Fprintf(w, "Moving %s to runner %s from backup %s.\n", name, termsafe.Line(runner), termsafe.Line(r.GetBackupId()))
	}
	for _, warn := range e.GetStatus().GetWarnings() {
		fmt.Fprintf(w, "Warning: %s\n", indentLines(warn, "  "))
	}
}

// printBackupStatus adds `cove env get`'s backup lines: the last backup,
// and a backup or restore in progress (or the last one's failure).
func printBackupStatus(w io.Writer, e *covev1.Environment, now time.Time) {
	st := e.GetStatus()
	if b := st.GetLastBackup(); b != nil {
		fmt.Fprintf(w, "Last backup: %s\n", backupSummary(b, now))
	}
	p := st.GetBackupProgress()
	switch p.GetState().GetPhase() {
	case covev1.SubPhase_SUB_PHASE_IN_PROGRESS:
		fmt.Fprintf(w, "%-13s%s in progress: %s files, %s", capitalize(p.GetOperation())+":", termsafe.Line(p.GetOperation()), thousands(p.GetFilesDone()), bytesIEC(p.GetBytesDone()))
		if s := p.GetStartedAt(); s != nil {
			fmt.Fprintf(w, ", started %s", timeAgo(s.AsTime(), now))
		}
		fmt.Fprintln(w)
	case covev1.SubPhase_SUB_PHASE_FAILED:
		fmt.Fprintf(w, "%-13s%s failed: %s\n", capitalize(p.GetOperation())+":", termsafe.Line(p.GetOperation()), indented(p.GetState().GetMessage()))
	}
}

// backupSummary is "12 min ago (stop), 1,234 files, 3 MiB new".
func backupSummary(b *covev1.Backup, now time.Time) string {
	return fmt.Sprintf("%s (%s), %s files, %s new", timeAgo(b.GetTime().AsTime(), now), termsafe.Line(b.GetTrigger()), thousands(b.GetFiles()), bytesIEC(b.GetBytesNew()))
}

func capitalize(s string) string {
	s = termsafe.Line(s)
	if s == "" {
		return "Backup"
	}
	return strings.ToUpper(s[:1]) + s[1:]
}

// timeAgo is "just now", "42 s ago", "12 min ago", "3 h ago", "2 days ago".
func timeAgo(t, now time.Time) string {
	d := now.Sub(t)
	switch {
	case d < time.Second:
		return "just now"
	case d < time.Minute:
		return fmt.Sprintf("%d s ago", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%d min ago", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%d h ago", int(d.Hours()))
	}
	return fmt.Sprintf("%d days ago", int(d.Hours()/24))
}

// thousands is n with thousands separators: "1,234".
func thousands(n int64) string {
	s := strconv.FormatInt(n, 10)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, r := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(r)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}

// millis is a duration in milliseconds, for people: "850ms", "12.3s", "2m5s".
func millis(ms int64) string {
	d := time.Duration(ms) * time.Millisecond
	switch {
	case d < time.Second:
		return d.String()
	case d < time.Minute:
		return d.Round(100 * time.Millisecond).String()
	}
	return d.Round(time.Second).String()
}

// waitMove waits for a move (`cove env start NAME --runner R --wait`): the
// old runner stops and backs the environment up, the server moves it, then
// it must run on the new runner. A move the server cancels (its backup
// failed, the target left) ends the wait with the server's reason.
func waitMove(ctx context.Context, log io.Writer, c *apiclient.Clients, env *covev1.Environment, timeout time.Duration, all bool) error {
	if env.GetSpec().GetDesiredPhase() == covev1.EnvironmentPhase_ENVIRONMENT_PHASE_RUNNING {
		return waitForEnv(ctx, log, c, env, covev1.EnvironmentPhase_ENVIRONMENT_PHASE_RUNNING, timeout, all) // moved at once
	}
	cctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	stream, err := c.Environments.WatchEnvironments(cctx, connect.NewRequest(&covev1.WatchEnvironmentsRequest{Id: env.Id}))
	if err != nil {
		return err
	}
	defer stream.Close()
	from, name := env.GetMetadata().GetRunnerId(), termsafe.Line(env.GetMetadata().GetName())
	moved := env
	check := func(e *covev1.Environment) (bool, error) {
		spec := e.GetSpec()
		switch {
		case e.GetMetadata().GetRunnerId() != from && spec.GetDesiredPhase() == covev1.EnvironmentPhase_ENVIRONMENT_PHASE_RUNNING:
			moved = e
			return true, nil
		case spec.GetDesiredPhase() == covev1.EnvironmentPhase_ENVIRONMENT_PHASE_STOPPED && strings.HasPrefix(spec.GetStopReason(), "the move"):
			return true, fmt.Errorf("environment %s: %s", name, termsafe.Line(spec.GetStopReason()))
		case spec.GetDesiredPhase() != covev1.EnvironmentPhase_ENVIRONMENT_PHASE_STOPPED:
			return true, fmt.Errorf("environment %s: the move was overtaken by another request (it is now %s)", name, phaseName(spec.GetDesiredPhase()))
		}
		return false, nil
	}
	if err := watchEnv(cctx, stream, env, check, fmt.Sprintf("timed out after %s waiting for the backup on the old runner (the move goes on: `cove env get %s`)", timeout, name)); err != nil {
		return err
	}
	fmt.Fprintf(log, "  moved: starting on the new runner from backup %s\n", termsafe.Line(moved.GetSpec().GetRestore().GetBackupId()))
	return waitForEnv(ctx, log, c, moved, covev1.EnvironmentPhase_ENVIRONMENT_PHASE_RUNNING, timeout, all)
}
