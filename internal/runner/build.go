package runner

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/covedev/cove/internal/build"
	"github.com/covedev/cove/internal/devcontainer"
	"github.com/covedev/cove/internal/envdir"
	"github.com/covedev/cove/internal/idmap"
	"github.com/covedev/cove/internal/image"
	"github.com/covedev/cove/internal/resources"
	"github.com/covedev/cove/internal/usererr"
)

// builderNetID names the network attachment Dockerfile builds run in: like
// an environment's, with the default class's egress policy, so a RUN step
// reaches what an environment may and nothing on the host.
const builderNetID = "cove-builder"

// builders makes the Dockerfile builder at the first build (buildkitd and
// its network cost nothing until then) and stops it with the runner.
type builders struct {
	cfg     Config
	net     network
	classes classes
	log     *slog.Logger

	mu   sync.Mutex
	b    *build.Builder
	work *resources.WorkCgroup // the builder's limited cgroup (workcgroup.go)
}

// Build builds req with the builder, made at the first call.
func (bs *builders) Build(ctx context.Context, req build.Request) (*build.Result, error) {
	b, err := bs.get(ctx)
	if err != nil {
		return nil, err
	}
	return b.Build(ctx, req)
}

// enabled reports whether this runner can build Dockerfiles.
func (bs *builders) enabled() bool { return bs.cfg.Buildkitd != "" }

// stop stops the builder, if made, and releases its network.
func (bs *builders) stop() {
	bs.mu.Lock()
	b, work := bs.b, bs.work
	bs.b, bs.work = nil, nil
	bs.mu.Unlock()
	if b == nil {
		// A work cgroup an earlier runner process left (it was killed)
		// goes too, unless its buildkitd still runs in it.
		if bs.cfg.CgroupParent != "" {
			removeIdleWorkCgroup(bs.log, bs.cfg.CgroupParent, "build")
		}
		return
	}
	sctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	_ = b.Stop(sctx)
	_ = bs.net.Teardown(sctx, builderNetID)
	if work != nil {
		removeWorkCgroup(bs.log, work)
	}
}

// get returns the builder, making it (and its network) the first time.
func (bs *builders) get(ctx context.Context) (*build.Builder, error) {
	bs.mu.Lock()
	defer bs.mu.Unlock()
	if bs.b != nil {
		return bs.b, nil
	}
	if !bs.enabled() {
		return nil, usererr.New("this runner cannot build Dockerfiles (no buildkitd configured); use \"image\"")
	}
	c := bs.cfg
	cfg := build.Config{Dir: filepath.Join(c.DataDir, "buildkit"), Buildkitd: c.Buildkitd, Runc: c.Runc,
		IDMap:              builderRange(c),
		InsecureRegistries: c.BuildInsecureRegistries, AllowCacheFrom: c.BuildAllowCacheFrom,
		Logger: bs.log.With("component", "build")}
	if bs.net.Namespaced() {
		class := ""
		if len(bs.classes) > 0 {
			class = bs.classes[0].GetId()
		}
		att, err := bs.net.Setup(ctx, builderNetID, "builder", bs.classes.policy(class), idmap.Range{})
		if err != nil {
			return nil, fmt.Errorf("builder network: %w", err)
		}
		cfg.NetNSPath, cfg.NetworkMode = att.NetNSPath, "host"
		// buildkitd and its RUN steps read /etc/resolv.conf: give them the
		// builder namespace's (the runner's DNS relay), not the host's, which
		// may name a loopback resolver unreachable from there.
		resolv := filepath.Join(c.DataDir, "buildkit-resolv.conf")
		if err := os.WriteFile(resolv, []byte(att.ResolvConf), 0o644); err != nil {
			return nil, err
		}
		cfg.Wrapper = []string{c.AgentBinary, "internal-with-resolv", resolv, "--"}
	} else {
		// Without networking, RUN steps get none rather than the host's.
		cfg.NetworkMode = "none"
	}
	if c.CgroupParent != "" && c.BuildLimits != nil {
		// buildkitd and every RUN step in a limited cgroup of their own.
		work, err := workCgroup(bs.log, c.CgroupParent, "build", c.DataDir, *c.BuildLimits)
		if err != nil {
			return nil, fmt.Errorf("builder's cgroup: %w", err)
		}
		bs.work = work
		cfg.Place = work.Add
	}
	b, err := build.New(cfg)
	if err != nil {
		if bs.work != nil {
			removeWorkCgroup(bs.log, bs.work)
			bs.work = nil
		}
		return nil, err
	}
	bs.b = b
	return b, nil
}

// buildSpec is one image build: paths are absolute host paths inside the
// repository, not yet resolved.
type buildSpec struct {
	Context, Dockerfile string
	Target              string
	Args, Labels        map[string]string
	CacheFrom           []string
}

