package runner

import (
	"context"
	"sync"
	"time"

	"github.com/covedev/cove/internal/agentclient"
	"github.com/covedev/cove/internal/image"
	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// The runner's collaborators on the host, declared here where they are
// consumed; runner.New wires the real ones (or a test wires fakes). The
// runtime is runtime.Runtime.

// imageStore is the image store: it pulls and imports images into
// content-addressed layers and makes root file systems of them. It answers
// questions about itself (which layers it has, what is mounted) so the
// runner never looks into its directories.
type imageStore interface {
	Pull(ctx context.Context, ref string) (*image.Image, error)
	Import(ctx context.Context, name string, img v1.Image) (*image.Image, error)
	CollectGarbage(ctx context.Context, keep image.Keep, cutoff time.Time, discard func(path string) error) error
	// has reports whether every one of layers is present (false for none).
	has(layers []string) bool
	// mount and unmount make and take down a root file system (both
	// idempotent); mounted reports whether target is one.
	mount(ctx context.Context, cfg image.RootfsConfig) error
	unmount(ctx context.Context, cfg image.RootfsConfig) error
	mounted(target string) bool
}

// hostImages is the image store of this host.
type hostImages struct{ *image.Store }

func (h hostImages) has(layers []string) bool { return h.LayersPresent(layers) }
func (hostImages) mount(ctx context.Context, cfg image.RootfsConfig) error {
	return image.MountRootfs(ctx, cfg)
}
func (hostImages) unmount(ctx context.Context, cfg image.RootfsConfig) error {
	return image.UnmountRootfs(ctx, cfg)
}
func (hostImages) mounted(target string) bool {
	m, err := image.Mounted(target)
	return err == nil && m
}

// agentDialer reaches environments' agents: a handshake to see one
// answers, and pooled connections for commands.
type agentDialer interface {
	probe(ctx context.Context, ep agentclient.Endpoint) error
	client(ctx context.Context, key string, ep agentclient.Endpoint) (execer, error)
	drop(key string)
}

// execer runs commands in an environment through its agent
// (*agentclient.Client).
type execer interface {
	Exec(ctx context.Context, req agentclient.ExecRequest) (int, error)
}

// agentPool dials agents over their unix sockets, keeping one connection
// per container for commands.
type agentPool struct{ *agentclient.Pool }

// probe completes an SSH handshake with the agent at ep (its own host
// key, its own client key).
func (agentPool) probe(ctx context.Context, ep agentclient.Endpoint) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	c, err := agentclient.Dial(ctx, ep)
	if err != nil {
		return err
	}
	return c.Close()
}
func (p agentPool) client(ctx context.Context, key string, ep agentclient.Endpoint) (execer, error) {
	return p.Get(ctx, key, ep)
}
func (p agentPool) drop(key string) { p.Drop(key) }

// clock is the time the runner's loops wait on.
type clock interface {
	Now() time.Time
	Since(t time.Time) time.Duration
	After(d time.Duration) <-chan time.Time
}

type realClock struct{}

func (realClock) Now() time.Time                         { return time.Now() }
func (realClock) Since(t time.Time) time.Duration        { return time.Since(t) }
func (realClock) After(d time.Duration) <-chan time.Time { return time.After(d) }

// gcLock keeps garbage collection away from work in progress on the image
// store and the feature caches (gc.go): such work holds it for reading
// (use); a collection round takes it for writing.
type gcLock struct{ mu sync.RWMutex }

// use holds the lock for reading until the returned func is called.
func (l *gcLock) use() func() {
	l.mu.RLock()
	return l.mu.RUnlock
}
