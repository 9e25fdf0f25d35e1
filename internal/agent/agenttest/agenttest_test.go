package agenttest

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/covedev/cove/internal/agent"
	"github.com/covedev/cove/internal/agentclient"
	"github.com/covedev/cove/internal/testutil"
	"golang.org/x/crypto/ssh"
)

func TestStartDialRestart(t *testing.T) {
	a := Start(t, Options{})
	var out strings.Builder
	code, err := a.Dial(t).Exec(testutil.Context(t), agentclient.ExecRequest{Shell: "id -u", Stdout: &out})
	if err != nil || code != 0 || strings.TrimSpace(out.String()) != strconv.Itoa(os.Getuid()) {
		t.Fatalf("exec: %d %v %q; want the test's own uid", code, err, out.String())
	}
	if err := a.Stop(t); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if c, err := agentclient.Dial(context.Background(), a.Endpoint); err == nil {
		c.Close()
		t.Fatal("dialed a stopped agent")
	}

	// The same agent again: same socket, same keys.
	b := Start(t, a.Options())
	if b.Endpoint.Socket != a.Endpoint.Socket || !bytes.Equal(b.Endpoint.HostKey.Marshal(), a.Endpoint.HostKey.Marshal()) {
		t.Fatal("restart changed the socket or the host key")
	}
	s, err := b.SSH(t, "").NewSession()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if got, err := s.Output("echo again"); err != nil || string(got) != "again\n" {
		t.Fatalf("ssh after restart: %q %v", got, err)
	}
}

// TestStartRefusesOtherClients: the harness's agent accepts its client key
// only, and a client pinning another host key refuses it.
func TestStartRefusesOtherClients(t *testing.T) {
	a := Start(t, Options{})
	b := Start(t, Options{})
	wrongKey := a.Endpoint
	wrongKey.Signer = NewKey(t)
	wrongHost := a.Endpoint
	wrongHost.HostKey = b.Endpoint.HostKey
	for name, ep := range map[string]agentclient.Endpoint{"unknown client key": wrongKey, "other host key": wrongHost} {
		if c, err := agentclient.Dial(testutil.Context(t), ep); err == nil {
			c.Close()
			t.Errorf("%s: connected", name)
		}
	}
}

// TestStartWithKeyFiles: the agent reads key files the code under test
// wrote; Start's handshake proves they hold the keys the test names.
func TestStartWithKeyFiles(t *testing.T) {
	dir := t.TempDir()
	client := NewKey(t)
	_, host, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	blk, err := ssh.MarshalPrivateKey(host, "")
	if err != nil {
		t.Fatal(err)
	}
	keys, hostKey := filepath.Join(dir, "runner_keys"), filepath.Join(dir, "host_key")
	if err := os.WriteFile(keys, ssh.MarshalAuthorizedKey(client.PublicKey()), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(hostKey, pem.EncodeToMemory(blk), 0o600); err != nil {
		t.Fatal(err)
	}
	a := Start(t, Options{ClientKey: client, HostKey: host, Config: agent.Config{AuthorizedKeysPath: keys, HostKeyPath: hostKey}})
	if a.Config.AuthorizedKeysPath != keys || a.Config.HostKeyPath != hostKey {
		t.Errorf("the agent reads %s and %s, want the test's files", a.Config.AuthorizedKeysPath, a.Config.HostKeyPath)
	}
}
