package netenv

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// relay forwards DNS queries from environments (UDP and TCP on the bridge
// address, port 53) to the upstream resolvers, without parsing them. Its
// capacity is shared out per source address (one per environment, and one
// for the builder): separate UDP and TCP budgets per source, so one
// environment filling its own cannot deny DNS to the others (dnsbudget.go).
type relay struct {
	log       *slog.Logger
	upstreams []string
	lim       dnsLimits
	ns        netns.NsHandle // owned copy of the host namespace handle
	udp       *net.UDPConn
	tcp       *net.TCPListener
	cancel    context.CancelFunc
	udpBudget *budget // in-flight UDP queries
	tcpBudget *budget // open TCP client connections
	wg        sync.WaitGroup
}

func startRelay(ctx context.Context, log *slog.Logger, hostNS netns.NsHandle, ip netip.Addr, upstreams []string) (*relay, error) {
	return startRelayWith(ctx, log, hostNS, ip, upstreams, defaultDNSLimits)
}

func startRelayWith(ctx context.Context, log *slog.Logger, hostNS netns.NsHandle, ip netip.Addr, upstreams []string, lim dnsLimits) (*relay, error) {
	if len(upstreams) == 0 {
		log.WarnContext(ctx, "no DNS upstreams: environments will not resolve names")
	}
	fd, err := unix.FcntlInt(uintptr(hostNS), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("dup namespace handle: %w", err)
	}
	r := &relay{log: log, upstreams: upstreams, lim: lim, ns: netns.NsHandle(fd),
		udpBudget: newBudget(lim.udpPerSource, lim.udpTotal), tcpBudget: newBudget(lim.tcpPerSource, lim.tcpTotal)}
	addr := netip.AddrPortFrom(ip, 53)
	err = inNS(r.ns, func() error {
		var err error
		if r.udp, err = net.ListenUDP("udp4", net.UDPAddrFromAddrPort(addr)); err != nil {
			return err
		}
		r.tcp, err = net.ListenTCP("tcp4", net.TCPAddrFromAddrPort(addr))
		return err
	})
	if err != nil {
		if r.udp != nil {
			r.udp.Close()
		}
		r.ns.Close()
		return nil, fmt.Errorf("DNS relay on %s: %w", addr, err)
	}
	// The relay outlives the Start call's context.
	rctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	r.cancel = cancel
	r.wg.Add(2)
	go r.serveUDP(rctx)
	go r.serveTCP(rctx)
	return r, nil
}

func (r *relay) close() {
	r.cancel()
	r.udp.Close()
	r.tcp.Close()
	r.wg.Wait()
	r.ns.Close()
}

// dial connects to an upstream from the host namespace.
func (r *relay) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	var c net.Conn
	err := inNS(r.ns, func() error {
		var err error
		d := net.Dialer{Timeout: r.lim.upstreamTimeout}
		c, err = d.DialContext(ctx, network, addr)
		return err
	})
	return c, err
}

func (r *relay) serveUDP(ctx context.Context) {
	defer r.wg.Done()
	buf := make([]byte, 65535)
	for {
		n, from, err := r.udp.ReadFromUDPAddrPort(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		if n < 12 {
			continue // not a DNS message
		}
		src := from.Addr().Unmap()
		if !r.udpBudget.take(src) {
			continue // this source's budget is spent: drop, the client retries
		}
		q := append([]byte(nil), buf[:n]...)
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			defer r.udpBudget.release(src)
			if resp := r.exchangeUDP(ctx, q); resp != nil {
				r.udp.WriteToUDPAddrPort(resp, from)
			}
		}()
	}
}

// exchangeUDP tries each upstream in turn and returns the first reply whose
// id matches the query's.
func (r *relay) exchangeUDP(ctx context.Context, q []byte) []byte {
	for _, up := range r.upstreams {
		if ctx.Err() != nil {
			return nil
		}
		c, err := r.dial(ctx, "udp", up)
		if err != nil {
			r.log.DebugContext(ctx, "dns upstream", "upstream", up, "err", err)
			continue
		}
		resp := func() []byte {
			defer c.Close()
			stop := context.AfterFunc(ctx, func() { c.Close() }) // the relay is closing
			defer stop()
			c.SetDeadline(time.Now().Add(r.lim.upstreamTimeout))
			if _, err := c.Write(q); err != nil {
				return nil
			}
			buf := make([]byte, 65535)
			for {
				n, err := c.Read(buf)
				if err != nil {
					return nil
				}
				if n >= 12 && buf[0] == q[0] && buf[1] == q[1] {
					return buf[:n]
				}
			}
		}()
		if resp != nil {
			return resp
		}
	}
	return nil
}

func (r *relay) serveTCP(ctx context.Context) {
	defer r.wg.Done()
	for {
		c, err := r.tcp.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			time.Sleep(10 * time.Millisecond)
			continue
		}
		src := netip.Addr{}
		if ta, ok := c.RemoteAddr().(*net.TCPAddr); ok {
			src = ta.AddrPort().Addr().Unmap()
		}
		if !r.tcpBudget.take(src) {
			c.Close() // this source holds its share of connections already
			continue
		}
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			defer c.Close()
			defer r.tcpBudget.release(src) // before the client sees the close
			stop := context.AfterFunc(ctx, func() { c.Close() })
			defer stop()
			r.serveTCPConn(ctx, c)
		}()
	}
}

// serveTCPConn relays length-prefixed queries on one client connection.
// Each query (the first one too) must arrive whole within lim.tcpIdle, so
// an idle or trickling client gives its slot back quickly.
func (r *relay) serveTCPConn(ctx context.Context, c net.Conn) {
	for {
		c.SetReadDeadline(time.Now().Add(r.lim.tcpIdle))
		q, err := readTCPMsg(c)
		if err != nil {
			return
		}
		resp := r.exchangeTCP(ctx, q)
		if resp == nil {
			return
		}
		c.SetWriteDeadline(time.Now().Add(r.lim.upstreamTimeout))
		if err := writeTCPMsg(c, resp); err != nil {
			return
		}
	}
}

func (r *relay) exchangeTCP(ctx context.Context, q []byte) []byte {
	for _, up := range r.upstreams {
		if ctx.Err() != nil {
			return nil
		}
		c, err := r.dial(ctx, "tcp", up)
		if err != nil {
			r.log.DebugContext(ctx, "dns upstream", "upstream", up, "err", err)
			continue
		}
		stop := context.AfterFunc(ctx, func() { c.Close() }) // the relay is closing
		c.SetDeadline(time.Now().Add(r.lim.upstreamTimeout))
		var resp []byte
		if err := writeTCPMsg(c, q); err == nil {
			resp, _ = readTCPMsg(c)
		}
		stop()
		c.Close()
		if resp != nil {
			return resp
		}
	}
	return nil
}

func readTCPMsg(r io.Reader) ([]byte, error) {
	var l [2]byte
	if _, err := io.ReadFull(r, l[:]); err != nil {
		return nil, err
	}
	msg := make([]byte, binary.BigEndian.Uint16(l[:]))
	if _, err := io.ReadFull(r, msg); err != nil {
		return nil, err
	}
	return msg, nil
}

func writeTCPMsg(w io.Writer, msg []byte) error {
	b := binary.BigEndian.AppendUint16(make([]byte, 0, 2+len(msg)), uint16(len(msg)))
	_, err := w.Write(append(b, msg...))
	return err
}
