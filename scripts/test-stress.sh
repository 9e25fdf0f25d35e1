#!/usr/bin/env bash
# Runs the whole suite (scripts/test.sh, what `make test` runs) RUNS times
# in a row (default 5) while stress-ng keeps CPU_HOGS cores busy (default:
# all of them), as on a CI machine shared with other work. A test that
# assumes how fast something happens (a sleep as synchronisation, a signal
# sent before its handler is set, a short fixed timeout) fails here. Stops
# at the first failing run; stress-ng is stopped however the script ends.
set -uo pipefail
cd "$(dirname "$0")/.."
runs=${RUNS:-5}
hogs=${CPU_HOGS:-$(nproc)}
if ! command -v stress-ng >/dev/null; then
	echo "test-stress: stress-ng is not installed (make test-deps installs it)" >&2
	exit 1
fi
stress-ng --cpu "$hogs" --timeout 0 --quiet &
hog=$!
trap 'kill "$hog" 2>/dev/null; wait "$hog" 2>/dev/null' EXIT
for i in $(seq 1 "$runs"); do
	echo "== run $i of $runs, beside stress-ng --cpu $hogs"
	if ! ./scripts/test.sh; then
		echo "== run $i of $runs failed under load" >&2
		exit 1
	fi
done
echo "== $runs runs in a row passed under load"
