package build

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	bkclient "github.com/moby/buildkit/client"
	"github.com/moby/buildkit/exporter/containerimage/exptypes"
	"github.com/moby/buildkit/util/progress/progressui"
	"github.com/tonistiigi/fsutil"
	"golang.org/x/sync/errgroup"

	"github.com/covedev/cove/internal/errdefs"
	"github.com/covedev/cove/internal/usererr"
)

// Request is one Dockerfile build.
type Request struct {
	// ContextDir is the build context directory. Required.
	ContextDir string
	// Dockerfile is the Dockerfile's path; ContextDir/Dockerfile when empty.
	// It may lie outside ContextDir (devcontainer.json's build.dockerfile is
	// relative to the devcontainer.json, its context often "..").
	Dockerfile string
	// Target is the stage to build; the last stage when empty.
	Target string
	// Args are build arguments (ARG values).
	Args map[string]string
	// Labels are added to the image configuration.
	Labels map[string]string
	// CacheFrom are image references whose build cache BuildKit may reuse
	// (registry cache import, like `docker build --cache-from`). Ignored,
	// with a warning in Log, unless Config.AllowCacheFrom.
	CacheFrom []string
	// CacheNamespace keeps `RUN --mount=type=cache` contents apart: builds
	// see only cache mounts made under the same namespace. Required; the
	// runner uses one per organization (see tenancy.go).
	CacheNamespace string
	// NoCache ignores BuildKit's cache for every step.
	NoCache bool
	// NoNetwork runs every RUN step without a network (only loopback), like
	// `docker build --network=none`. Otherwise RUN steps get the network of
	// Config.NetworkMode.
	NoNetwork bool
	// OutputDir receives the result as an OCI image layout. Required; it is
	// created when missing. Layouts may be shared between builds: blobs are
	// content-addressed.
	OutputDir string
	// Log receives the build's progress in BuildKit's plain format (steps,
	// CACHED markers, RUN output). Optional.
	Log io.Writer
}

// Result is a built image.
type Result struct {
	// Layout is the OCI image layout directory holding the image.
	Layout string
	// Digest is the image manifest's digest.
	Digest v1.Hash
	// Image is the built image, read from Layout.
	Image v1.Image
}

