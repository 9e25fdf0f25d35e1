#!/usr/bin/env bash
# Runs every test. Tests that need root or a tool skip with the reason when
# it is missing; `make test` installs the tools and CI runs as root, so they
# all run there. Skips are listed at the end so a skip is never mistaken for
# a pass.
set -uo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin"
export CGO_ENABLED=0
log=$(mktemp /tmp/cove-test.XXXXXX)

echo "== go vet"
go vet ./... || exit 1

echo "== go test (full log: $log)"
# -p 2: two cores; e2e and runtime tests start real containers.
go test -count=1 -p 2 -timeout 40m -v ./... >"$log" 2>&1
status=$?
# Package results, failures with their messages, skips with their reasons.
grep -E '^(ok|FAIL|panic:|--- FAIL|--- SKIP|\?)|^\s+[a-z_]+_test\.go:[0-9]+:' "$log" | grep -v '^?' || true
skips=$(grep -c -- '--- SKIP' "$log" || true)
passes=$(grep -c -- '--- PASS' "$log" || true)
fails=$(grep -c -- '--- FAIL' "$log" || true)
echo "== $passes passed, $fails failed, $skips skipped (tests and subtests)"
if [[ $status -ne 0 ]]; then
	echo "== failing output (tail)"
	tail -n 150 "$log"
	exit "$status"
fi

# Tests whose tools `make test` installs must run in CI, not skip: a skip
# of one of them fails the run.
required_skips=$(grep -E '^\s+[a-z0-9_]+_test\.go:[0-9]+: versitygw .* not built' "$log" || true)
if [[ -n "$required_skips" ]]; then
	echo "== tests that must run here were skipped (run scripts/install-deps.sh test):"
	echo "$required_skips"
	exit 1
fi

# Short fuzz runs of the parsers and unpackers that take hostile input (the
# seed corpora also run above as ordinary tests). FUZZTIME=0 skips them.
fuzztime=${FUZZTIME:-30s}
if [[ "$fuzztime" != 0 ]]; then
	for target in ./internal/confine:FuzzUnpack ./internal/devcontainer:FuzzParse ./internal/resources:FuzzParseOOMKill ./internal/backuprepo:FuzzManifestReader ./internal/backuprepo:FuzzChunkOpen ./internal/backuprepo:FuzzPackIndex ./internal/backupfs:FuzzRestore; do
		pkg=${target%%:*} fn=${target##*:}
		echo "== fuzz $fn ($pkg, $fuzztime)"
		if ! go test -run '^$' -fuzz "^${fn}\$" -fuzztime "$fuzztime" "$pkg" >"$log.fuzz" 2>&1; then
			tail -n 60 "$log.fuzz"
			exit 1
		fi
		tail -n 1 "$log.fuzz"
	done
fi
exit 0
