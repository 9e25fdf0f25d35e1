package runner

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/covedev/cove/internal/compose"
	"github.com/covedev/cove/internal/content"
	"github.com/covedev/cove/internal/devcontainer"
	"github.com/covedev/cove/internal/image"
	"github.com/covedev/cove/internal/usererr"
	covev1 "github.com/covedev/cove/proto/cove/v1"
)

// Paths inside every environment.
const (
	agentBinary  = "/.cove/bin/cove"
	agentRunDir  = "/.cove/run"
	agentEtcDir  = "/.cove/etc"
	workspaces   = "/workspaces"
	agentTimeout = 60 * time.Second
)

// apply runs steps in order. *stp is the environment's state (nil before
// prepare); steps update and persist it. progress reports sub-status
// changes in the background.
func (r *Runner) apply(ctx context.Context, w *worker, env *covev1.Environment, stp **envState, steps []step, progress, ready func()) error {
	lay := r.layout(env.Id)
	mark := func(sub **covev1.SubStatus, phase covev1.SubPhase, msg string) {
		w.sub(sub, phase, msg)
		progress()
	}
	for _, s := range steps {
		var err error
		began := time.Now()
		switch s {
		case stepPrepare:
			*stp, err = r.prepare(env.Id, lay)
		case stepClone:
			mark(&w.content, subInProgress, "cloning "+env.GetSpec().GetContent().GetGitUrl())
			err = r.clone(ctx, env, lay, *stp)
			if err != nil {
				mark(&w.content, subFailed, userMessage(err))
			} else {
				mark(&w.content, subReady, "")
			}
		case stepImage:
			mark(&w.machine, subInProgress, "pulling image")
			release := r.useStore() // until the state names what it uses (gc.go)
			err = r.pullImage(ctx, func(msg string) { mark(&w.machine, subInProgress, msg) }, env, lay, *stp)
			release()
		case stepMount:
			mark(&w.machine, subInProgress, "preparing root filesystem")
			release := r.useStore() // chowned layer copies (gc.go)
			if err = r.mount(ctx, lay, *stp); err == nil {
				err = r.mountServices(ctx, lay, *stp)
			}
			release()
		case stepStart:
			mark(&w.machine, subInProgress, "starting")
			err = r.start(ctx, env, lay, *stp, func(msg string) { mark(&w.machine, subInProgress, msg) })
		case stepWaitAgent:
			err = r.waitAgent(ctx, lay, *stp)
		case stepDevcontainer:
			err = r.runDevcontainer(ctx, w, env, lay, *stp, progress, ready)
		case stepStop:
			mark(&w.machine, subInProgress, "stopping")
			err = errors.Join(r.rt.Stop(ctx, env.Id, r.cfg.StopGrace), r.stopServices(ctx, env.Id, *stp))
		case stepDeleteContainer:
			err = errors.Join(r.rt.Delete(ctx, env.Id), r.deleteServices(ctx, env.Id, *stp))
		case stepUnmount:
			err = errors.Join(unstageEnvironment(lay), image.UnmountRootfs(ctx, r.rootfsConfig(lay, *stp)), r.unmountServices(ctx, lay, *stp))
		case stepRemove:
			err = r.remove(ctx, env.Id, lay, *stp)
		case stepReset:
			mark(&w.machine, subInProgress, "rebuilding")
			err = r.reset(lay, *stp, env.GetSpec().GetRebuildGeneration())
		}
		if err != nil {
			if s != stepClone {
				if msg, ok := usererr.Message(err); ok {
					mark(&w.machine, subFailed, msg)
				}
			}
			return fmt.Errorf("%s: %w", s, err)
		}
		r.log.Info("step done", "env", env.Id, "step", string(s), "took", time.Since(began))
	}
	return nil
}

func userMessage(err error) string {
	if msg, ok := usererr.Message(err); ok {
		return msg
	}
	return "internal error (see runner log)"
}

