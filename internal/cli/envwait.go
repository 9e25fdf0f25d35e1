package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"connectrpc.com/connect"
	"github.com/covedev/cove/internal/apiclient"
	"github.com/covedev/cove/internal/termsafe"
	covev1 "github.com/covedev/cove/proto/cove/v1"
	"github.com/spf13/cobra"
)

// addWaitAllFlag adds --wait-all to a command that starts an environment.
func addWaitAllFlag(cmd *cobra.Command, waitAll *bool) {
	cmd.Flags().BoolVar(waitAll, "wait-all", false, "like --wait, then also wait for the remaining lifecycle commands (postCreateCommand…); fail if one fails")
}

// waitForEnv watches env until it reaches want for its current spec version,
// or fails. Reaching RUNNING is devcontainer.json's waitFor stage done:
// with all, it then waits for status.lifecycle to be READY (nil) or
// FAILED (an error naming the command); without, it says whether the
// remaining lifecycle commands still run and how to follow them.
func waitForEnv(ctx context.Context, log io.Writer, c *apiclient.Clients, env *covev1.Environment, want covev1.EnvironmentPhase, timeout time.Duration, all bool) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	version := env.GetSpec().GetSpecVersion()
	stream, err := c.Environments.WatchEnvironments(ctx, connect.NewRequest(&covev1.WatchEnvironmentsRequest{Id: env.Id}))
	if err != nil {
		return err
	}
	defer stream.Close()
	last, ready := "", false
	// check reports whether e ends the wait, and how.
	check := func(e *covev1.Environment) (bool, error) {
		st := e.GetStatus()
		current := st.GetObservedSpecVersion() >= version || e.GetMetadata().GetRunnerId() == ""
		// Progress shows a message's first line: a multi-line one (a
		// refusal listing every problem) comes whole with the failure.
		msg, _, _ := strings.Cut(st.GetMachine().GetMessage(), "\n")
		if line := phaseName(st.GetPhase()) + " " + msg; line != last && current && !ready {
			fmt.Fprintf(log, "  %s\n", termsafe.Line(strings.TrimSpace(line)))
			last = line
		}
		if st.GetPhase() == want && st.GetObservedSpecVersion() >= version && st.GetFailureMessage() == "" {
			if want != covev1.EnvironmentPhase_ENVIRONMENT_PHASE_RUNNING {
				return true, nil
			}
			name := termsafe.Line(e.GetMetadata().GetName())
			if !ready && st.GetSsh() != nil {
				fmt.Fprintf(log, "Ready: cove ssh %s   (or `ssh %s` after `cove config-ssh`)\n", name, termsafe.Line(st.GetSsh().GetHost()))
			}
			ready = true
			if done, err := lifecycleDone(log, e, all); done {
				if err != nil && !all {
					fmt.Fprintf(log, "Warning: %v\n", err)
					return true, nil
				}
				return true, err
			}
			if !all && st.GetLifecycle().GetPhase() != covev1.SubPhase_SUB_PHASE_IN_PROGRESS {
				return true, nil // no lifecycle status (an older runner): nothing to say
			}
			if !all {
				fmt.Fprintf(log, "The remaining lifecycle commands (after waitFor) continue in the environment: follow them with `cove env logs %s -f`;\n"+
					"`cove env list` shows it if one fails (`--wait-all` waits for them).\n", name)
				return true, nil
			}
			if line := "lifecycle commands running"; line != last {
				fmt.Fprintf(log, "  %s (`cove env logs %s -f` follows them)\n", line, name)
				last = line
			}
			return false, nil
		}
		if st.GetFailureMessage() != "" && current && want != covev1.EnvironmentPhase_ENVIRONMENT_PHASE_DELETED {
			return true, fmt.Errorf("environment %s: %s", termsafe.Line(e.GetMetadata().GetName()), indentLines(st.GetFailureMessage(), "  "))
		}
		if ready && current {
			// Stopped (or changed) while --wait-all waited.
			return true, fmt.Errorf("environment %s is %s before its lifecycle commands finished", termsafe.Line(e.GetMetadata().GetName()), phaseName(st.GetPhase()))
		}
		return false, nil
	}
	err = watchEnv(ctx, stream, env, check, fmt.Sprintf("timed out after %s waiting for %s", timeout, phaseName(want)))
	if err != nil && ready && errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return fmt.Errorf("timed out after %s waiting for the lifecycle commands (the environment is running; `cove env logs %s -f` shows where they are)", timeout, termsafe.Line(env.GetMetadata().GetName()))
	}
	return err
}

