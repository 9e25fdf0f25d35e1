package cli

import (
	"bufio"
	"context"
	"io"
	"net"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/covedev/cove/internal/agent/agenttest"
	"github.com/covedev/cove/internal/testutil"
	covev1 "github.com/covedev/cove/proto/cove/v1"
	"golang.org/x/crypto/ssh"
)

func TestParseForwards(t *testing.T) {
	got, err := parseForwards([]string{"3000", "8081:8080", "0:22"})
	if err != nil {
		t.Fatal(err)
	}
	want := []forward{{3000, 3000}, {8081, 8080}, {0, 22}}
	if !slices.Equal(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}
	for _, bad := range [][]string{
		{"0"}, {"x"}, {"70000"}, {"80:"}, {":80"}, {"-1:80"}, {"1:2:3"}, {"3000", "3000"}, {"9000:1", "9000:2"},
	} {
		if _, err := parseForwards(bad); err == nil {
			t.Errorf("parseForwards(%q) succeeded", bad)
		}
	}
	// Several "pick a port" forwards are fine.
	if _, err := parseForwards([]string{"0:80", "0:81"}); err != nil {
		t.Errorf("two 0: forwards: %v", err)
	}
}

func TestParseVisibility(t *testing.T) {
	for _, tc := range []struct {
		in, name string
		want     covev1.PortVisibility
	}{
		{"private", "private", covev1.PortVisibility_PORT_VISIBILITY_PRIVATE},
		{"Public", "public", covev1.PortVisibility_PORT_VISIBILITY_PUBLIC},
		{"organization", "organization", covev1.PortVisibility_PORT_VISIBILITY_ORGANIZATION},
		{"org", "organization", covev1.PortVisibility_PORT_VISIBILITY_ORGANIZATION},
	} {
		got, err := parseVisibility(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("parseVisibility(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
		}
		if n := visibilityName(got); n != tc.name {
			t.Errorf("visibilityName(%v) = %q, want %q", got, n, tc.name)
		}
	}
	if _, err := parseVisibility("everyone"); err == nil {
		t.Error("parseVisibility(everyone) succeeded")
	}
	if visibilityName(covev1.PortVisibility_PORT_VISIBILITY_UNSPECIFIED) != "private" {
		t.Error("unspecified visibility is not shown as private")
	}
	var sb strings.Builder
	printPorts(&sb, []*covev1.Port{{Port: 3000, Address: "0.0.0.0", Visibility: covev1.PortVisibility_PORT_VISIBILITY_PUBLIC, Url: "http://x/"},
		{Port: 5432, Service: "db", Protocol: "https", Label: "pg"}})
	if lines := strings.Split(strings.TrimSpace(sb.String()), "\n"); len(lines) != 3 || !strings.HasPrefix(lines[0], "PORT") ||
		strings.Join(strings.Fields(lines[1]), " ") != "3000 - 0.0.0.0 http public http://x/" ||
		strings.Join(strings.Fields(lines[2]), " ") != "5432 db (not listening) https private pg" {
		t.Errorf("table:\n%s", sb.String())
	}
}

// TestPortForward forwards through a real agent (the SSH server the
// gateway proxies to, which serves direct-tcpip the same way).
func TestPortForward(t *testing.T) {
	a := agenttest.Start(t, agenttest.Options{})

	// An echo service "inside the environment".
	echo, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer echo.Close()
	go func() {
		for {
			c, err := echo.Accept()
			if err != nil {
				return
			}
			go func() { io.Copy(c, c); c.Close() }()
		}
	}()
	remote := echo.Addr().(*net.TCPAddr).Port

	connects := 0
	tun := &tunnel{name: "demo", connect: func(ctx context.Context) (*ssh.Client, error) {
		connects++
		return ssh.Dial("unix", a.Endpoint.Socket, &ssh.ClientConfig{User: "dev", Auth: []ssh.AuthMethod{ssh.PublicKeys(a.Endpoint.Signer)},
			HostKeyCallback: ssh.FixedHostKey(a.Endpoint.HostKey)})
	}}
	pr, pw := io.Pipe()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- portForward(ctx, pw, tun, []forward{{0, remote}}); pw.Close() }()
	sc := bufio.NewScanner(pr)
	if !sc.Scan() {
		t.Fatalf("no output: %v", <-done)
	}
	line := sc.Text()
	go io.Copy(io.Discard, pr)
	var local string
	if f := strings.Fields(line); len(f) == 4 && f[0] == "Forwarding" && f[2] == "->" && f[3] == "demo:"+strconv.Itoa(remote) {
		local = f[1]
	} else {
		t.Fatalf("unexpected output %q", line)
	}

	for i := range 3 { // several connections over one SSH connection
		c, err := net.Dial("tcp", local)
		if err != nil {
			t.Fatal(err)
		}
		msg := "ping " + strconv.Itoa(i)
		c.Write([]byte(msg))
		c.(*net.TCPConn).CloseWrite()
		got, err := io.ReadAll(c)
		c.Close()
		if err != nil || string(got) != msg {
			t.Fatalf("echo through the forward: %q, %v; want %q", got, err, msg)
		}
	}
	if connects != 1 {
		t.Errorf("%d SSH connections, want 1", connects)
	}

	cancel()
	if err := testutil.Receive(t, done, "portForward to return after cancel"); err != nil {
		t.Errorf("portForward: %v", err)
	}
	if c, err := net.Dial("tcp", local); err == nil {
		c.Close()
		t.Error("local port still listening after the forward ended")
	}
}
