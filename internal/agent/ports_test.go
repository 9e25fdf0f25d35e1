package agent

import (
	"bufio"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/covedev/cove/internal/agent/agentproto"
	"github.com/covedev/cove/internal/testutil"
)

func TestParseProcNet(t *testing.T) {
	dir := t.TempDir()
	tcp := filepath.Join(dir, "tcp")
	tcp6 := filepath.Join(dir, "tcp6")
	must(t, os.WriteFile(tcp, []byte(
		"  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"+
			"   0: 0100007F:0BB8 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0 100 0 0 10 0\n"+
			"   1: 00000000:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2 1 0 100 0 0 10 0\n"+
			"   2: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 3 1 0 100 0 0 10 0\n"+
			"   3: 0100007F:0016 0100007F:D431 01 00000000:00000000 00:00000000 00000000     0        0 4 1 0 100 0 0 10 0\n"+
			"   4: 0F02000A:1389 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 5 1 0 100 0 0 10 0\n"), 0o644))
	must(t, os.WriteFile(tcp6, []byte(
		"  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"+
			"   0: 00000000000000000000000000000000:0BB8 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 6 1 0 100 0 0 10 0\n"+
			"   1: 00000000000000000000000001000000:2328 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 7 1 0 100 0 0 10 0\n"+
			"   2: 0000000000000000FFFF00000100007F:2329 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 8 1 0 100 0 0 10 0\n"), 0o644))

	got, err := listeningPorts([]string{tcp, tcp6, filepath.Join(dir, "missing")})
	must(t, err)
	// Port 22 is an established connection, not a listener.
	want := []agentproto.Port{
		{Port: 3000, Address: "::"},        // both 127.0.0.1 and :: listen: the wider wins
		{Port: 5001, Address: "10.0.2.15"}, // a specific address
		{Port: 8080, Address: "0.0.0.0"},   // 0.0.0.0 beats 127.0.0.1
		{Port: 9000, Address: "::1"},
		{Port: 9001, Address: "127.0.0.1"}, // v4-mapped
	}
	if !slices.Equal(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}

}

func TestPortsStream(t *testing.T) {
	if _, err := os.Stat("/proc/net/tcp"); err != nil {
		t.Skip("no /proc/net/tcp")
	}
	e := newTestEnv(t)
	e.cfg.portsInterval = 50 * time.Millisecond
	e.start(t)
	c := e.client(t)

	ch, reqs, err := c.OpenChannel(agentproto.PortsChannel, nil)
	must(t, err)
	defer ch.Close()
	go func() {
		for r := range reqs {
			r.Reply(false, nil)
		}
	}()
	lines := make(chan []agentproto.Port, 100)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(ch)
		for sc.Scan() {
			var ps []agentproto.Port
			if err := json.Unmarshal(sc.Bytes(), &ps); err != nil {
				t.Errorf("bad line %q: %v", sc.Text(), err)
				return
			}
			lines <- ps
		}
	}()
	has := func(ps []agentproto.Port, port int) bool {
		return slices.ContainsFunc(ps, func(p agentproto.Port) bool { return p.Port == port })
	}
	// waitFor returns the first update (the initial list included) for
	// which cond holds, or fails after testutil.Patience.
	waitFor := func(what string, cond func([]agentproto.Port) bool) []agentproto.Port {
		t.Helper()
		timeout := time.After(testutil.Patience(t))
		for {
			select {
			case ps, ok := <-lines:
				if !ok {
					t.Fatalf("ports stream ended while waiting for %s", what)
				}
				if cond(ps) {
					return ps
				}
			case <-timeout:
				t.Fatalf("no update with %s", what)
			}
		}
	}
	first := waitFor("the initial list", func([]agentproto.Port) bool { return true })

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	must(t, err)
	port := ln.Addr().(*net.TCPAddr).Port
	if has(first, port) {
		t.Fatalf("port %d listed before it was opened", port)
	}
	ps := waitFor("the new listener", func(ps []agentproto.Port) bool { return has(ps, port) })
	i := slices.IndexFunc(ps, func(p agentproto.Port) bool { return p.Port == port })
	if ps[i].Address != "127.0.0.1" {
		t.Errorf("address %q, want 127.0.0.1", ps[i].Address)
	}
	ln.Close()
	waitFor("the listener gone", func(ps []agentproto.Port) bool { return !has(ps, port) })

	// Closing the channel ends the stream on the agent's side too.
	ch.Close()
	for range lines {
	}
	if strings.Contains(e.logs.String(), "port discovery") {
		t.Errorf("discovery errors logged:\n%s", e.logs.String())
	}
}
