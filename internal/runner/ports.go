package runner

import (
	"context"
	"slices"
	"sort"
	"time"

	"github.com/covedev/cove/internal/agentclient"
	covev1 "github.com/covedev/cove/proto/cove/v1"
	"google.golang.org/protobuf/proto"
)

// portWatch is a worker's view of its environment's listening TCP ports,
// guarded by worker.mu. While the environment is running a goroutine
// follows the agent's port stream; a change goes out as a background status
// report within moments.
type portWatch struct {
	cancel  context.CancelFunc // non-nil while watching
	done    chan struct{}      // closed when the watching goroutine returned
	ports   []agentclient.Port // latest list from the agent
	pending bool               // a port report is queued
	// connectedAt is when the current stream delivered its first list
	// (zero while there is none): the agent, the container's PID 1, has
	// been alive since (observe.go).
	connectedAt time.Time
}

const (
	portsRetryMin = 250 * time.Millisecond
	portsRetryMax = 5 * time.Second
)

// watchPorts starts watching the environment's ports when it becomes
// running and stops (forgetting the ports) when it no longer is. It is
// idempotent. The watch also ends with the worker's context.
func (w *worker) watchPorts(running bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if running == (w.ports.cancel != nil) {
		return
	}
	if !running {
		w.ports.cancel()
		w.ports.cancel = nil
		w.ports.ports = nil
		w.ports.connectedAt = time.Time{}
		return
	}
	ctx, cancel := context.WithCancel(w.ctx)
	done := make(chan struct{})
	w.ports.cancel, w.ports.done = cancel, done
	go func() {
		defer close(done)
		w.followPorts(ctx)
	}()
}

// followPorts follows the agent's port stream until ctx is done,
// reconnecting when the agent goes away (it may be restarting).
func (w *worker) followPorts(ctx context.Context) {
	ep := w.r.agentEndpoint(w.id)
	log := w.r.log.With("env", w.id)
	backoff := portsRetryMin
	for {
		c, err := agentclient.Dial(ctx, ep)
		if err == nil {
			err = c.WatchPorts(ctx, func(ps []agentclient.Port) {
				backoff = portsRetryMin
				w.streamUp(ctx)
				w.setPorts(ctx, ps)
			})
			c.Close()
		}
		if ctx.Err() != nil {
			return
		}
		// Without the agent nothing is known to listen; and the
		// container may have exited: re-observe it now (observe.go).
		w.setPorts(ctx, nil)
		w.mu.Lock()
		lost := !w.ports.connectedAt.IsZero()
		w.ports.connectedAt = time.Time{}
		w.mu.Unlock()
		if lost {
			w.kickNow()
		}
		log.Debug("port watch interrupted; retrying", "err", err, "in", backoff)
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, portsRetryMax)
	}
}

// streamUp records that the agent's stream delivers lists (observe.go).
func (w *worker) streamUp(ctx context.Context) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if ctx.Err() == nil && w.ports.connectedAt.IsZero() {
		w.ports.connectedAt = w.now()
	}
}

// setPorts records the agent's latest list and, if it changed, queues a
// report.
func (w *worker) setPorts(ctx context.Context, ps []agentclient.Port) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if ctx.Err() != nil || slices.Equal(w.ports.ports, ps) {
		return // stopped watching, or nothing new
	}
	w.ports.ports = ps
	if w.ports.pending {
		return // the queued report will carry this list
	}
	w.ports.pending = true
	go w.reportPorts(ctx)
}

// reportPorts re-sends the last reported status with the current ports.
func (w *worker) reportPorts(ctx context.Context) { w.resendRunning(ctx, &w.ports.pending, "ports") }

// resendRunning re-sends the last reported status (send decorates it
// afresh: ports, usage), first clearing *pending under w.mu. It only does
// so while that status says RUNNING: a report in any other phase carries
// no ports or usage, and a newer status a reconcile step has queued still
// goes out after this one, so the server ends with the latest.
func (w *worker) resendRunning(ctx context.Context, pending *bool, what string) {
	w.sendMu.Lock()
	defer w.sendMu.Unlock()
	w.mu.Lock()
	*pending = false
	last := w.reported
	w.mu.Unlock()
	if ctx.Err() != nil || last == nil || last.Phase != phaseRunning {
		return
	}
	st := proto.Clone(last).(*covev1.EnvironmentStatus)
	if err := w.send(ctx, st); err != nil && ctx.Err() == nil {
		w.r.log.Debug(what+" report failed", "env", w.id, "err", err)
	}
}

// decoratePorts sets st.Ports from the latest list, with each port's
// sharing from the spec (private unless listed). Callers hold w.mu.
func (w *worker) decoratePorts(st *covev1.EnvironmentStatus) {
	st.Ports = nil
	if st.Phase != phaseRunning {
		return
	}
	vis := map[int32]covev1.PortVisibility{}
	for _, p := range w.env.GetSpec().GetPorts() {
		vis[p.GetPort()] = p.GetVisibility()
	}
	port := func(n int, address string) *covev1.Port {
		v := vis[int32(n)]
		if v == covev1.PortVisibility_PORT_VISIBILITY_UNSPECIFIED {
			v = covev1.PortVisibility_PORT_VISIBILITY_PRIVATE
		}
		p := &covev1.Port{Port: int32(n), Address: address, Visibility: v, Url: w.r.portURL(w.env, n)}
		decoratePort(w.dcPorts, p)
		return p
	}
	seen := map[int]bool{}
	for _, p := range w.ports.ports {
		seen[p.Port] = true
		st.Ports = append(st.Ports, port(p.Port, p.Address))
	}
	// devcontainer.json forwardPorts are reported before anything listens.
	for _, n := range w.dcPorts.ForwardPorts() {
		if !seen[n] {
			seen[n] = true
			st.Ports = append(st.Ports, port(n, ""))
		}
	}
	sort.Slice(st.Ports, func(i, j int) bool { return st.Ports[i].Port < st.Ports[j].Port })
}