// lifecycleDone reports whether e's lifecycle commands are all done:
// READY (saying so when verbose) or FAILED (the error names the command,
// with its output's end, and what to do).
func lifecycleDone(log io.Writer, e *covev1.Environment, verbose bool) (bool, error) {
	name := termsafe.Line(e.GetMetadata().GetName())
	switch lc := e.GetStatus().GetLifecycle(); lc.GetPhase() {
	case covev1.SubPhase_SUB_PHASE_FAILED:
		return true, fmt.Errorf("environment %s is running, but %s:\n  %s\n  Fix it in the environment, or fix devcontainer.json and run `cove env rebuild %s`; the full output: `cove env logs %s`",
			name, lifecycleFailedLabel(lc.GetMessage()), indentLines(lc.GetMessage(), "  "), name, name)
	case covev1.SubPhase_SUB_PHASE_READY:
		if verbose {
			fmt.Fprintln(log, "All lifecycle commands finished.")
		}
		return true, nil
	}
	return false, nil
}

// waitLifecycle watches env, once running at its current spec version,
// until its lifecycle commands are all done (`--wait-all` after a wait
// of its own, as rebuild's).
func waitLifecycle(ctx context.Context, log io.Writer, c *apiclient.Clients, env *covev1.Environment, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	version := env.GetSpec().GetSpecVersion()
	stream, err := c.Environments.WatchEnvironments(ctx, connect.NewRequest(&covev1.WatchEnvironmentsRequest{Id: env.Id}))
	if err != nil {
		return err
	}
	defer stream.Close()
	fmt.Fprintf(log, "Waiting for the lifecycle commands (`cove env logs %s -f` follows them).\n", termsafe.Line(env.GetMetadata().GetName()))
	check := func(e *covev1.Environment) (bool, error) {
		st := e.GetStatus()
		if st.GetObservedSpecVersion() < version || st.GetPhase() != covev1.EnvironmentPhase_ENVIRONMENT_PHASE_RUNNING {
			if st.GetFailureMessage() != "" && st.GetObservedSpecVersion() >= version {
				return true, fmt.Errorf("environment %s: %s", termsafe.Line(e.GetMetadata().GetName()), indentLines(st.GetFailureMessage(), "  "))
			}
			return false, nil
		}
		return lifecycleDone(log, e, true)
	}
	return watchEnv(ctx, stream, env, check, fmt.Sprintf("timed out after %s waiting for the lifecycle commands", timeout))
}

// lifecycleFailedLabel is a short label for a lifecycle failure message
// ("postCreateCommand failed"), for tables: the runner's messages start
// with the stage's name.
func lifecycleFailedLabel(msg string) string {
	stage, _, _ := strings.Cut(msg, " ")
	switch {
	case strings.HasSuffix(stage, "Command") && len(stage) <= len("updateContentCommand") && termsafe.Line(stage) == stage:
		return stage + " failed"
	case strings.HasPrefix(msg, "lifecycle commands not run"):
		return "lifecycle commands not run"
	}
	return "a lifecycle command failed"
}

// watchEnv feeds env, then every update the watch stream brings, to
// check until it says done. timedOut is the error's message when ctx's
// deadline ends the wait.
func watchEnv(ctx context.Context, stream *connect.ServerStreamForClient[covev1.WatchEnvironmentsResponse], env *covev1.Environment, check func(*covev1.Environment) (bool, error), timedOut string) error {
	if done, err := check(env); done {
		return err
	}
	for stream.Receive() {
		if done, err := check(stream.Msg().GetEnvironment()); done {
			return err
		}
	}
	if err := stream.Err(); err != nil {
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return errors.New(timedOut)
		}
		return err
	}
	return errors.New("the watch ended before the environment got there")
}

// listPhase is `cove env list`'s PHASE and MESSAGE for an environment: a
// running environment whose lifecycle commands failed (or still run) says
// so next to its phase, and the failure's first line is its message.
func listPhase(st *covev1.EnvironmentStatus) (phase, msg string) {
	phase, msg = phaseName(st.GetPhase()), st.GetFailureMessage()
	if st.GetPhase() != covev1.EnvironmentPhase_ENVIRONMENT_PHASE_RUNNING {
		return phase, msg
	}
	switch lc := st.GetLifecycle(); lc.GetPhase() {
	case covev1.SubPhase_SUB_PHASE_FAILED:
		phase += " (" + lifecycleFailedLabel(lc.GetMessage()) + ")"
		if msg == "" {
			msg, _, _ = strings.Cut(lc.GetMessage(), "\n")
		}
	case covev1.SubPhase_SUB_PHASE_IN_PROGRESS:
		phase += " (lifecycle commands running)"
	}
	return phase, msg
}
