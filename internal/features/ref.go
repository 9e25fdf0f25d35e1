package features

import (
	"net/url"
	"strings"

	"github.com/covedev/cove/internal/errdefs"
	"github.com/covedev/cove/internal/hostfetch"
	"github.com/covedev/cove/internal/usererr"
	"github.com/google/go-containerregistry/pkg/name"
)

// Ref is a feature as written in devcontainer.json (or in a feature's
// dependsOn): its identifier and the options given to it.
type Ref struct {
	ID      string         // as written: OCI reference, tarball URL or ./path
	Options map[string]any // option id -> value (string or bool)
}

type sourceKind int

const (
	kindOCI sourceKind = iota
	kindTarball
	kindLocal
)

func kindOf(id string) sourceKind {
	switch {
	case strings.HasPrefix(id, "https://"), strings.HasPrefix(id, "http://"):
		return kindTarball
	case strings.HasPrefix(id, "./"), strings.HasPrefix(id, "../"), id == ".":
		return kindLocal
	}
	return kindOCI
}

// canonicalID is id as the reference implementation resolves it: an OCI
// reference is lower-cased whole (registry, repository, tag and digest, as
// devcontainers/cli's getRef does, so "…/features/Chain-A:1" is the
// feature "…/features/chain-a:1"); a tarball URL or a local path is taken
// as written.
func canonicalID(id string) string {
	if kindOf(id) != kindOCI {
		return id
	}
	return strings.ToLower(id)
}

// resourceID returns id without its version: the tag or digest of an OCI
// reference is dropped ("ghcr.io/a/b/node:1" -> "ghcr.io/a/b/node"); other
// identifiers are returned unchanged. installsAfter and
// overrideFeatureInstallOrder name features this way.
func resourceID(id string) string {
	if kindOf(id) != kindOCI {
		return id
	}
	if i := strings.Index(id, "@"); i >= 0 {
		id = id[:i]
	}
	slash := strings.LastIndex(id, "/")
	if i := strings.LastIndex(id, ":"); i > slash {
		id = id[:i]
	}
	return strings.ToLower(id)
}

// parseOCI parses an OCI feature reference, case-insensitively
// (canonicalID); a missing tag means "latest". Messages name id as
// written. Registries the fetch policy lists as insecure are spoken to over plain
// HTTP; the policy's transport refuses plain HTTP to any other.
func parseOCI(id string, p *hostfetch.Policy) (name.Reference, error) {
	if strings.Count(resourceID(id), "/") < 2 {
		return nil, errdefs.InvalidArgument(usererr.New("invalid feature %q: expected <registry>/<namespace>/<feature>[:<version>], a https:// tarball URL or a ./local path", id))
	}
	canon := canonicalID(id)
	r, err := name.ParseReference(canon)
	if err != nil {
		return nil, usererr.Wrap(errdefs.InvalidArgument(err), "invalid feature reference %q", id)
	}
	if p.Insecure(r.Context().RegistryStr()) {
		if r, err = name.ParseReference(canon, name.Insecure); err != nil {
			return nil, usererr.Wrap(errdefs.InvalidArgument(err), "invalid feature reference %q", id)
		}
	}
	return r, nil
}

// checkTarballURL accepts https URLs, and plain http URLs to hosts the fetch
// policy lists as insecure.
func checkTarballURL(id string, p *hostfetch.Policy) (*url.URL, error) {
	u, err := url.Parse(id)
	if err != nil || u.Host == "" || (u.Scheme != "https" && u.Scheme != "http") {
		return nil, errdefs.InvalidArgument(usererr.New("invalid feature URL %q", id))
	}
	if u.Scheme == "http" && !p.Insecure(u.Host) {
		return nil, errdefs.PermissionDenied(usererr.New("feature URL %q must use https (plain HTTP only to hosts the runner's operator lists with --insecure-registry)", id))
	}
	return u, nil
}
