package features

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/covedev/cove/internal/hostfetch"
	"github.com/covedev/cove/internal/usererr"
)

// Feature is a resolved feature: fetched, unpacked in the cache, its options
// validated and turned into environment variables.
type Feature struct {
	Ref    Ref
	Digest string   // "sha256:..." of the OCI manifest, tarball or directory contents
	Dir    string   // unpacked feature directory in the cache (read-only by convention)
	Meta   Metadata // parsed devcontainer-feature.json
	Env    []string // option environment for install.sh, "NAME=value", sorted

	deps []*Feature // dependsOn, resolved
}

// Resolver fetches features into a cache.
type Resolver struct {
	CacheDir string            // holds sha256/<hex>/ feature directories and tmp/
	Fetch    *hostfetch.Policy // where registries and tarball URLs may be; nil means hostfetch.Default()
	Log      *slog.Logger      // nil means slog.Default()

	// RootDir is the repository checkout; local features ("./x") must
	// resolve inside it. Empty means the configDir passed to Resolve.
	RootDir string
}

// fetched is one feature identifier's content, fetched once per Resolve.
type fetched struct {
	digest string
	dir    string
	meta   Metadata
}

// Resolve fetches refs and, recursively, the features they depend on, and
// returns them in installation order. Features equal in content and
// effective options are installed once. configDir is the folder holding
// devcontainer.json; overrideOrder is its overrideFeatureInstallOrder.
func (r *Resolver) Resolve(ctx context.Context, refs []Ref, configDir string, overrideOrder []string) ([]Feature, error) {
	if err := os.MkdirAll(filepath.Join(r.CacheDir, "tmp"), 0o700); err != nil {
		return nil, fmt.Errorf("feature cache: %w", err)
	}
	byID := map[string]*fetched{}
	byKey := map[string]*Feature{}
	var all []*Feature

	var resolve func(ref Ref) (*Feature, error)
	resolve = func(ref Ref) (*Feature, error) {
		fe, ok := byID[canonicalID(ref.ID)]
		if !ok {
			var err error
			if fe, err = r.fetch(ctx, ref.ID, configDir); err != nil {
				return nil, err
			}
			byID[canonicalID(ref.ID)] = fe
		}
		env, err := optionEnv(ref, fe.meta)
		if err != nil {
			return nil, err
		}
		key := fe.digest + "\x00" + strings.Join(env, "\x00")
		if f, ok := byKey[key]; ok {
			return f, nil
		}
		f := &Feature{Ref: ref, Digest: fe.digest, Dir: fe.dir, Meta: fe.meta, Env: env}
		byKey[key] = f
		all = append(all, f)
		ids := make([]string, 0, len(fe.meta.DependsOn))
		for id := range fe.meta.DependsOn {
			ids = append(ids, id)
		}
		sort.Strings(ids)
		for _, id := range ids {
			opts, err := dependsOnOptions(fe.meta.DependsOn[id])
			if err != nil {
				return nil, usererr.New("feature %q: dependsOn %q: %v", ref.ID, id, err)
			}
			d, err := resolve(Ref{ID: id, Options: opts})
			if err != nil {
				if msg, ok := usererr.Message(err); ok {
					return nil, usererr.Wrap(err, "%s (dependency of %s)", msg, ref.ID)
				}
				return nil, err
			}
			f.deps = append(f.deps, d)
		}
		return f, nil
	}
	for _, ref := range refs {
		if _, err := resolve(ref); err != nil {
			return nil, err
		}
	}
	return order(all, overrideOrder)
}

// Dependencies are the ids (as written in dependsOn) of the features f
// depends on.
func (f Feature) Dependencies() []string {
	out := make([]string, len(f.deps))
	for i, d := range f.deps {
		out[i] = d.Ref.ID
	}
	return out
}

// dependsOnOptions reads a dependsOn value: an options object, or a string
// that is shorthand for the "version" option.
func dependsOnOptions(raw json.RawMessage) (map[string]any, error) {
	var s string
	if err := json.Unmarshal(raw, &s); err == nil {
		return map[string]any{"version": s}, nil
	}
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, fmt.Errorf("options must be an object")
	}
	return m, nil
}

func (r *Resolver) fetch(ctx context.Context, id, configDir string) (*fetched, error) {
	var (
		digest, dir string
		err         error
	)
	switch kindOf(id) {
	case kindLocal:
		digest, dir, err = r.fetchLocal(ctx, id, configDir)
	case kindTarball:
		digest, dir, err = r.fetchTarball(ctx, id)
	default:
		digest, dir, err = r.fetchOCI(ctx, id)
	}
	if err != nil {
		return nil, err
	}
	meta, err := readMetadata(dir, id)
	if err != nil {
		return nil, err
	}
	r.log().Debug("feature resolved", "feature", id, "digest", digest)
	return &fetched{digest: digest, dir: dir, meta: meta}, nil
}

func (r *Resolver) log() *slog.Logger {
	if r.Log != nil {
		return r.Log
	}
	return slog.Default()
}

func (r *Resolver) fetchPolicy() *hostfetch.Policy {
	if r.Fetch != nil {
		return r.Fetch
	}
	return hostfetch.Default()
}

// cached returns the cache directory of digest if it is complete.
func (r *Resolver) cached(digest string) (string, bool) {
	dir := r.digestDir(digest)
	_, err := os.Lstat(dir)
	return dir, err == nil
}

func (r *Resolver) digestDir(digest string) string {
	return filepath.Join(r.CacheDir, "sha256", strings.TrimPrefix(digest, "sha256:"))
}

// commit moves the finished directory tmp into the cache under digest. A
// directory already there (another resolver won the race) is kept.
func (r *Resolver) commit(tmp, digest string) (string, error) {
	dst := r.digestDir(digest)
	if err := os.MkdirAll(filepath.Dir(dst), 0o700); err != nil {
		return "", err
	}
	if err := os.Rename(tmp, dst); err != nil {
		os.RemoveAll(tmp)
		if _, serr := os.Lstat(dst); serr == nil {
			return dst, nil
		}
		return "", fmt.Errorf("commit feature %s: %w", digest, err)
	}
	return dst, nil
}

func (r *Resolver) tempDir() (string, error) {
	return os.MkdirTemp(filepath.Join(r.CacheDir, "tmp"), "feature-")
}
