package runner

import (
	"context"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/covedev/cove/internal/agent"
	"github.com/covedev/cove/internal/agent/agenttest"
	"github.com/covedev/cove/internal/testutil"
	covev1 "github.com/covedev/cove/proto/cove/v1"
	"github.com/covedev/cove/proto/cove/v1/covev1connect"
)

// statusRecorder is a server that records the statuses a runner reports.
type statusRecorder struct {
	covev1connect.UnimplementedRunnerServiceHandler
	got chan *covev1.EnvironmentStatus
}

func (s *statusRecorder) ReportStatus(ctx context.Context, req *connect.Request[covev1.ReportStatusRequest]) (*connect.Response[covev1.ReportStatusResponse], error) {
	s.got <- req.Msg.GetStatus()
	return connect.NewResponse(&covev1.ReportStatusResponse{}), nil
}

// TestPortsReported runs a real agent where the runner expects an
// environment's socket and checks that listeners opened and closed "inside"
// it show up in the reported status, with the spec's sharing.
func TestPortsReported(t *testing.T) {
	rec := &statusRecorder{got: make(chan *covev1.EnvironmentStatus, 100)}
	path, h := covev1connect.NewRunnerServiceHandler(rec)
	mux := http.NewServeMux()
	mux.Handle(path, h)
	srv := httptest.NewServer(mux)
	defer srv.Close()

	dir := t.TempDir()
	keys, err := loadAgentKeys(dir)
	must(t, err)
	r := &Runner{
		cfg: Config{DataDir: dir}, log: slog.New(slog.DiscardHandler), keys: keys,
		client: &client{api: covev1connect.NewRunnerServiceClient(srv.Client(), srv.URL)},
	}
	const id = "env1"
	sock := r.layout(id).AgentSocket()
	etc := filepath.Join(dir, "etc")
	must(t, os.MkdirAll(filepath.Dir(sock), 0o700))
	must(t, os.MkdirAll(etc, 0o700))
	must(t, keys.write(etc, id, uint32(os.Getuid())))
	// The agent reads the key files the runner wrote; the harness's first
	// handshake, with the runner's keys for id, proves they match.
	agenttest.Start(t, agenttest.Options{Socket: sock, ClientKey: keys.client(id), HostKey: keys.derive("host", id),
		Config: agent.Config{AuthorizedKeysPath: filepath.Join(etc, "runner_keys"), HostKeyPath: filepath.Join(etc, "host_key")}})

	// A listener whose port the spec shares publicly.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	must(t, err)
	defer ln.Close()
	port := int32(ln.Addr().(*net.TCPAddr).Port)

	w := r.newWorker(context.Background(), id)
	defer w.cancel()
	w.mu.Lock()
	w.env = &covev1.Environment{Id: id, Spec: &covev1.EnvironmentSpec{Ports: []*covev1.PortSpec{
		{Port: port, Visibility: covev1.PortVisibility_PORT_VISIBILITY_PUBLIC},
	}}}
	w.mu.Unlock()
	ctx := testutil.Context(t)
	must(t, w.setStatus(ctx, &covev1.EnvironmentStatus{Phase: phaseRunning}))
	<-rec.got
	w.setRunning(true)
	w.setRunning(true) // idempotent: still one watch

	find := func(st *covev1.EnvironmentStatus, port int32) *covev1.Port {
		for _, p := range st.GetPorts() {
			if p.GetPort() == port {
				return p
			}
		}
		return nil
	}
	// waitReport waits (the stream may first need to connect) for a report
	// for which cond holds.
	waitReport := func(what string, cond func(*covev1.EnvironmentStatus) bool) *covev1.EnvironmentStatus {
		t.Helper()
		timeout := time.After(testutil.Patience(t))
		for {
			select {
			case st := <-rec.got:
				if cond(st) {
					return st
				}
			case <-timeout:
				t.Fatalf("no report with %s in time", what)
			}
		}
	}
	st := waitReport("the shared port", func(st *covev1.EnvironmentStatus) bool { return find(st, port) != nil })
	if p := find(st, port); p.GetAddress() != "127.0.0.1" || p.GetVisibility() != covev1.PortVisibility_PORT_VISIBILITY_PUBLIC {
		t.Errorf("shared port reported as %v", p)
	}
	if st.GetPhase() != phaseRunning {
		t.Errorf("ports report has phase %v", st.GetPhase())
	}

	// A new port is private by default; a closed one disappears.
	ln2, err := net.Listen("tcp", "127.0.0.1:0")
	must(t, err)
	port2 := int32(ln2.Addr().(*net.TCPAddr).Port)
	st = waitReport("the new port", func(st *covev1.EnvironmentStatus) bool { return find(st, port2) != nil })
	if v := find(st, port2).GetVisibility(); v != covev1.PortVisibility_PORT_VISIBILITY_PRIVATE {
		t.Errorf("unlisted port has visibility %v, want PRIVATE", v)
	}
	ln2.Close()
	waitReport("the closed port gone", func(st *covev1.EnvironmentStatus) bool { return find(st, port2) == nil && find(st, port) != nil })

	// Not running: the watch ends and a report carries no ports.
	w.mu.Lock()
	done := w.ports.done
	w.mu.Unlock()
	w.setRunning(false)
	testutil.Receive(t, done, "the port watch to end after the environment stopped")
	must(t, w.setStatus(ctx, &covev1.EnvironmentStatus{Phase: phaseStopping}))
	// (Reports the watch sent before it ended may still be queued: any
	// listener on this host changes the ports.)
	st = waitReport("the STOPPING report", func(st *covev1.EnvironmentStatus) bool { return st.GetPhase() == phaseStopping })
	if len(st.GetPorts()) != 0 {
		t.Errorf("STOPPING report has ports %v", st.GetPorts())
	}

	// Running again, then the worker ends (environment deleted): the watch
	// ends with it.
	must(t, w.setStatus(ctx, &covev1.EnvironmentStatus{Phase: phaseRunning}))
	w.setRunning(true)
	waitReport("the port again", func(st *covev1.EnvironmentStatus) bool { return find(st, port) != nil })
	w.mu.Lock()
	done = w.ports.done
	w.mu.Unlock()
	w.cancel()
	testutil.Receive(t, done, "the port watch to end after the worker ended")
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
