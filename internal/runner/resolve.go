package runner

import (
	"context"
	"strings"

	"github.com/covedev/cove/internal/compose"
	"github.com/covedev/cove/internal/devcontainer"
	"github.com/covedev/cove/internal/envdir"
	"github.com/covedev/cove/internal/image"
	"github.com/covedev/cove/internal/usererr"
)

// Paths inside every environment.
const (
	agentBinary = "/.cove/bin/cove"
	agentRunDir = "/.cove/run"
	agentEtcDir = "/.cove/etc"
	workspaces  = "/workspaces"
)

// pullImage reads devcontainer.json (the image, and everything it asks),
// pulls the image, merges its metadata and prepares features.
func (im *imageStep) pullImage(ctx context.Context, note func(string), e *stepEnv) error {
	env, lay, st := e.env, e.lay, e.st
	repoDir, err := im.quiescentRepo(ctx, env.Id, lay, st)
	if err != nil {
		return err
	}
	cfg, warns, err := im.loadDevcontainer(env, repoDir)
	if err != nil {
		return err
	}
	ref := env.GetSpec().GetDefaultImage()
	if ref == "" {
		ref = im.defaultImage
	}
	if cfg != nil && cfg.Image != "" {
		ref = cfg.Image
	}
	var img *image.Image
	var proj *compose.Project
	var composeWarns []compose.Warning
	st.Image.Compose = nil
	cc, err := composeConfig(cfg)
	if err != nil {
		return err
	}
	if b, berr := dockerBuild(cfg); berr != nil {
		return berr
	} else if cc != nil {
		if proj, composeWarns, img, err = im.loadCompose(ctx, note, env, lay, st, cfg, cc); err != nil {
			return err
		}
		ref = img.Ref
	} else if b != nil {
		note("building " + b.Dockerfile)
		if img, err = im.buildImage(ctx, env.GetMetadata().GetOrganizationId(), lay, st, devcontainerBuild(cfg, b), note); err != nil {
			return err
		}
		ref = "built from " + b.Dockerfile
	} else {
		if ref == "" {
			return usererr.New("no image: the repository has no devcontainer.json naming one and no default image is configured")
		}
		if img, err = im.images.Pull(ctx, ref); err != nil {
			return err
		}
	}
	st.Image.Ref, st.Image.Digest, st.Image.Layers, st.Image.Env, st.Image.User = ref, img.Digest, img.Layers, img.Config.Env, img.Config.User
	if err := im.applyDevcontainer(ctx, env, lay, st, cfg, warns, img); err != nil {
		return err
	}
	if proj != nil {
		applyComposeDev(st.Image.DC, proj, composeWarns)
	}
	return checkVolumes(lay, st)
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
