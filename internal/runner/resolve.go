package runner

import (
	"context"
	"os"
	"path/filepath"
	"strings"

	"github.com/covedev/cove/internal/compose"
	"github.com/covedev/cove/internal/devcontainer"
	"github.com/covedev/cove/internal/envconfig"
	"github.com/covedev/cove/internal/envdir"
	"github.com/covedev/cove/internal/features"
	"github.com/covedev/cove/internal/guest"
	"github.com/covedev/cove/internal/image"
	"github.com/covedev/cove/internal/usererr"
	covev1 "github.com/covedev/cove/proto/cove/v1"
)

// pullImage reads the repository's configuration, gets what it names onto
// the host (images pulled or built, Compose services' images, features) and
// has envconfig resolve the rest; then it keys the features and stages them
// for installation unless a cached layer has them.
func (im *imageStep) pullImage(ctx context.Context, note func(string), e *stepEnv) error {
	env, lay, st := e.env, e.lay, e.st
	repoDir, err := im.quiescentRepo(ctx, env.Id, lay, st)
	if err != nil {
		return err
	}
	allow := im.allow()
	cfg, warns, err := devcontainer.Load(repoDir, env.GetSpec().GetDevcontainerPath(), devcontainer.LoadOptions{
		LocalWorkspaceFolder: repoDir, DevcontainerID: env.Id, Allow: allow,
		LocalEnv: localEnv(env), // what the creating CLI sent, never the runner's own environment
	})
	if err != nil {
		return err
	}
	warns = append(warns, unsentLocalEnv(cfg, env)...)
	in := envconfig.Input{Identity: identity(env, st), Class: im.classes.resolution(env.GetSpec().GetClassId(), allow), Allow: allow,
		Config: cfg, Warnings: warns, RepoDir: repoDir, Classes: im.classes.resolutions(allow)}
	cc, err := composeConfig(cfg)
	if err != nil {
		return err
	}
	b, err := dockerBuild(cfg)
	if err != nil {
		return err
	}
	switch {
	case cc != nil:
		if in.Compose, in.Image, err = im.loadCompose(ctx, note, env, lay, st, cfg, cc); err != nil {
			return err
		}
	case b != nil:
		note("building " + b.Dockerfile)
		img, err := im.buildImage(ctx, env.GetMetadata().GetOrganizationId(), lay, st, devcontainerBuild(cfg, b), note)
		if err != nil {
			return err
		}
		in.Image = imageOf(img, "built from "+b.Dockerfile)
	default:
		ref := env.GetSpec().GetDefaultImage()
		if ref == "" {
			ref = im.defaultImage
		}
		if cfg != nil && cfg.Image != "" {
			ref = cfg.Image
		}
		if ref == "" {
			return usererr.New("no image: the repository has no devcontainer.json naming one and no default image is configured")
		}
		img, err := im.images.Pull(ctx, ref)
		if err != nil {
			return err
		}
		in.Image = imageOf(img, ref)
	}
	var fs []features.Feature
	if cfg != nil && len(cfg.Features) > 0 {
		// The image's metadata label is read first: a bad one is the
		// image's fault, whatever the features.
		if _, err := devcontainer.ParseImageMetadata(in.Image.Config.Labels["devcontainer.metadata"]); err != nil {
			return usererr.Wrap(err, "image %s: devcontainer.metadata label: %v", in.Image.Ref, err)
		}
		if fs, in.Features, err = im.resolveFeatures(ctx, env, repoDir, cfg); err != nil {
			return err
		}
	}
	res, err := envconfig.Resolve(in)
	if err != nil {
		return err
	}
	st.Image = res.Resolved
	if res.Features == nil {
		return nil
	}
	return im.prepareFeatures(ctx, lay, st, fs, res.Features)
}

// resolveFeatures fetches cfg's features (registry, tarball, local) into
// the features cache and returns them in install order, with their
// metadata for envconfig.
func (im *imageStep) resolveFeatures(ctx context.Context, env *covev1.Environment, repoDir string, cfg *devcontainer.Config) ([]features.Feature, []envconfig.Feature, error) {
	var refs []features.Ref
	for _, f := range cfg.Features {
		refs = append(refs, features.Ref{ID: f.ID, Options: f.Options})
	}
	res := &features.Resolver{CacheDir: filepath.Join(im.dataDir, "features"), RootDir: repoDir, Log: im.log.With("env", env.Id)}
	fs, err := res.Resolve(ctx, refs, filepath.Dir(cfg.Path), cfg.OverrideFeatureInstallOrder)
	if err != nil {
		return nil, nil, err
	}
	features.MarkUsed(fs) // the cache's garbage collection counts from the last use
	out, err := envconfigFeatures(fs)
	return fs, out, err
}

// prepareFeatures keys the features: a cached layer with the key is added
// to the image's layers; else they are staged for the features step to
// install at the first start.
func (im *imageStep) prepareFeatures(ctx context.Context, lay envdir.Layout, st *envState, fs []features.Feature, fi *envconfig.FeatureInstall) error {
	dc := st.Image.DC
	dc.FeaturesKey = features.CacheKey(fi.Scope, fi.Inputs, fs)
	dc.Features = installedFeatures(fs)
	if layer := featuresLayer(im.dataDir, dc.FeaturesKey); dirExists(layer) {
		st.Image.Layers = append(st.Image.Layers, layer) // installed before: reuse
		return logFeaturesReused(lay, dc.FeaturesKey, dc.Features)
	}
	dc.FeaturesPending = true
	if err := os.RemoveAll(lay.Features()); err != nil {
		return err
	}
	if err := features.Stage(ctx, fs, lay.Features(), int(st.IDMap.HostID), int(st.IDMap.HostID)); err != nil {
		return err
	}
	script := features.InstallScript(fs, guest.FeaturesDir, fi.RemoteUser, fi.ContainerUser)
	return os.WriteFile(filepath.Join(lay.Features(), "install.sh"), []byte(script), 0o644)
}

// identity is who the environment is, for resolution.
func identity(env *covev1.Environment, st *envState) envconfig.Identity {
	md := env.GetMetadata()
	return envconfig.Identity{ID: env.GetId(), Name: md.GetName(), RepoName: st.Content.RepoName,
		OrganizationID: md.GetOrganizationId(), ProjectID: md.GetProjectId(), GitURL: env.GetSpec().GetContent().GetGitUrl()}
}

// imageOf is img as resolution reads it, recorded as ref.
func imageOf(img *image.Image, ref string) envconfig.Image {
	c := img.Config
	out := envconfig.Image{Ref: ref, Digest: img.Digest, Layers: img.Layers, Config: envconfig.ImageConfig{
		User: c.User, Env: c.Env, Entrypoint: c.Entrypoint, Cmd: c.Cmd, WorkingDir: c.WorkingDir, Labels: c.Labels}}
	if h := c.Healthcheck; h != nil {
		out.Config.Healthcheck = &envconfig.ImageHealthcheck{Test: h.Test, Interval: h.Interval, Timeout: h.Timeout, StartPeriod: h.StartPeriod, Retries: h.Retries}
	}
	return out
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

// rootfsConfig describes the dev container's root file system.
func rootfsConfig(lay envdir.Layout, st *envState) image.RootfsConfig {
	cfg := image.RootfsConfig{UpperDir: lay.Upper(), WorkDir: lay.Work(), LowerDir: lay.Lower(), Target: lay.Rootfs()}
	if st != nil {
		cfg.Layers, cfg.IDMap = st.Image.Layers, st.IDMap
	}
	return cfg
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

var _ = compose.Options{}
