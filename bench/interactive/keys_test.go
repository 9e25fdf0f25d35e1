package main

import (
	"context"
	"os/exec"
	"testing"
	"time"

	"github.com/creack/pty"
)

// A local cat on a pty stands in for the environment's shell: the pty's
// line discipline echoes each key and erases with a backspace.
func TestKeystrokesReadEachEcho(t *testing.T) {
	if _, err := exec.LookPath("cat"); err != nil {
		t.Skip("needs cat")
	}
	cmd := exec.Command("cat")
	f, err := pty.Start(cmd)
	if err != nil {
		t.Skipf("no pty here: %v", err)
	}
	term := &terminal{cmd: cmd, pty: f, out: make(chan chunk, 1024), done: make(chan struct{})}
	go term.read()
	t.Cleanup(term.close)

	ctx := context.Background()
	if err := term.send(ctx, "echo\r", "echo", time.Minute); err != nil {
		t.Fatal(err)
	}
	lat, err := term.keystrokes(ctx, 5, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(lat) != 5 {
		t.Fatalf("%d latencies, want 5", len(lat))
	}
	for i, d := range lat {
		if d <= 0 {
			t.Errorf("keystroke %d: latency %s", i, d)
		}
	}
}

func TestKeystrokesFailWhenTheClientExits(t *testing.T) {
	cmd := exec.Command("true")
	f, err := pty.Start(cmd)
	if err != nil {
		t.Skipf("no pty here: %v", err)
	}
	term := &terminal{cmd: cmd, pty: f, out: make(chan chunk, 1024), done: make(chan struct{})}
	go term.read()
	t.Cleanup(term.close)
	<-term.done
	if _, err := term.keystrokes(context.Background(), 1, 0); err == nil {
		t.Fatal("no error from a terminal whose client has exited")
	}
}
