#!/usr/bin/env bash
# The house style, mechanically: every C file of the tree is formatted with
# the committed .clang-format (`make fmt` fixes it). Prints the files and
# lines that differ; exits 1 when any does.
set -uo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd -P)
cd "$ROOT" || exit 1
if ! command -v clang-format >/dev/null 2>&1; then
	echo "style: clang-format is not installed (scripts/deps.sh installs it)"
	exit 1
fi
if out=$(make -s fmt-check 2>&1); then
	echo "style: OK — $(clang-format --version | head -n 1), every C file formatted"
	exit 0
fi
printf '%s\n' "$out" | head -n 60
echo "style: FAIL — $(printf '%s\n' "$out" | grep -c 'error:') difference(s); run \`make fmt\`"
exit 1
