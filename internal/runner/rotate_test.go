package runner

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/covedev/cove/internal/apiclient"
	"github.com/covedev/cove/internal/server"
	"github.com/covedev/cove/internal/store/sqlite"
	covev1 "github.com/covedev/cove/proto/cove/v1"
	"github.com/covedev/cove/proto/cove/v1/covev1connect"
)

// TestRotateCredentials (S6): the runner rotates its token against a real
// server: the new token is saved (0600) and works, the old one stops.
func TestRotateCredentials(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	st, err := sqlite.Open(ctx, filepath.Join(dir, "cove.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	srv, err := server.New(server.Config{Store: st, DataDir: dir, Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(srv.Handler())
	defer hs.Close()
	owner, _, err := srv.Bootstrap(ctx, "alice", "")
	if err != nil {
		t.Fatal(err)
	}
	jt, err := srv.CreateJoinToken(ctx, owner.ID, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	anon := covev1connect.NewRunnerServiceClient(http.DefaultClient, hs.URL)
	join, err := anon.JoinRunner(ctx, connect.NewRequest(&covev1.JoinRunnerRequest{JoinToken: jt, Name: "host-a"}))
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "runner.json")
	cred := credentials{RunnerID: join.Msg.RunnerId, Token: join.Msg.RunnerToken, Server: hs.URL}
	if err := saveCredentials(path, cred); err != nil {
		t.Fatal(err)
	}
	r := &Runner{cfg: Config{HTTPClient: http.DefaultClient, ServerURL: hs.URL}}
	old := &client{id: cred.RunnerID, api: covev1connect.NewRunnerServiceClient(http.DefaultClient, hs.URL, connect.WithInterceptors(apiclient.Bearer(cred.Token)))}
	c, next, err := r.rotateCredentials(ctx, path, cred, old)
	if err != nil {
		t.Fatal(err)
	}
	if next.Token == cred.Token || next.RunnerID != cred.RunnerID {
		t.Fatalf("rotated credentials %+v", next)
	}
	var saved credentials
	b, err := os.ReadFile(path)
	if err != nil || json.Unmarshal(b, &saved) != nil || saved != next {
		t.Fatalf("saved %s (%v), want %+v", b, err, next)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("credentials mode %v %v", fi.Mode(), err)
	}
	hb := func(c *client) error {
		_, err := c.api.Heartbeat(ctx, connect.NewRequest(&covev1.HeartbeatRequest{}))
		return err
	}
	if err := hb(c); err != nil {
		t.Fatalf("new token: %v", err)
	}
	if err := hb(old); connect.CodeOf(err) != connect.CodeUnauthenticated {
		t.Fatalf("old token after rotation: %v", err)
	}
}
