package agent

import (
	"context"
	"encoding/json"
	"io"
	"slices"
	"time"

	"github.com/covedev/cove/internal/agent/agentproto"
	"github.com/gliderlabs/ssh"
	gossh "golang.org/x/crypto/ssh"
)

const defaultPortsInterval = 250 * time.Millisecond

// handlePorts serves a agentproto.PortsChannel: it polls the listening ports of the
// agent's network namespace (the environment's; sock_diag, see sockdiag.go) and writes the full list as
// a JSON line at once and on every change. Each subscriber polls on its
// own; there is rarely more than one (the runner).
func (a *agent) handlePorts(srv *ssh.Server, conn *gossh.ServerConn, newChan gossh.NewChannel, sctx ssh.Context) {
	ch, reqs, err := newChan.Accept()
	if err != nil {
		a.log.Debug("accept ports channel", "err", err)
		return
	}
	defer ch.Close()
	go gossh.DiscardRequests(reqs)

	ctx, cancel := context.WithCancel(sctx)
	defer cancel()
	go func() {
		// The client never sends anything that matters; EOF or an error
		// means it is gone.
		_, _ = io.Copy(io.Discard, ch)
		cancel()
	}()

	interval := a.cfg.portsInterval
	if interval == 0 {
		interval = defaultPortsInterval
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	var last []agentproto.Port
	sent, lastErr := false, ""
	list := portLister(a.cfg.procNetFiles)
	for {
		ports, err := list()
		switch {
		case err != nil:
			if err.Error() != lastErr {
				a.log.Warn("port discovery", "err", err)
				lastErr = err.Error()
			}
		case !sent || !slices.Equal(ports, last):
			line, err := json.Marshal(ports)
			if err != nil {
				a.log.Error("encode ports", "err", err)
				return
			}
			if _, err := ch.Write(append(line, '\n')); err != nil {
				return
			}
			last, sent, lastErr = ports, true, ""
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
