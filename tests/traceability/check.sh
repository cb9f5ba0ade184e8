#!/usr/bin/env bash
# docs/traceability.md (rules → tests) is what scripts/traceability.py makes
# of docs/traceability-rules.tsv and tests/ now: regenerates it into a temp
# file and fails when the committed one differs (`make traceability` fixes
# it). When the spec folder ../shared/spec exists beside the repo, also says
# (as a warning only: the repo does not depend on it) where the rule list and
# the spec differ.
set -uo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd -P)
cd "$ROOT" || exit 1
PYTHON=${PYTHON:-python3}
out=$(mktemp "${TEST_TMPDIR:-${TMPDIR:-/tmp}}/traceability.XXXXXX") || exit 1
trap 'rm -f "$out"' EXIT
if ! "$PYTHON" scripts/traceability.py --output "$out"; then
	echo "traceability: FAIL — scripts/traceability.py failed"
	exit 1
fi
if [ -d ../shared/spec ] && ! spec=$("$PYTHON" scripts/traceability.py --check-spec 2>&1); then
	printf '%s\n' "$spec" | sed 's/^/warning: /'
fi
if ! diff -u docs/traceability.md "$out" >"$out.diff" 2>&1; then
	head -n 40 "$out.diff"
	rm -f "$out.diff"
	echo "traceability: FAIL — docs/traceability.md is stale: run make traceability (and commit it)"
	exit 1
fi
rm -f "$out.diff"
echo "traceability: OK — docs/traceability.md is up to date ($(grep -m1 -o '[0-9]* of [0-9]* rules' docs/traceability.md) have a test)"