// devcontainerBuild is devcontainer.json's Dockerfile configuration as a
// buildSpec (its paths are relative to the folder of devcontainer.json).
func devcontainerBuild(cfg *devcontainer.Config, b *devcontainer.DockerBuild) buildSpec {
	cfgDir := filepath.Dir(cfg.Path)
	return buildSpec{Context: filepath.Join(cfgDir, b.Context), Dockerfile: filepath.Join(cfgDir, b.Dockerfile),
		Target: b.Target, Args: b.Args, Labels: b.Labels, CacheFrom: b.CacheFrom}
}

// buildImage builds a Dockerfile and imports the result into the layer
// store. BuildKit caches every step: building the same Dockerfile, context
// and args again does no work, and a changed line rebuilds from that step.
func (im *imageStep) buildImage(ctx context.Context, org string, lay envdir.Layout, st *envState, b buildSpec, onStep func(string)) (*image.Image, error) {
	cacheNS, err := buildCacheNamespace(org, st.ID)
	if err != nil {
		return nil, err
	}
	// Checked by quiescentRepo: a real directory, and nothing of the
	// environment runs to change the tree while it is read.
	repoDir := filepath.Join(lay.Workspace(), st.Content.RepoName)
	// BuildKit reads these paths with symlinks resolved: resolve them first,
	// so a link in the repository cannot point the build at host files.
	var resolved []string
	for _, p := range []string{b.Context, b.Dockerfile} {
		real, err := filepath.EvalSymlinks(p)
		if err != nil {
			return nil, usererr.New("build: %s: %v", strings.TrimPrefix(p, filepath.Join(lay.Workspace(), st.Content.RepoName)+"/"), errors.Unwrap(err))
		}
		if !within(repoDir, real) {
			return nil, usererr.New("build: %s is outside the repository", strings.TrimPrefix(p, filepath.Join(lay.Workspace(), st.Content.RepoName)+"/"))
		}
		resolved = append(resolved, real)
	}
	contextDir, dockerfile := resolved[0], resolved[1]
	if fi, err := os.Stat(dockerfile); err != nil || !fi.Mode().IsRegular() {
		// A FIFO or a device would block or flood the runner's read.
		return nil, usererr.New("build: %s is not a regular file", strings.TrimPrefix(dockerfile, repoDir+"/"))
	}
	if err := os.MkdirAll(lay.LogDir(), 0o755); err != nil {
		return nil, err
	}
	logf, err := os.OpenFile(lay.LogFile(), os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	out := filepath.Join(lay.Dir, "build")
	if err := os.RemoveAll(out); err != nil {
		return nil, err
	}
	defer os.RemoveAll(out)
	fmt.Fprintf(logf, "Building %s...\n", strings.TrimPrefix(dockerfile, repoDir+"/"))
	res, err := im.builds.Build(ctx, build.Request{ContextDir: contextDir, Dockerfile: dockerfile, Target: b.Target,
		Args: b.Args, Labels: b.Labels, CacheFrom: b.CacheFrom, CacheNamespace: cacheNS, OutputDir: out,
		Log: io.MultiWriter(logf, &stepWriter{onStep: onStep})})
	if err != nil {
		return nil, err
	}
	return im.images.Import(ctx, "cove-build/"+res.Digest.Hex[:16]+":latest", res.Image)
}

// buildCacheNamespace is the BuildKit cache-mount namespace of an
// environment's builds: its organization's, so organizations never share
// the contents of `RUN --mount=type=cache` directories (see
// internal/build/tenancy.go).
func buildCacheNamespace(org, envID string) (string, error) {
	if org == "" {
		return "", fmt.Errorf("build for environment %s: its organization is unknown", envID)
	}
	return "org-" + org, nil
}

// builderRange is the host id range rootless buildkitd runs as: the last
// slot, reserved at start so no environment gets it, and the same across
// runner restarts (its state belongs to it).
func builderRange(cfg Config) idmap.Range {
	return idmap.Range{HostID: cfg.RangeBase + uint32(cfg.RangeSlots-1)*cfg.RangeSize, Size: cfg.RangeSize}
}

// stepWriter passes BuildKit's step headers ("#6 [base 2/2] RUN ...") from
// its plain progress output to onStep, for the status the CLI shows.
type stepWriter struct {
	onStep func(string)
	line   []byte
}

func (s *stepWriter) Write(p []byte) (int, error) {
	for _, c := range p {
		if c != '\n' {
			if len(s.line) < 200 {
				s.line = append(s.line, c)
			}
			continue
		}
		l := string(s.line)
		s.line = s.line[:0]
		if i := strings.Index(l, " ["); strings.HasPrefix(l, "#") && i > 0 && !strings.Contains(l, "[internal]") {
			if s.onStep != nil {
				s.onStep("building: " + l[i+1:])
			}
		}
	}
	return len(p), nil
}
