#!/usr/bin/env bash
# test/run.sh — what `npm test` runs: the type check, the build (dist/, which the process-level
# tests run as production does: test/harness/build.ts), then every test file (unit tests beside
# their modules, process-level tests in test/) with node's test runner, two files at a time.
# Temporary folders of the run (spools, Maildirs, sink records) go under one folder that is
# removed at the end, whatever the outcome.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
npx tsc --noEmit || exit 1
npm run --silent build || exit 1
run_tmp=$(mktemp -d "${TMPDIR:-/tmp}/tandem-test.XXXXXX")
trap 'rm -rf "$run_tmp" 2>/dev/null' EXIT
mapfile -t files < <(find src test -name '*.test.ts' -not -path '*/node_modules/*' | sort)
# --test-timeout: on Node 20 it bounds each test file as a whole (and each test without a timeout
# of its own), so a test that hangs — or a file kept alive by a timer after a failure — fails
# the run after this long instead of stalling CI. The longest file must fit: node-e2e took
# about 5.5 minutes on a 2-core machine shared with other test runs.
file_timeout_ms=${TANDEM_TEST_FILE_TIMEOUT_MS:-900000}
# the test files running side by side do not hand out each other's ports (src/util/free-port.ts)
mkdir -p "$run_tmp/port-claims"
TANDEM_PORT_CLAIMS=$run_tmp/port-claims TMPDIR=$run_tmp node --import tsx --test --test-concurrency=2 --test-timeout="$file_timeout_ms" "${files[@]}"
