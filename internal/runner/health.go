package runner

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/covedev/cove/internal/agentclient"
	"github.com/covedev/cove/internal/compose"
	"github.com/covedev/cove/internal/confine"
	"github.com/covedev/cove/internal/envconfig"
	"github.com/covedev/cove/internal/envdir"
	"github.com/covedev/cove/internal/guest"
	"github.com/covedev/cove/internal/runtime"
	"github.com/covedev/cove/internal/tailbuf"
	"github.com/covedev/cove/internal/usererr"
)

// healthPoll bounds how long a dependent waits between health checks: a
// service is checked at once and then every min(interval, healthPoll) while
// something waits for it (Docker's start_interval), so a database that is
// ready in two seconds does not cost its dependents a 30-second interval.
const healthPoll = time.Second

// waitDeps waits until every dependency of service name is satisfied:
// started (it was started earlier in start order), healthy (its
// healthcheck passes) or completed successfully (it exited with code 0).
func (m *startStep) waitDeps(ctx context.Context, envID string, lay envdir.Layout, st *envState, name string, deps map[string]compose.Condition, note func(string)) error {
	for _, dep := range st.Image.Compose.Order {
		cond, ok := deps[dep]
		if !ok || dep == st.Image.Compose.DevService {
			continue // the dev service is started before what comes after it
		}
		s, _ := st.Image.Compose.Service(dep)
		switch cond {
		case compose.ConditionHealthy:
			note(fmt.Sprintf("waiting for service %s to be healthy", dep))
			if err := m.waitHealthy(ctx, envID, lay, s); err != nil {
				return usererr.Wrap(err, "service %s depends on %s being healthy: %s", name, dep, userMessage(err))
			}
		case compose.ConditionCompletedSuccessfully:
			note(fmt.Sprintf("waiting for service %s to complete", dep))
			if err := m.waitCompleted(ctx, envID, lay, s); err != nil {
				return usererr.Wrap(err, "service %s depends on %s completing successfully: %s", name, dep, userMessage(err))
			}
		}
	}
	return nil
}

// waitHealthy runs s's healthcheck until it passes. It fails when the
// service exits, or when checks keep failing past its start period plus
// retries intervals (Docker's "unhealthy").
func (m *startStep) waitHealthy(ctx context.Context, envID string, lay envdir.Layout, s *envconfig.ServiceState) error {
	hc := s.Healthcheck
	he, err := envconfig.HealthCommand(s.Name, hc)
	if err != nil {
		return err
	}
	req := agentclient.ExecRequest{Args: he.Args, Shell: he.Shell}
	// Unhealthy, as in Docker: retries failures in a row after the start
	// period, which at one check per interval takes at least this long.
	began := time.Now()
	deadline := began.Add(hc.StartPeriod + time.Duration(max(hc.Retries, 1))*hc.Interval)
	every := min(hc.Interval, healthPoll)
	ep := m.keys.endpoint(lay.Service(s.Name).AgentSocket(), svcID(envID, s.Name))
	var last string
	failures := 0
	for {
		if err := m.serviceRunning(ctx, envID, lay, s); err != nil {
			return err
		}
		if out, ok := m.checkHealth(ctx, ep, req, hc.Timeout); ok {
			m.log.Info("service healthy", "env", envID, "service", s.Name, "after", time.Since(began).Round(time.Millisecond))
			return nil
		} else if out != "" {
			last = out
			if time.Since(began) >= hc.StartPeriod {
				failures++
			}
		}
		if failures == 0 && time.Since(began) > agentTimeout+hc.StartPeriod {
			return usererr.New("service %s: its health check could not be run for %s (the service's agent did not start): %s", s.Name, agentTimeout, tail(lay.ServiceLog(s.Name), 300))
		}
		if failures >= max(hc.Retries, 1) && time.Now().After(deadline) {
			return usererr.New("service %s is unhealthy after %s: %s", s.Name, time.Since(began).Round(time.Second), cmp.Or(last, "(no output)"))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(every):
		}
	}
}

// checkHealth runs one check; out is its output, or why it could not run.
func (m *startStep) checkHealth(ctx context.Context, ep agentclient.Endpoint, req agentclient.ExecRequest, timeout time.Duration) (out string, ok bool) {
	cctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	c, err := agentclient.Dial(cctx, ep)
	if err != nil {
		return "", false
	}
	defer c.Close()
	// The check's output is the environment's: keep its end only, however
	// much it prints.
	buf := &tailbuf.Buffer{Max: 4096}
	req.Stdout, req.Stderr = buf, buf
	code, err := c.Exec(cctx, req)
	if err != nil {
		if cctx.Err() != nil && ctx.Err() == nil {
			return fmt.Sprintf("health check timed out after %s", timeout), false
		}
		return err.Error(), false
	}
	text := strings.TrimSpace(buf.String())
	if len(text) > 300 {
		text = "…" + text[len(text)-300:]
	}
	if code != 0 {
		return fmt.Sprintf("health check exited with code %d: %s", code, text), false
	}
	return "", true
}

// waitCompleted waits for s to exit and checks its exit code.
func (m *startStep) waitCompleted(ctx context.Context, envID string, lay envdir.Layout, s *envconfig.ServiceState) error {
	for {
		cs, err := m.rt.State(ctx, svcID(envID, s.Name))
		if err != nil {
			return err
		}
		if cs.Status != runtime.StatusRunning && cs.Status != runtime.StatusCreated {
			code, err := exitCode(lay, s)
			if err != nil {
				return usererr.Wrap(err, "service %s stopped without an exit code: %s", s.Name, tail(lay.ServiceLog(s.Name), 300))
			}
			if code != 0 {
				return usererr.New("service %s exited with code %d: %s", s.Name, code, tail(lay.ServiceLog(s.Name), 300))
			}
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// serviceRunning fails (with the service's exit code and last output) if s
// is no longer running.
func (m *startStep) serviceRunning(ctx context.Context, envID string, lay envdir.Layout, s *envconfig.ServiceState) error {
	cs, err := m.rt.State(ctx, svcID(envID, s.Name))
	if err != nil {
		return err
	}
	if cs.Status == runtime.StatusRunning {
		return nil
	}
	code := "unknown"
	if c, err := exitCode(lay, s); err == nil {
		code = strconv.Itoa(c)
	}
	return usererr.New("service %s exited (code %s): %s", s.Name, code, tail(lay.ServiceLog(s.Name), 300))
}

// exitCode reads the exit code the service's agent recorded. The run
// directory belongs to the service: no links, a regular file, a few bytes.
func exitCode(lay envdir.Layout, s *envconfig.ServiceState) (int, error) {
	run, err := confine.OpenDir(lay.Service(s.Name).Run())
	if err != nil {
		return 0, err
	}
	defer run.Close()
	b, err := run.ReadFile(filepath.Base(guest.ExitCodeFile), 16, confine.Beneath)
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(strings.TrimSpace(string(b)))
}

// removeExitCode forgets a previous run's exit code (unlinking a name
// never follows it).
func removeExitCode(sl envdir.Layout) error {
	err := os.Remove(filepath.Join(sl.Run(), filepath.Base(guest.ExitCodeFile)))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	return err
}
