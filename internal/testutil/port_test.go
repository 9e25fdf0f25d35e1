package testutil

import (
	"errors"
	"net"
	"strconv"
	"syscall"
	"testing"
)

func TestRefusedAddr(t *testing.T) {
	addr := RefusedAddr(t)
	if c, err := net.Dial("tcp", addr); err == nil {
		c.Close()
		t.Fatalf("%s accepted a connection", addr)
	} else if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("dial %s: %v, want connection refused", addr, err)
	}
	// The port is taken: nothing else can listen on it.
	if ln, err := net.Listen("tcp", addr); err == nil {
		ln.Close()
		t.Errorf("could listen on %s", addr)
	}
}

func TestFreePort(t *testing.T) {
	seen := map[string]bool{}
	for range 20 {
		addr := FreePort(t)
		if seen[addr] {
			t.Fatalf("%s handed out twice", addr)
		}
		seen[addr] = true
		_, p, _ := net.SplitHostPort(addr)
		port, _ := strconv.Atoi(p)
		if port >= ephemeralLow() {
			t.Errorf("%s is in the ephemeral range (from %d)", addr, ephemeralLow())
		}
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			t.Fatalf("listen on %s: %v", addr, err)
		}
		ln.Close()
	}
}
