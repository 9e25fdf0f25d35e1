package sshgw

import (
	"errors"
	"io"
	"log/slog"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"
)

// exitStatusWait bounds how long an exit-status or exit-signal request is
// held back waiting for the channel's output to be forwarded first.
const exitStatusWait = 2 * time.Second

// proxy relays one user connection to one agent connection: channels and
// requests in both directions (the agent opens channels for remote port
// forwards and agent forwarding).
type proxy struct {
	log   *slog.Logger
	user  ssh.Conn
	agent ssh.Conn
	perms certPerms
	sess  *connSessions // nil: nobody watches (sessions.go)
	wg    sync.WaitGroup
}

// run relays until either connection ends, then closes both and returns
// once every goroutine it started has ended.
func (p *proxy) run(uchans <-chan ssh.NewChannel, ureqs <-chan *ssh.Request, achans <-chan ssh.NewChannel, areqs <-chan *ssh.Request) {
	p.wg.Go(func() {
		p.user.Wait()
		p.agent.Close()
	})
	p.wg.Go(func() {
		p.agent.Wait()
		p.user.Close()
	})
	p.wg.Go(func() { p.globalRequests(ureqs, p.agent, true) })
	p.wg.Go(func() { p.globalRequests(areqs, p.user, false) })
	p.wg.Go(func() {
		for nc := range uchans {
			p.wg.Go(func() { p.channel(nc, p.agent, true) })
		}
	})
	p.wg.Go(func() {
		for nc := range achans {
			p.wg.Go(func() { p.channel(nc, p.user, false) })
		}
	})
	p.wg.Wait()
}

// globalRequests forwards global requests to dst in order (replies to
// global requests are matched by order).
func (p *proxy) globalRequests(reqs <-chan *ssh.Request, dst ssh.Conn, fromUser bool) {
	for r := range reqs {
		switch {
		case r.Type == "keepalive@openssh.com":
			r.Reply(true, nil)
			continue
		case fromUser && !p.perms.portForwarding && (r.Type == "tcpip-forward" || r.Type == "cancel-tcpip-forward"):
			r.Reply(false, nil)
			continue
		}
		ok, payload, err := dst.SendRequest(r.Type, r.WantReply, r.Payload)
		if err != nil {
			ok, payload = false, nil
		}
		if fromUser && ok && r.Type == "tcpip-forward" {
			p.sess.forwarding()
		}
		r.Reply(ok, payload)
	}
}

// channel opens the same channel on dst and relays it, or rejects nc with
// dst's reason.
func (p *proxy) channel(nc ssh.NewChannel, dst ssh.Conn, fromUser bool) {
	if fromUser && nc.ChannelType() == "direct-tcpip" && !p.perms.portForwarding {
		nc.Reject(ssh.Prohibited, "port forwarding is not permitted")
		return
	}
	out, outReqs, err := dst.OpenChannel(nc.ChannelType(), nc.ExtraData())
	if err != nil {
		var oe *ssh.OpenChannelError
		if errors.As(err, &oe) {
			nc.Reject(oe.Reason, oe.Message)
		} else {
			nc.Reject(ssh.ConnectionFailed, "environment is not reachable")
		}
		return
	}
	in, inReqs, err := nc.Accept()
	if err != nil {
		out.Close()
		return
	}
	inFilter := p.allowRequest
	if !fromUser {
		inFilter = nil
	}
	if fromUser && p.sess != nil {
		switch nc.ChannelType() {
		case "session":
			s := p.sess.session(in)
			defer s.end()
			bridge(s, inReqs, s.filter(inFilter), out, outReqs)
			return
		case "direct-tcpip":
			p.sess.forwarding()
		}
	}
	bridge(in, inReqs, inFilter, out, outReqs)
}

// allowRequest reports whether a channel request from the user is allowed
// by the certificate's permissions.
func (p *proxy) allowRequest(r *ssh.Request) bool {
	switch r.Type {
	case "pty-req":
		return p.perms.pty
	case "auth-agent-req@openssh.com":
		return p.perms.agentForward
	}
	return true
}

// bridge relays two channels until both are closed: data and stderr both
// ways, half-closes (EOF), and requests both ways with replies. Requests
// from a are checked by aFilter if it is not nil.
func bridge(a ssh.Channel, aReqs <-chan *ssh.Request, aFilter func(*ssh.Request) bool, b ssh.Channel, bReqs <-chan *ssh.Request) {
	aToB := make(chan struct{}) // closed once a's data was sent to b and b got EOF
	bToA := make(chan struct{})
	// Requests in flight from each side: a side's channel is closed only
	// after the replies to its requests were relayed, or a fast command (a
	// subsystem that answers, writes and exits at once) would leave its
	// client's request without a reply (EOF).
	var aPending, bPending sync.WaitGroup
	var wg sync.WaitGroup
	wg.Go(func() {
		copyHalf(b, a)
		close(aToB)
	})
	wg.Go(func() {
		copyHalf(a, b)
		close(bToA)
	})
	wg.Go(func() {
		// aReqs ends when a is closed by its peer; close b once all a's
		// output reached it.
		forwardRequests(aReqs, aFilter, b, aToB, &aPending)
		<-aToB
		bPending.Wait()
		b.Close()
	})
	wg.Go(func() {
		forwardRequests(bReqs, nil, a, bToA, &bPending)
		<-bToA
		aPending.Wait()
		a.Close()
	})
	wg.Wait()
}

// copyHalf copies src's data and stderr to dst, then half-closes dst.
func copyHalf(dst, src ssh.Channel) {
	var wg sync.WaitGroup
	wg.Go(func() { io.Copy(dst.Stderr(), src.Stderr()) })
	io.Copy(dst, src)
	wg.Wait()
	dst.CloseWrite()
}

func forwardRequests(reqs <-chan *ssh.Request, allow func(*ssh.Request) bool, dst ssh.Channel, dataDone <-chan struct{}, pending *sync.WaitGroup) {
	for r := range reqs {
		pending.Add(1)
		if allow != nil && !allow(r) {
			r.Reply(false, nil)
			pending.Done()
			continue
		}
		if r.Type == "exit-status" || r.Type == "exit-signal" {
			t := time.NewTimer(exitStatusWait)
			select {
			case <-dataDone:
			case <-t.C:
			}
			t.Stop()
		}
		ok, err := dst.SendRequest(r.Type, r.WantReply, r.Payload)
		r.Reply(ok && err == nil, nil)
		pending.Done()
	}
}
