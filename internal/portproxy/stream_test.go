package portproxy_test

import (
	"bufio"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/covedev/cove/internal/testutil"
	"golang.org/x/net/websocket"
)

func TestWebSocketEcho(t *testing.T) {
	f := newFixture(t, "")
	cfg, err := websocket.NewConfig(strings.Replace(f.proxyURL, "http", "ws", 1)+"/p/demo/8080/ws", f.proxyURL)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Header = http.Header{"Authorization": {"Bearer cove_pat_good"}}
	ws, err := websocket.DialConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	ws.SetDeadline(time.Now().Add(testutil.Patience(t)))
	for _, msg := range []string{"hello", "through the proxy"} {
		if err := websocket.Message.Send(ws, msg); err != nil {
			t.Fatal(err)
		}
		var got string
		if err := websocket.Message.Receive(ws, &got); err != nil {
			t.Fatal(err)
		}
		if got != msg {
			t.Fatalf("echo %q, want %q", got, msg)
		}
	}
	// Without a token the upgrade is refused.
	cfg.Header = nil
	if _, err := websocket.DialConfig(cfg); err == nil {
		t.Fatal("anonymous WebSocket accepted")
	}
}

func TestStreaming(t *testing.T) {
	f := newFixture(t, "")
	req, _ := http.NewRequest("GET", f.proxyURL+"/p/demo/8080/stream", nil)
	req.Header.Set("Authorization", "Bearer cove_pat_good")
	resp, err := http.DefaultClient.Do(req.WithContext(testutil.Context(t)))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	br := bufio.NewReader(resp.Body)
	line, err := br.ReadString('\n')
	if err != nil || line != "first\n" {
		t.Fatalf("first chunk before the handler finished: %q %v", line, err)
	}
	close(f.release)
	line, err = br.ReadString('\n')
	if err != nil || line != "second\n" {
		t.Fatalf("second chunk: %q %v", line, err)
	}
}
