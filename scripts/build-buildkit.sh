#!/bin/sh
# build-buildkit.sh builds BuildKit's buildkitd (and buildctl, for debugging)
# at a pinned version into a cache directory outside the repository, only when
# the binaries are missing. It prints the bin directory on stdout.
#
# `go install github.com/moby/buildkit/cmd/buildkitd@VERSION` does not work:
# BuildKit's go.mod has exclude directives, which are only honoured when it is
# the main module. So the module is downloaded and built from its own directory.
#
# Environment:
#   BUILDKIT_VERSION  version to build (default v0.33.1)
#   COVE_BUILDKIT_DIR cache root (default /var/cache/cove-buildkit)
set -eu

version=${BUILDKIT_VERSION:-v0.33.1}
root=${COVE_BUILDKIT_DIR:-/var/cache/cove-buildkit}
bin=$root/$version/bin

if [ -x "$bin/buildkitd" ] && [ -x "$bin/buildctl" ]; then
	echo "$bin"
	exit 0
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# A throwaway main module so that `go mod download` does not touch the caller's go.mod.
cd "$tmp"
go mod init cove-buildkit-download >/dev/null 2>&1
dir=$(go mod download -json "github.com/moby/buildkit@$version" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
if [ -z "$dir" ] || [ ! -f "$dir/go.mod" ]; then
	echo "build-buildkit: cannot download github.com/moby/buildkit@$version" >&2
	exit 1
fi

mkdir -p "$bin.tmp"
cd "$dir"
ldflags="-s -w -X github.com/moby/buildkit/version.Version=$version -X github.com/moby/buildkit/version.Package=github.com/moby/buildkit"
for cmd in buildkitd buildctl; do
	echo "build-buildkit: building $cmd $version" >&2
	# The module cache is read-only; -mod=mod lets go resolve its own go.mod
	# (with its excludes) without writing to it.
	CGO_ENABLED=0 GOFLAGS=-mod=mod go build -trimpath -ldflags "$ldflags" -o "$bin.tmp/$cmd" "./cmd/$cmd"
done
rm -rf "$bin"
mv "$bin.tmp" "$bin"
echo "$bin"
