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

const (
	dnsTimeout     = 2 * time.Second  // per upstream attempt
	dnsIdleTimeout = 10 * time.Second // idle TCP client connection
	dnsMaxInFlight = 256
)

// relay forwards DNS queries from environments (UDP and TCP on the bridge
// address, port 53) to the upstream resolvers, without parsing them.
type relay struct {
	log       *slog.Logger
	upstreams []string
	ns        netns.NsHandle // owned copy of the host namespace handle
	udp       *net.UDPConn
	tcp       *net.TCPListener
	cancel    context.CancelFunc
	sem       chan struct{}
	wg        sync.WaitGroup
}

func startRelay(ctx context.Context, log *slog.Logger, hostNS netns.NsHandle, ip netip.Addr, upstreams []string) (*relay, error) {
	if len(upstreams) == 0 {
		log.WarnContext(ctx, "no DNS upstreams: environments will not resolve names")
	}
	fd, err := unix.Dup(int(hostNS))
	if err != nil {
		return nil, fmt.Errorf("dup namespace handle: %w", err)
	}
	r := &relay{log: log, upstreams: upstreams, ns: netns.NsHandle(fd), sem: make(chan struct{}, dnsMaxInFlight)}
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
		d := net.Dialer{Timeout: dnsTimeout}
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
		q := append([]byte(nil), buf[:n]...)
		select {
		case r.sem <- struct{}{}:
		default:
			continue // overloaded: drop, the client retries
		}
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			defer func() { <-r.sem }()
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
			c.SetDeadline(time.Now().Add(dnsTimeout))
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
		select {
		case r.sem <- struct{}{}:
		default:
			c.Close()
			continue
		}
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			defer func() { <-r.sem }()
			defer c.Close()
			stop := context.AfterFunc(ctx, func() { c.Close() })
			defer stop()
			r.serveTCPConn(ctx, c)
		}()
	}
}

// serveTCPConn relays length-prefixed queries on one client connection.
func (r *relay) serveTCPConn(ctx context.Context, c net.Conn) {
	for {
		c.SetReadDeadline(time.Now().Add(dnsIdleTimeout))
		q, err := readTCPMsg(c)
		if err != nil {
			return
		}
		resp := r.exchangeTCP(ctx, q)
		if resp == nil {
			return
		}
		c.SetWriteDeadline(time.Now().Add(dnsTimeout))
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
		c.SetDeadline(time.Now().Add(dnsTimeout))
		var resp []byte
		if err := writeTCPMsg(c, q); err == nil {
			resp, _ = readTCPMsg(c)
		}
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
