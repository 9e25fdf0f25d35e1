package runner

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	goruntime "runtime"
	"syscall"
	"time"

	"connectrpc.com/connect"
	"github.com/covedev/cove/internal/apiclient"
	covev1 "github.com/covedev/cove/proto/cove/v1"
	"github.com/covedev/cove/proto/cove/v1/covev1connect"
	"golang.org/x/crypto/ssh"
)

// client is the runner's authenticated connection to the server.
type client struct {
	id  string
	api covev1connect.RunnerServiceClient
}

type credentials struct {
	RunnerID string `json:"runnerID"`
	Token    string `json:"token"`
	Server   string `json:"server"`
}

// connect loads the runner's credentials, joining with the join token the
// first time.
func (r *Runner) connect(ctx context.Context) (*client, error) {
	path := filepath.Join(r.cfg.DataDir, "runner.json")
	var cred credentials
	b, err := os.ReadFile(path)
	switch {
	case err == nil:
		if err := json.Unmarshal(b, &cred); err != nil {
			return nil, fmt.Errorf("parse %s: %w", path, err)
		}
	case errors.Is(err, os.ErrNotExist):
		if r.cfg.JoinToken == "" {
			return nil, fmt.Errorf("runner has not joined a server yet: pass --join-token (from `cove runner join-token`)")
		}
		anon := covev1connect.NewRunnerServiceClient(r.cfg.HTTPClient, r.cfg.ServerURL)
		resp, err := anon.JoinRunner(ctx, connect.NewRequest(&covev1.JoinRunnerRequest{JoinToken: r.cfg.JoinToken, Name: r.cfg.Name}))
		if err != nil {
			return nil, fmt.Errorf("join %s: %w", r.cfg.ServerURL, err)
		}
		cred = credentials{RunnerID: resp.Msg.RunnerId, Token: resp.Msg.RunnerToken, Server: r.cfg.ServerURL}
		b, _ := json.MarshalIndent(cred, "", "  ")
		if err := os.WriteFile(path, b, 0o600); err != nil {
			return nil, fmt.Errorf("save runner credentials: %w", err)
		}
		r.log.Info("joined server", "runner", cred.RunnerID, "server", r.cfg.ServerURL)
	default:
		return nil, err
	}
	api := covev1connect.NewRunnerServiceClient(r.cfg.HTTPClient, r.cfg.ServerURL, connect.WithInterceptors(apiclient.Bearer(cred.Token)))
	c := &client{id: cred.RunnerID, api: api}
	// A new runner token at every start: a copied runner.json stops working
	// once the runner has restarted (see rotateCredentials).
	if nc, _, err := r.rotateCredentials(ctx, path, cred, c); err != nil {
		r.log.Warn("runner token not rotated; keeping the current one", "err", err)
	} else {
		c = nc
	}
	return c, nil
}

func (r *Runner) capabilities() *covev1.RunnerCapabilities {
	c := &covev1.RunnerCapabilities{
		Runtimes:        []string{r.rt.Name()},
		Cpus:            int32(goruntime.NumCPU()),
		MemoryBytes:     memTotal(),
		Classes:         r.cfg.Classes,
		MaxEnvironments: int32(r.cfg.MaxEnvironments),
		SshAddress:      r.sshAddr,
		ProxyUrl:        r.proxyURL,
	}
	var fs syscall.Statfs_t
	if syscall.Statfs(r.cfg.DataDir, &fs) == nil {
		c.DiskBytes = int64(fs.Bavail) * fs.Bsize
	}
	return c
}

func (r *Runner) heartbeatLoop(ctx context.Context) {
	hostPub := string(ssh.MarshalAuthorizedKey(r.hostKey.PublicKey()))
	interval := 5 * time.Second
	for {
		resp, err := r.client.api.Heartbeat(ctx, connect.NewRequest(&covev1.HeartbeatRequest{Capabilities: r.capabilities(), HostPublicKey: hostPub}))
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			r.log.Warn("heartbeat failed", "err", err)
		} else {
			if err := r.applyTrust(resp.Msg); err != nil {
				r.log.Error("heartbeat response", "err", err)
			}
			if s := resp.Msg.GetHeartbeatIntervalSeconds(); s > 0 {
				interval = time.Duration(s) * time.Second
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(interval):
		}
	}
}

// applyTrust installs the user CA and the gateway's host certificate.
func (r *Runner) applyTrust(hb *covev1.HeartbeatResponse) error {
	ca, _, _, _, err := ssh.ParseAuthorizedKey([]byte(hb.GetUserCa()))
	if err != nil {
		return fmt.Errorf("user CA: %w", err)
	}
	r.gw.SetUserCA(ca)
	if hb.GetHostCertificate() != "" {
		k, _, _, _, err := ssh.ParseAuthorizedKey([]byte(hb.GetHostCertificate()))
		if err != nil {
			return fmt.Errorf("host certificate: %w", err)
		}
		cert, ok := k.(*ssh.Certificate)
		if !ok {
			return errors.New("host certificate is not a certificate")
		}
		r.gw.SetHostCertificate(cert)
	}
	return nil
}

// watchLoop follows the runner's assignments, reconnecting with backoff,
// and hands each environment's latest state to its worker.
func (r *Runner) watchLoop(ctx context.Context) {
	var since int64
	backoff := time.Second
	for ctx.Err() == nil {
		stream, err := r.client.api.WatchAssignments(ctx, connect.NewRequest(&covev1.WatchAssignmentsRequest{SinceRevision: since}))
		if err == nil {
			backoff = time.Second
			for stream.Receive() {
				env := stream.Msg().GetEnvironment()
				if env == nil {
					continue
				}
				since = max(since, env.Revision)
				r.dispatch(ctx, env)
			}
			err = stream.Err()
			stream.Close()
		}
		if ctx.Err() != nil {
			return
		}
		r.log.Warn("assignment watch ended; reconnecting", "err", err, "in", backoff)
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 30*time.Second)
	}
}

func (r *Runner) dispatch(ctx context.Context, env *covev1.Environment) {
	r.mu.Lock()
	defer r.mu.Unlock()
	w, ok := r.workers[env.Id]
	if !ok {
		if env.GetStatus().GetPhase() == covev1.EnvironmentPhase_ENVIRONMENT_PHASE_DELETED {
			return
		}
		w = r.newWorker(ctx, env.Id)
		r.workers[env.Id] = w
	}
	w.update(env)
}

func (r *Runner) forget(id string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.workers, id)
}

func (r *Runner) report(ctx context.Context, id string, st *covev1.EnvironmentStatus) (*covev1.Environment, error) {
	validUTF8(st.ProtoReflect())
	resp, err := r.client.api.ReportStatus(ctx, connect.NewRequest(&covev1.ReportStatusRequest{EnvironmentId: id, Status: st}))
	if err != nil {
		return nil, err
	}
	return resp.Msg.Environment, nil
}

func memTotal() int64 {
	var si syscall.Sysinfo_t
	if syscall.Sysinfo(&si) != nil {
		return 0
	}
	return int64(si.Totalram) * int64(si.Unit)
}
