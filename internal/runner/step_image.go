package runner

import (
	"context"
	"log/slog"

	"github.com/covedev/cove/internal/runtime"
)

// imageState is the image step's section: the image and everything the
// repository's configuration (devcontainer.json, merged with image and
// feature metadata; a Compose project) resolved to.
type imageState struct {
	Ref     string        `json:"ref,omitempty"`
	Digest  string        `json:"digest,omitempty"`
	Layers  []string      `json:"layers,omitempty"`
	User    string        `json:"user,omitempty"` // user sessions run as
	Env     []string      `json:"env,omitempty"`
	DC      *dcState      `json:"devcontainer,omitempty"`
	Compose *composeState `json:"compose,omitempty"`
}

// imageStep reads the repository's configuration, pulls or builds the
// images it names and prepares features. It runs only with the
// environment's containers stopped (quiescentRepo).
type imageStep struct {
	rt           runtime.Runtime
	images       imageStore
	net          envNet
	builds       *builders
	classes      classes
	dataDir      string // the features cache and layers live under it
	defaultImage string
	gc           *gcLock
	log          *slog.Logger
}

func (im *imageStep) run(ctx context.Context, e *stepEnv) error {
	e.rep.sub(subMachine, subInProgress, "pulling image")
	release := im.gc.use() // until the state names what it uses (gc.go)
	defer release()
	return im.pullImage(ctx, func(msg string) { e.rep.sub(subMachine, subInProgress, msg) }, e)
}
