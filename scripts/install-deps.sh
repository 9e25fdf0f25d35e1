#!/usr/bin/env bash
# Installs what cove needs on a Debian/Ubuntu host.
#   install-deps.sh runtime   what `cove up` / `cove runner` need
#   install-deps.sh test      that plus what the test suite needs
#   install-deps.sh bench     runtime plus the baselines of the benchmarks
#                             (restic, zstd: bench/backup; busybox-static,
#                             openssh-client: bench/interactive)
set -euo pipefail

runtime_pkgs=(runc git ca-certificates openssh-client iproute2 procps e2fsprogs)
test_pkgs=(busybox-static mmdebstrap rsync nftables uidmap openssh-client sqlite3 make stress-ng btrfs-progs)
bench_pkgs=(restic zstd tar busybox-static openssh-client)

want=("${runtime_pkgs[@]}")
if [[ "${1:-runtime}" == test ]]; then
	want+=("${test_pkgs[@]}")
fi
if [[ "${1:-runtime}" == bench ]]; then
	want+=("${bench_pkgs[@]}")
fi

missing=()
for p in "${want[@]}"; do
	if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
		missing+=("$p")
	fi
done
if ((${#missing[@]})); then
	if [[ $(id -u) -ne 0 ]]; then
		echo "install-deps: need root to install: ${missing[*]}" >&2
		exit 1
	fi
	echo "install-deps: installing ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The Dev Containers reference CLI, for the differential tests of
# internal/devcontainer (they skip without it). Needs node and npm.
dc_cli_version=0.89.0
if [[ "${1:-runtime}" == test ]] && ! command -v devcontainer >/dev/null; then
	if ! command -v npm >/dev/null; then
		echo "install-deps: installing nodejs and npm (for the reference devcontainer CLI)"
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null || true
	fi
	if command -v npm >/dev/null; then
		echo "install-deps: installing @devcontainers/cli@${dc_cli_version}"
		npm install -g --no-fund --no-audit "@devcontainers/cli@${dc_cli_version}" >/dev/null
	else
		echo "install-deps: npm not found; devcontainer differential tests will be skipped" >&2
	fi
fi

# BuildKit's buildkitd, for devcontainer.json Dockerfile builds, built from
# its module at a pinned version into /var/cache/cove-buildkit (once; later
# calls return at once). Runners use it when it is there.
if command -v go >/dev/null || [[ -x /usr/local/go/bin/go ]]; then
	PATH="$PATH:/usr/local/go/bin" "$(dirname "$0")/build-buildkit.sh" >/dev/null
fi

# Go builds cove; the module needs Go 1.26 or newer.
export PATH="$PATH:/usr/local/go/bin"
if ! command -v go >/dev/null; then
	echo "install-deps: Go is not installed: install Go 1.26+ (https://go.dev/dl/) into /usr/local/go" >&2
	exit 1
fi

# versitygw, an S3-compatible server on a local directory, for the S3 tests
# of internal/blob/s3blob (they start it on loopback themselves and skip
# without it; scripts/test.sh fails on that skip). Built at a pinned version
# into /var/cache/cove-versitygw (once; later calls return at once). The
# version must match versitygwVersion in internal/blob/s3blob.
versitygw_version=v1.8.0
vgw_bin=/var/cache/cove-versitygw/$versitygw_version/bin
if [[ "${1:-runtime}" == test && ! -x $vgw_bin/versitygw ]]; then
	echo "install-deps: building versitygw $versitygw_version"
	rm -rf "$vgw_bin.tmp"
	(cd / && GOBIN="$vgw_bin.tmp" CGO_ENABLED=0 go install -trimpath "github.com/versity/versitygw/cmd/versitygw@$versitygw_version")
	rm -rf "$vgw_bin"
	mv "$vgw_bin.tmp" "$vgw_bin"
fi

echo "install-deps: ok ($(go version | cut -d' ' -f3), $(runc --version | head -1))"
