package agent

import (
	"net"
	"runtime"
	"slices"
	"testing"

	"github.com/covedev/cove/internal/agent/agentproto"
	"github.com/covedev/cove/internal/testutil"
	"golang.org/x/sys/unix"
)

// TestListeningPortsDiag: the sock_diag lister finds this process's
// listeners with their addresses, agrees with the /proc/net tables on
// them, and does not list a connected socket's port.
func TestListeningPortsDiag(t *testing.T) {
	lnV4, err := net.Listen("tcp4", "127.0.0.1:0")
	must(t, err)
	defer lnV4.Close()
	lnAny, err := net.Listen("tcp", ":0") // dual-stack where the host has IPv6
	must(t, err)
	defer lnAny.Close()
	conn, err := net.Dial("tcp", lnV4.Addr().String())
	must(t, err)
	defer conn.Close()
	client := conn.LocalAddr().(*net.TCPAddr).Port

	diag, err := listeningPortsDiag()
	if err != nil {
		t.Fatalf("sock_diag: %v", err)
	}
	proc, err := listeningPorts(procNetFiles)
	must(t, err)
	for _, ln := range []net.Listener{lnV4, lnAny} {
		port := ln.Addr().(*net.TCPAddr).Port
		d, p := find(diag, port), find(proc, port)
		if d == nil {
			t.Fatalf("port %d (%s) not found by sock_diag: %v", port, ln.Addr(), diag)
		}
		if p == nil || *p != *d {
			t.Errorf("port %d: sock_diag says %v, /proc/net says %v", port, d, p)
		}
	}
	if find(diag, lnV4.Addr().(*net.TCPAddr).Port).Address != "127.0.0.1" {
		t.Errorf("loopback listener reported as %v", find(diag, lnV4.Addr().(*net.TCPAddr).Port))
	}
	if p := find(diag, client); p != nil {
		t.Errorf("a connected socket's port %d is listed as listening: %v", client, p)
	}
}

// TestListeningPortsDiagNetns: in a fresh network namespace the lister
// sees exactly that namespace's listeners, none of the host's.
func TestListeningPortsDiagNetns(t *testing.T) {
	testutil.RequireRoot(t)
	type result struct {
		got, want []agentproto.Port
		err       error
	}
	done := make(chan result, 1)
	go func() {
		// The thread is left in the new namespace and never unlocked: it
		// exits with the goroutine.
		runtime.LockOSThread()
		var r result
		defer func() { done <- r }()
		if r.err = unix.Unshare(unix.CLONE_NEWNET); r.err != nil {
			return
		}
		// A new namespace's loopback is down; listening on it still works
		// for the kernel's tables.
		for _, addr := range []string{"127.0.0.1:7001", "0.0.0.0:7002", "[::]:7003", "[::1]:7004"} {
			ln, err := net.Listen("tcp", addr)
			if err != nil {
				continue // no IPv6 in this kernel: those two are skipped
			}
			defer ln.Close()
			a := ln.Addr().(*net.TCPAddr)
			r.want = append(r.want, agentproto.Port{Port: a.Port, Address: a.IP.String()})
		}
		r.got, r.err = listeningPortsDiag()
	}()
	r := <-done
	if r.err != nil {
		t.Fatal(r.err)
	}
	slices.SortFunc(r.want, func(a, b agentproto.Port) int { return a.Port - b.Port })
	if len(r.want) < 2 || !slices.Equal(r.got, r.want) {
		t.Errorf("got %v, want exactly %v", r.got, r.want)
	}
}

func find(ps []agentproto.Port, port int) *agentproto.Port {
	i := slices.IndexFunc(ps, func(p agentproto.Port) bool { return p.Port == port })
	if i < 0 {
		return nil
	}
	return &ps[i]
}

// BenchmarkListeningPorts compares one discovery pass through sock_diag
// with reading the /proc/net tables (what the agent did before).
func BenchmarkListeningPorts(b *testing.B) {
	for _, m := range []struct {
		name string
		list func() ([]agentproto.Port, error)
	}{
		{"sock_diag", listeningPortsDiag},
		{"proc_net", func() ([]agentproto.Port, error) { return listeningPorts(procNetFiles) }},
	} {
		b.Run(m.name, func(b *testing.B) {
			for b.Loop() {
				if _, err := m.list(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
