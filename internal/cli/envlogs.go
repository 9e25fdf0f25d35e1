package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"connectrpc.com/connect"
	"github.com/covedev/cove/internal/agent/agentproto"
	"github.com/covedev/cove/internal/apiclient"
	"github.com/covedev/cove/internal/sshgw"
	"github.com/covedev/cove/internal/termsafe"
	covev1 "github.com/covedev/cove/proto/cove/v1"
	"github.com/spf13/cobra"
	"golang.org/x/crypto/ssh"
)

// EnvLogsCommand is `cove env logs NAME [-f]`.
func EnvLogsCommand() *cobra.Command {
	var follow bool
	var service string
	cmd := &cobra.Command{
		Use:   "logs NAME",
		Short: "Show an environment's creation and lifecycle command logs",
		Long: "Show the log of an environment's creation (image, features) and its\n" +
			"devcontainer lifecycle commands (onCreateCommand, postStartCommand, ...).\n" +
			"With -f, keep streaming new lines until interrupted. With --service,\n" +
			"show the output of one of the environment's Docker Compose services.",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := strings.TrimSuffix(args[0], ".cove")
			t, err := certify(cmd.Context(), name)
			if err != nil {
				return err
			}
			client, err := ssh.Dial("tcp", t.addr, sshgw.ClientConfig(t.signer, t.cert, t.hostCA))
			if err != nil {
				return fmt.Errorf("connect to %s via %s: %w", name, t.addr, err)
			}
			defer client.Close()
			code, err := streamLogs(cmd.Context(), client, logsRequest{follow: follow, service: service}, cmd.OutOrStdout(), cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			if code != 0 {
				return &exitError{code: code}
			}
			return nil
		},
	}
	cmd.Flags().BoolVarP(&follow, "follow", "f", false, "keep streaming new log lines")
	cmd.Flags().StringVar(&service, "service", "", "show a Docker Compose service's output instead of the creation and lifecycle logs")
	return cmd
}

// logsRequest selects what the logs subsystem streams.
type logsRequest struct {
	follow  bool   // keep streaming appended output
	service string // a Docker Compose service's output; "" for the lifecycle log
}

// streamLogs opens the agent's logs subsystem on conn (through the gateway
// or directly) and copies it to stdout and stderr. It returns the
// subsystem's exit status; when ctx ends (Ctrl-C while following) it
// closes the stream and returns 0.
func streamLogs(ctx context.Context, conn ssh.Conn, req logsRequest, stdout, stderr io.Writer) (int, error) {
	ch, reqs, err := conn.OpenChannel("session", nil)
	if err != nil {
		return 0, fmt.Errorf("open logs: %w", err)
	}
	defer ch.Close()
	status := make(chan int, 1)
	go func() {
		for r := range reqs {
			if r.Type == "exit-status" {
				var st struct{ Status uint32 }
				if ssh.Unmarshal(r.Payload, &st) == nil {
					select {
					case status <- int(st.Status):
					default:
					}
				}
			}
			if r.WantReply {
				_ = r.Reply(false, nil)
			}
		}
		close(status)
	}()
	setenv := func(name, value string) error {
		ok, err := ch.SendRequest("env", true, ssh.Marshal(struct{ Name, Value string }{name, value}))
		if err != nil || !ok {
			return fmt.Errorf("request %s: refused (%v)", name, err)
		}
		return nil
	}
	if req.follow {
		if err := setenv(agentproto.EnvLogsFollow, "1"); err != nil {
			return 0, err
		}
	}
	if req.service != "" {
		if err := setenv(agentproto.EnvLogsService, req.service); err != nil {
			return 0, err
		}
	}
	ok, err := ch.SendRequest("subsystem", true, ssh.Marshal(struct{ Name string }{agentproto.LogsSubsystem}))
	if err != nil {
		return 0, fmt.Errorf("open logs: %w", err)
	}
	if !ok {
		return 0, errors.New("the environment's agent does not serve logs (it may predate `cove env logs`; rebuild the environment)")
	}
	stop := context.AfterFunc(ctx, func() { ch.Close() })
	defer stop()

	var wg sync.WaitGroup
	wg.Go(func() { _, _ = io.Copy(stderr, ch.Stderr()) })
	_, copyErr := io.Copy(stdout, ch)
	wg.Wait()
	if ctx.Err() != nil {
		return 0, nil
	}
	select {
	case code, ok := <-status:
		if ok {
			return code, nil
		}
	case <-time.After(5 * time.Second):
	}
	if copyErr != nil {
		return 0, fmt.Errorf("read logs: %w", copyErr)
	}
	return 0, errors.New("logs stream ended without a status")
}