// Build builds req with buildkitd, starting (or restarting) it when needed.
// A failing step returns a usererr error naming the step, its Dockerfile
// line and the tail of its output.
func (b *Builder) Build(ctx context.Context, req Request) (*Result, error) {
	if req.ContextDir == "" || req.OutputDir == "" {
		return nil, errors.New("build: ContextDir and OutputDir are required")
	}
	if err := checkNamespace(req.CacheNamespace); err != nil {
		return nil, err
	}
	if err := checkArgs(req.Args); err != nil {
		return nil, err
	}
	c, err := b.getClient(ctx)
	if err != nil {
		// The builder is stopped, or buildkitd does not start or answer:
		// not the Dockerfile's fault, and it may come back.
		return nil, errdefs.Unavailable(err)
	}
	dockerfile := req.Dockerfile
	if dockerfile == "" {
		dockerfile = filepath.Join(req.ContextDir, "Dockerfile")
	}
	if st, err := os.Stat(req.ContextDir); err != nil || !st.IsDir() {
		return nil, errdefs.InvalidArgument(usererr.New("build context %s is not a directory", req.ContextDir))
	}
	if _, err := os.Stat(dockerfile); err != nil {
		return nil, errdefs.NotFound(usererr.New("Dockerfile %s not found", dockerfile))
	}
	contextFS, err := fsutil.NewFS(req.ContextDir)
	if err != nil {
		return nil, fmt.Errorf("build context: %w", err)
	}
	dockerfileFS, err := fsutil.NewFS(filepath.Dir(dockerfile))
	if err != nil {
		return nil, fmt.Errorf("dockerfile dir: %w", err)
	}
	if err := os.MkdirAll(req.OutputDir, 0o755); err != nil {
		return nil, fmt.Errorf("output dir: %w", err)
	}

	attrs := map[string]string{
		"filename": filepath.Base(dockerfile),
		// Present (even empty) "cmdline" makes the Dockerfile frontend
		// ignore `# syntax=` and BUILDKIT_SYNTAX: nothing is pulled to
		// parse a Dockerfile.
		"cmdline": "",
	}
	if req.Target != "" {
		attrs["target"] = req.Target
	}
	for k, v := range req.Args {
		attrs["build-arg:"+k] = v
	}
	attrs[cacheNSArg] = req.CacheNamespace
	for k, v := range req.Labels {
		attrs["label:"+k] = v
	}
	if req.NoNetwork {
		attrs["force-network-mode"] = "none"
	}
	if req.NoCache {
		attrs["no-cache"] = ""
	}
	var cacheImports []bkclient.CacheOptionsEntry
	if len(req.CacheFrom) > 0 && !b.cfg.AllowCacheFrom {
		warnCacheFrom(writerOrDiscard(req.Log))
		b.log.InfoContext(ctx, "build.cacheFrom ignored (--build-allow-cache-from is off)", "refs", len(req.CacheFrom))
	} else {
		for _, ref := range req.CacheFrom {
			cacheImports = append(cacheImports, bkclient.CacheOptionsEntry{Type: "registry", Attrs: map[string]string{"ref": ref}})
		}
	}

	opt := bkclient.SolveOpt{
		Frontend:      "dockerfile.v0",
		FrontendAttrs: attrs,
		LocalMounts:   map[string]fsutil.FS{"context": contextFS, "dockerfile": dockerfileFS},
		CacheImports:  cacheImports,
		Exports: []bkclient.ExportEntry{{
			Type:      bkclient.ExporterOCI,
			Attrs:     map[string]string{"tar": "false"},
			OutputDir: req.OutputDir,
		}},
	}

	prog := newProgress()
	statusCh := make(chan *bkclient.SolveStatus)
	displayCh := make(chan *bkclient.SolveStatus)
	display, err := progressui.NewDisplay(writerOrDiscard(req.Log), progressui.PlainMode)
	if err != nil {
		return nil, fmt.Errorf("progress display: %w", err)
	}

	var resp *bkclient.SolveResponse
	var solveErr error
	var eg errgroup.Group
	eg.Go(func() error {
		resp, solveErr = c.Solve(ctx, nil, opt, statusCh) // closes statusCh
		return nil
	})
	eg.Go(func() error {
		defer close(displayCh)
		for s := range statusCh {
			prog.record(s)
			displayCh <- s
		}
		return nil
	})
	eg.Go(func() error {
		// The display only fails on a broken writer; keep draining so that
		// the solve never blocks on its status channel.
		if _, err := display.UpdateFrom(context.WithoutCancel(ctx), displayCh); err != nil {
			for range displayCh {
			}
		}
		return nil
	})
	_ = eg.Wait()
	if solveErr != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("build: %w", ctx.Err())
		}
		return nil, prog.buildError(solveErr)
	}
	return loadResult(req.OutputDir, resp)
}

// loadResult finds the exported image in the layout.
func loadResult(dir string, resp *bkclient.SolveResponse) (*Result, error) {
	dgst := resp.ExporterResponse[exptypes.ExporterImageDigestKey]
	if dgst == "" {
		return nil, errors.New("build: exporter returned no image digest")
	}
	h, err := v1.NewHash(dgst)
	if err != nil {
		return nil, fmt.Errorf("build: image digest %q: %w", dgst, err)
	}
	p, err := layout.FromPath(dir)
	if err != nil {
		return nil, fmt.Errorf("open layout %s: %w", dir, err)
	}
	idx, err := p.ImageIndex()
	if err != nil {
		return nil, fmt.Errorf("layout index: %w", err)
	}
	img, h, err := imageFor(idx, h)
	if err != nil {
		return nil, err
	}
	return &Result{Layout: dir, Digest: h, Image: img}, nil
}

// imageFor returns the image with digest h from idx; when h names an index
// (a multi-platform or attested result), its first image manifest.
func imageFor(idx v1.ImageIndex, h v1.Hash) (v1.Image, v1.Hash, error) {
	im, err := idx.IndexManifest()
	if err != nil {
		return nil, h, fmt.Errorf("layout index: %w", err)
	}
	for _, d := range im.Manifests {
		if d.Digest != h {
			continue
		}
		if d.MediaType.IsIndex() {
			child, err := idx.ImageIndex(h)
			if err != nil {
				return nil, h, fmt.Errorf("image index %s: %w", h, err)
			}
			cm, err := child.IndexManifest()
			if err != nil {
				return nil, h, err
			}
			for _, cd := range cm.Manifests {
				if cd.MediaType.IsImage() && (cd.Platform == nil || cd.Platform.OS != "unknown") {
					img, err := child.Image(cd.Digest)
					return img, cd.Digest, err
				}
			}
			return nil, h, fmt.Errorf("image index %s has no image", h)
		}
		img, err := idx.Image(h)
		if err != nil {
			return nil, h, fmt.Errorf("image %s: %w", h, err)
		}
		return img, h, nil
	}
	return nil, h, fmt.Errorf("image %s not in layout index", h)
}