func (r *Runner) prepare(id string, lay layout) (*envState, error) {
	m, err := r.ranges.allocate(id)
	if err != nil {
		return nil, usererr.Wrap(err, "this runner is full: %v", err)
	}
	st := &envState{ID: id, IDMap: m}
	for _, d := range []string{lay.dir, lay.etc()} {
		if err := os.MkdirAll(d, 0o711); err != nil {
			r.ranges.release(m)
			return nil, err
		}
	}
	if err := protectEnvDir(lay, st); err != nil {
		r.ranges.release(m)
		return nil, err
	}
	if err := saveState(lay.state(), st); err != nil {
		r.ranges.release(m)
		return nil, err
	}
	return st, nil
}

func (r *Runner) clone(ctx context.Context, env *covev1.Environment, lay layout, st *envState) error {
	src := env.GetSpec().GetContent()
	if isLocalSource(src.GetGitUrl()) && !r.cfg.AllowLocalSources {
		return usererr.New("source %q is a local path, which this runner does not accept: use a git URL", src.GetGitUrl())
	}
	// git runs in the clone sandbox: only the host's programs and this
	// environment's workspace, and nothing it starts outlives it.
	opts := content.Options{WorkspaceDir: lay.workspace(), StagingDir: lay.staging(), IDMap: st.IDMap, Log: r.log.With("env", env.Id),
		Sandbox: []string{r.cfg.AgentBinary, "internal-sandbox"}}
	if r.cfg.Network != nil {
		// Clone from inside the environment's network: a URL reaches only
		// what the environment may, never the runner host's services.
		netns, err := r.attachNetwork(ctx, env.Id, env.GetMetadata().GetName(), env.GetSpec().GetClassId(), lay, st)
		if err != nil {
			return err
		}
		opts.NetNSPath, opts.ResolvConf = netns, lay.resolvConf()
	}
	repo, err := content.Clone(ctx, content.Source{GitURL: src.GetGitUrl(), Ref: src.GetRef()}, opts)
	if err != nil {
		return err
	}
	st.RepoName = filepath.Base(repo)
	st.ContentReady = true
	st.WorkspaceUser = "0:0" // Clone gives the tree to root inside
	return saveState(lay.state(), st)
}

// pullImage reads devcontainer.json (the image, and everything it asks),
// pulls the image, merges its metadata and prepares features.
func (r *Runner) pullImage(ctx context.Context, note func(string), env *covev1.Environment, lay layout, st *envState) error {
	repoDir, err := r.quiescentRepo(ctx, env.Id, lay, st)
	if err != nil {
		return err
	}
	cfg, warns, err := r.loadDevcontainer(env, repoDir)
	if err != nil {
		return err
	}
	ref := env.GetSpec().GetDefaultImage()
	if ref == "" {
		ref = r.cfg.DefaultImage
	}
	if cfg != nil && cfg.Image != "" {
		ref = cfg.Image
	}
	var img *image.Image
	var proj *compose.Project
	var composeWarns []compose.Warning
	st.Compose = nil
	cc, err := composeConfig(cfg)
	if err != nil {
		return err
	}
	if b, berr := dockerBuild(cfg); berr != nil {
		return berr
	} else if cc != nil {
		if proj, composeWarns, img, err = r.loadCompose(ctx, note, env, lay, st, cfg, cc); err != nil {
			return err
		}
		ref = img.Ref
	} else if b != nil {
		note("building " + b.Dockerfile)
		if img, err = r.buildImage(ctx, lay, st, devcontainerBuild(cfg, b), note); err != nil {
			return err
		}
		ref = "built from " + b.Dockerfile
	} else {
		if ref == "" {
			return usererr.New("no image: the repository has no devcontainer.json naming one and no default image is configured")
		}
		if img, err = r.images.Pull(ctx, ref); err != nil {
			return err
		}
	}
	st.Image, st.ImageDigest, st.Layers, st.Env, st.User = ref, img.Digest, img.Layers, img.Config.Env, img.Config.User
	if err := r.applyDevcontainer(ctx, env, lay, st, cfg, warns, img); err != nil {
		return err
	}
	if proj != nil {
		applyComposeDev(st.DC, proj, composeWarns)
	}
	if err := checkVolumes(lay, st); err != nil {
		return err
	}
	return saveState(lay.state(), st)
}

