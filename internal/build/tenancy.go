package build

import (
	"fmt"
	"io"
	"strings"

	"github.com/covedev/cove/internal/errdefs"
	"github.com/covedev/cove/internal/usererr"
)

// One buildkitd serves every environment on a runner, so its caches are
// shared by every organization there. What a build can put in them that
// another build trusts:
//
//   - Step results are keyed by everything that shaped them (base image
//     digest, command, build args used, files copied), so sharing them is
//     sharing identical work.
//   - `RUN --mount=type=cache` directories are keyed only by their id (by
//     default the target path, e.g. /root/.m2 or /root/.cache/go-build), and
//     a build may write anything into them that a later build then reads.
//     The Dockerfile frontend prefixes every cache-mount id, explicit id=
//     included, with the BUILDKIT_CACHE_MOUNT_NS build arg
//     (frontend/dockerfile/dockerfile2llb/convert_runmount.go in v0.33.1):
//     the runner sets it from the environment's organization, and
//     repositories may not set any BUILDKIT_* arg, so organizations never
//     share cache-mount contents.
//   - Registry cache imports (`build.cacheFrom`) bring step results computed
//     elsewhere, by whoever controls that registry, into the shared cache
//     under the keys they claim: a victim's identical step would then reuse
//     an attacker's result. They are ignored unless the operator allows them
//     (Config.AllowCacheFrom).

// cacheNSArg is the frontend option naming the cache-mount namespace.
const cacheNSArg = "build-arg:BUILDKIT_CACHE_MOUNT_NS"

// checkArgs refuses build args BuildKit reads as its own settings
// (BUILDKIT_CACHE_MOUNT_NS, BUILDKIT_SYNTAX, BUILDKIT_SANDBOX_HOSTNAME, ...).
func checkArgs(args map[string]string) error {
	for k := range args {
		if strings.HasPrefix(strings.ToUpper(k), "BUILDKIT_") {
			return errdefs.InvalidArgument(usererr.New("build arg %q is refused: BUILDKIT_* arguments are BuildKit settings, which the runner chooses (rename the argument)", k))
		}
	}
	return nil
}

// checkNamespace requires a cache-mount namespace made of safe characters
// (the runner derives it from an organization id); without one there is
// nothing to keep one organization's cache mounts from another's.
func checkNamespace(ns string) error {
	if ns == "" || len(ns) > 128 {
		return errdefs.InvalidArgument(fmt.Errorf("build: a cache namespace (1-128 characters) is required"))
	}
	for _, c := range ns {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return errdefs.InvalidArgument(fmt.Errorf("build: cache namespace %q: only letters, digits, '-', '_' and '.'", ns))
		}
	}
	return nil
}

// cacheFromWarning is written to a build's log when it asks for registry
// cache imports the runner does not allow.
const cacheFromWarning = "WARNING: build.cacheFrom ignored: this runner does not import build cache from registries into the build cache it shares between users (a registry could supply poisoned results); its operator can allow it with --build-allow-cache-from\n"

func warnCacheFrom(w io.Writer) { fmt.Fprint(w, cacheFromWarning) }
