package runner

import (
	"context"
	"fmt"
	"path/filepath"

	"github.com/covedev/cove/internal/compose"
	"github.com/covedev/cove/internal/devcontainer"
	"github.com/covedev/cove/internal/envconfig"
	"github.com/covedev/cove/internal/envdir"
	"github.com/covedev/cove/internal/image"
	"github.com/covedev/cove/internal/usererr"
	covev1 "github.com/covedev/cove/proto/cove/v1"
)

// loadCompose loads the compose files of cfg (cc is its Compose
// configuration) and pulls or builds every service's image, the dev
// service's included: envconfig resolves the services from them.
func (im *imageStep) loadCompose(ctx context.Context, note func(string), env *covev1.Environment, lay envdir.Layout, st *envState, cfg *devcontainer.Config, cc *devcontainer.ComposeConfig) (*envconfig.ComposeInput, envconfig.Image, error) {
	if !im.net.n.Namespaced() {
		return nil, envconfig.Image{}, usererr.New("dockerComposeFile: this runner has no environment networking configured, which Docker Compose services need to reach each other")
	}
	repoDir := filepath.Join(lay.Workspace(), st.Content.RepoName)
	proj, warns, err := compose.LoadWithOptions(ctx, compose.Options{
		RepoDir: repoDir, ConfigDir: filepath.Dir(cfg.Path), Files: cc.Files,
		DevService: cc.Service, RunServices: cc.RunServices,
		Env:         map[string]string{}, // never the runner's environment
		AllowedCaps: envconfig.Capabilities,
		// "..:/workspaces" and the like: any directory of the checkout.
		BindRoot: lay.Workspace(),
	})
	if err != nil {
		return nil, envconfig.Image{}, err
	}
	in := &envconfig.ComposeInput{Project: proj, Warnings: warns, Images: map[string]envconfig.Image{}}
	var dev envconfig.Image
	for _, s := range proj.Services {
		if !envconfig.ValidServiceName(s.Name) {
			// compose.Load refuses these already; the name becomes a
			// directory of the runner's, so check again before a pull.
			return nil, envconfig.Image{}, usererr.New("docker compose: invalid service name %q", s.Name)
		}
		img, err := im.serviceImage(ctx, note, env.GetMetadata().GetOrganizationId(), lay, st, s)
		if err != nil {
			return nil, envconfig.Image{}, err
		}
		if s.Name == proj.DevService {
			dev = imageOf(img, img.Ref)
			continue
		}
		// Refused before the next pull if it cannot run.
		if _, err := envconfig.NewServiceState(s, imageOf(img, img.Ref)); err != nil {
			return nil, envconfig.Image{}, err
		}
		in.Images[s.Name] = imageOf(img, img.Ref)
	}
	return in, dev, nil
}

// serviceImage pulls or builds a service's image.
func (im *imageStep) serviceImage(ctx context.Context, note func(string), org string, lay envdir.Layout, st *envState, s compose.Service) (*image.Image, error) {
	if b := s.Build; b != nil {
		note(fmt.Sprintf("building service %s", s.Name))
		img, err := im.buildImage(ctx, org, lay, st, buildSpec{Context: b.Context, Dockerfile: filepath.Join(b.Context, b.Dockerfile), Target: b.Target, Args: b.Args}, note)
		if err != nil {
			return nil, fmt.Errorf("service %s: %w", s.Name, err)
		}
		img.Ref = "built for service " + s.Name
		return img, nil
	}
	if s.Image == "" {
		return nil, usererr.New("docker compose: service %q has neither image nor build", s.Name)
	}
	note(fmt.Sprintf("pulling %s for service %s", s.Image, s.Name))
	img, err := im.images.Pull(ctx, s.Image)
	if err != nil {
		if msg, ok := usererr.Message(err); ok {
			return nil, usererr.Wrap(err, "service %s: %s", s.Name, msg)
		}
		return nil, fmt.Errorf("service %s: %w", s.Name, err)
	}
	return img, nil
}
