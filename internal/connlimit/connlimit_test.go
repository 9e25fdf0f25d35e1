package connlimit

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/covedev/cove/internal/testutil"
)

func tcp(ip string) net.Addr { return &net.TCPAddr{IP: net.ParseIP(ip), Port: 40000} }

func TestAcquireCaps(t *testing.T) {
	l := New(4, 2)
	var rels []func()
	take := func(ip string) bool {
		r, ok := l.Acquire(tcp(ip))
		if ok {
			rels = append(rels, r)
		}
		return ok
	}
	if !take("192.0.2.1") || !take("192.0.2.1") {
		t.Fatal("first two from one source refused")
	}
	if take("192.0.2.1") {
		t.Fatal("third from one source accepted (per-source cap 2)")
	}
	// IPv4-mapped IPv6 is the same source.
	if take("::ffff:192.0.2.1") {
		t.Fatal("mapped address counted as another source")
	}
	// One IPv6 /64 is one source.
	if !take("2001:db8::1") || !take("2001:db8::2") || take("2001:db8::3") {
		t.Fatal("IPv6 /64 not counted as one source")
	}
	// Total cap 4 reached.
	if take("198.51.100.7") {
		t.Fatal("accepted beyond the total cap")
	}
	if st := l.Stats(); st.Pending != 4 || st.Refused != 4 {
		t.Fatalf("stats %+v", st)
	}
	rels[0]()
	rels[0]() // twice: no effect
	if st := l.Stats(); st.Pending != 3 {
		t.Fatalf("after release: %+v", st)
	}
	if !take("198.51.100.7") || take("198.51.100.8") {
		t.Fatal("released slot not reusable exactly once")
	}
}

func TestWait(t *testing.T) {
	l := New(0, 0)
	rel, _ := l.Acquire(tcp("192.0.2.1"))
	done := make(chan error, 1)
	go func() { done <- l.Wait(context.Background(), func(s Stats) bool { return s.Pending == 0 }) }()
	rel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := l.Wait(ctx, func(s Stats) bool { return false }); !errors.Is(err, context.Canceled) {
		t.Fatalf("Wait with a done context: %v", err)
	}
}

// TestListen opens connections on loopback: beyond the per-source cap the
// listener closes a connection at once (the client reads EOF); an
// authenticated connection frees its slot and stays usable.
func TestListen(t *testing.T) {
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := New(0, 2)
	ln := Listen(raw, l, slog.New(slog.NewTextHandler(io.Discard, nil)), "refused")
	t.Cleanup(func() { ln.Close() })
	accepted := make(chan net.Conn)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				close(accepted)
				return
			}
			accepted <- c
		}
	}()
	dial := func() net.Conn {
		c, err := net.Dial("tcp", raw.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	c1 := dial()
	dial()
	s1, s2 := <-accepted, <-accepted
	c3 := dial()
	// The third is closed by the listener without being handed out.
	if _, err := c3.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
		t.Fatalf("over the cap: read %v, want EOF", err)
	}
	if st := l.Stats(); st.Pending != 2 || st.Refused != 1 {
		t.Fatalf("stats %+v", st)
	}
	// s1 authenticates (through a TLS wrapper, as the HTTPS proxy has
	// it): its slot is free, the connection still works.
	Authenticated(tls.Server(s1, &tls.Config{}))
	if st := l.Stats(); st.Pending != 1 {
		t.Fatalf("after Authenticated: %+v", st)
	}
	dial() // takes the freed slot
	<-accepted
	if _, err := s1.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	c1.SetReadDeadline(time.Now().Add(testutil.Patience(t)))
	if _, err := io.ReadFull(c1, make([]byte, 1)); err != nil {
		t.Fatalf("authenticated connection: %v", err)
	}
	// Closing frees the slot; closing an authenticated one frees nothing twice.
	s2.Close()
	s1.Close()
	if st := l.Stats(); st.Pending != 1 {
		t.Fatalf("after closes: %+v", st)
	}
}