// composeConfig is cfg's Docker Compose configuration, if any.
func composeConfig(cfg *devcontainer.Config) (*devcontainer.ComposeConfig, error) {
	if cfg == nil {
		return nil, nil
	}
	return cfg.Compose()
}

// dockerBuild is cfg's Dockerfile configuration, if any.
func dockerBuild(cfg *devcontainer.Config) (*devcontainer.DockerBuild, error) {
	if cfg == nil {
		return nil, nil
	}
	return cfg.DockerBuild()
}

func (r *Runner) rootfsConfig(lay layout, st *envState) image.RootfsConfig {
	cfg := image.RootfsConfig{UpperDir: lay.upper(), WorkDir: lay.work(), LowerDir: lay.lower(), Target: lay.rootfs()}
	if st != nil {
		cfg.Layers, cfg.IDMap = st.Layers, st.IDMap
	}
	return cfg
}

// mount prepares the root filesystem and, the first time, gives the
// workspace to the environment's user.
func (r *Runner) mount(ctx context.Context, lay layout, st *envState) error {
	if err := image.MountRootfs(ctx, r.rootfsConfig(lay, st)); err != nil {
		return err
	}
	uid, gid, err := lookupUser(lay.rootfs(), st.User)
	if err != nil {
		return err
	}
	want := fmt.Sprintf("%d:%d", uid, gid)
	if st.WorkspaceUser == want {
		return nil
	}
	if err := content.Chown(ctx, lay.workspace(), st.IDMap, uid, gid); err != nil {
		return fmt.Errorf("give workspace to %s: %w", want, err)
	}
	st.WorkspaceUser = want
	return saveState(lay.state(), st)
}

// remove deletes the environment's disk state and frees its uid range. It
// refuses to cross into anything still mounted (shared image layers).
func (r *Runner) remove(ctx context.Context, id string, lay layout, st *envState) error {
	if err := r.detachNetwork(ctx, id); err != nil {
		return err
	}
	if err := unstageEnvironment(lay); err != nil {
		return err
	}
	// The overlays and the layers' views below them, whatever the plan
	// saw (a runner that died between unmounting the overlay and its
	// lower views leaves only the latter).
	if err := errors.Join(image.UnmountRootfs(ctx, r.rootfsConfig(lay, st)), r.unmountServices(ctx, lay, st)); err != nil {
		return err
	}
	if err := checkNoMounts(lay.dir); err != nil {
		return err
	}
	if err := os.RemoveAll(lay.dir); err != nil {
		return fmt.Errorf("remove %s: %w", lay.dir, err)
	}
	if st != nil {
		r.ranges.release(st.IDMap)
	}
	return nil
}

// reset discards the container's file system (the overlay upper and work
// dirs) so it is rebuilt from the image and devcontainer.json; the
// workspace stays. The new generation is recorded first: a crash after it
// just continues with a fresh build.
func (r *Runner) reset(lay layout, st *envState, generation int64) error {
	svcDir := filepath.Join(lay.dir, "svc") // every service's file system
	if err := unstageEnvironment(lay); err != nil {
		return err
	}
	for _, d := range []string{lay.upper(), lay.work(), svcDir} {
		if err := checkNoMounts(d); err != nil {
			return err
		}
	}
	st.BuiltGeneration = generation
	st.ImageDigest, st.Layers, st.DC, st.Compose = "", nil, nil, nil
	if err := saveState(lay.state(), st); err != nil {
		return err
	}
	for _, d := range []string{lay.upper(), lay.work(), svcDir} {
		if err := os.RemoveAll(d); err != nil {
			return fmt.Errorf("reset %s: %w", d, err)
		}
	}
	return nil
}

func tail(path string, n int) string {
	b, err := readTail(path, int64(n)+4096) // logcap.go
	if err != nil {
		return "(no output)"
	}
	s := strings.TrimSpace(string(b))
	if len(s) > n {
		s = "…" + s[len(s)-n:]
	}
	if s == "" {
		return "(no output)"
	}
	return s
}