// EnvRebuildCommand is `cove env rebuild NAME [--wait]`.
func EnvRebuildCommand() *cobra.Command {
	var wait, waitAll bool
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "rebuild NAME",
		Short: "Rebuild an environment's container from its current devcontainer.json",
		Long: "Rebuild the environment's file system from the current devcontainer.json\n" +
			"(image, features) and run its creation lifecycle commands again. The\n" +
			"workspace (/workspaces) is kept; other changes to the container are lost.",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, _, err := clients()
			if err != nil {
				return err
			}
			resp, err := c.Environments.RebuildEnvironment(cmd.Context(), connect.NewRequest(&covev1.RebuildEnvironmentRequest{Id: args[0]}))
			if err != nil {
				return err
			}
			env := resp.Msg.Environment
			name := termsafe.Line(env.GetMetadata().GetName())
			fmt.Fprintf(cmd.ErrOrStderr(), "Rebuilding %s (see `cove env logs %s -f`).\n", name, name)
			if !wait && !waitAll {
				return nil
			}
			if err := waitRebuilt(cmd.Context(), cmd.ErrOrStderr(), c, env, timeout); err != nil || !waitAll {
				return err
			}
			return waitLifecycle(cmd.Context(), cmd.ErrOrStderr(), c, env, timeout) // envwait.go
		},
	}
	addWaitFlags(cmd, &wait, &timeout)
	addWaitAllFlag(cmd, &waitAll)
	return cmd
}

// waitRebuilt watches env until it runs on a file system built from its
// current rebuild generation, or fails.
func waitRebuilt(ctx context.Context, log io.Writer, c *apiclient.Clients, env *covev1.Environment, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	version := env.GetSpec().GetSpecVersion()
	gen := env.GetSpec().GetRebuildGeneration()
	stream, err := c.Environments.WatchEnvironments(ctx, connect.NewRequest(&covev1.WatchEnvironmentsRequest{Id: env.Id}))
	if err != nil {
		return err
	}
	defer stream.Close()
	last := ""
	check := func(e *covev1.Environment) (bool, error) {
		st := e.GetStatus()
		if st.GetObservedSpecVersion() >= version {
			line := strings.TrimSpace(phaseName(st.GetPhase()) + " " + st.GetMachine().GetMessage())
			if m := st.GetDevcontainer().GetMessage(); m != "" {
				line += " (devcontainer: " + m + ")"
			}
			if line != last {
				fmt.Fprintf(log, "  %s\n", termsafe.Line(line))
				last = line
			}
		}
		done, err := rebuildDone(e, version, gen)
		if done && err == nil && st.GetDevcontainer().GetPhase() == covev1.SubPhase_SUB_PHASE_FAILED {
			fmt.Fprintf(log, "Rebuilt, but a lifecycle command failed: %s\n  see `cove env logs %s`; the environment is reachable to fix it.\n",
				termsafe.Line(st.GetDevcontainer().GetMessage()), termsafe.Line(e.GetMetadata().GetName()))
		} else if done && err == nil && st.GetSsh() != nil {
			fmt.Fprintf(log, "Ready: cove ssh %s\n", termsafe.Line(e.GetMetadata().GetName()))
		}
		return done, err
	}
	return watchEnv(ctx, stream, env, check, fmt.Sprintf("timed out after %s waiting for the rebuild", timeout))
}

// rebuildDone reports whether e has been rebuilt from generation gen (at
// spec version version) and is running, or has failed.
func rebuildDone(e *covev1.Environment, version, gen int64) (bool, error) {
	st := e.GetStatus()
	current := st.GetObservedSpecVersion() >= version
	if current && st.GetFailureMessage() != "" {
		return true, fmt.Errorf("environment %s: %s", termsafe.Line(e.GetMetadata().GetName()), indentLines(st.GetFailureMessage(), "  "))
	}
	if st.GetPhase() == covev1.EnvironmentPhase_ENVIRONMENT_PHASE_RUNNING && current && st.GetBuiltGeneration() >= gen {
		return true, nil
	}
	if current && e.GetSpec().GetDesiredPhase() != covev1.EnvironmentPhase_ENVIRONMENT_PHASE_RUNNING &&
		e.GetSpec().GetDesiredPhase() != covev1.EnvironmentPhase_ENVIRONMENT_PHASE_UNSPECIFIED {
		return true, fmt.Errorf("environment %s is no longer meant to run (%s)", termsafe.Line(e.GetMetadata().GetName()), phaseName(e.GetSpec().GetDesiredPhase()))
	}
	return false, nil
}
