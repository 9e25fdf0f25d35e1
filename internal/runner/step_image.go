package runner

import (
	"context"
	"log/slog"

	"github.com/covedev/cove/internal/build"
	"github.com/covedev/cove/internal/runtime"
)

// imageStep reads the repository's configuration, pulls or builds the
// images it names and prepares features. It runs only with the
// environment's containers stopped (quiescentRepo).
type imageStep struct {
	rt           runtime.Runtime
	images       imageStore
	net          envNet
	builds       imageBuilder
	classes      classes
	dataDir      string // the features cache and layers live under it
	defaultImage string
	gc           *gcLock
	log          *slog.Logger
}

// imageBuilder builds Dockerfiles (builders: BuildKit, made at the first
// build).
type imageBuilder interface {
	enabled() bool
	Build(ctx context.Context, req build.Request) (*build.Result, error)
}

func (im *imageStep) run(ctx context.Context, e *stepEnv) error {
	e.rep.sub(subMachine, subInProgress, "pulling image")
	release := im.gc.use() // until the state names what it uses (gc.go)
	defer release()
	return im.pullImage(ctx, func(msg string) { e.rep.sub(subMachine, subInProgress, msg) }, e)
}
