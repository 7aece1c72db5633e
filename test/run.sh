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
TMPDIR=$run_tmp node --import tsx --test --test-concurrency=2 "${files[@]}"
