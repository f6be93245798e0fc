#!/usr/bin/env bash
# Creates (or reuses) the checkout's virtual environment .venv, installs a requirements file into
# it with every transitive version pinned by constraints.txt, and puts this checkout on the
# environment's import path, so scripts and tests import `ilp` and `configs` from anywhere. A
# second run with unchanged requirement files installs nothing.
# Usage: source scripts/setup_env.sh requirements-test.txt
set -euo pipefail
ILP_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ILP_VENV="$ILP_ROOT/.venv"
_req="$ILP_ROOT/${1:-requirements.txt}"

_python=""
for candidate in python3.11 python3 python; do
  if command -v "$candidate" >/dev/null 2>&1 &&
     "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null; then
    _python="$candidate"; break
  fi
done
if [ -z "$_python" ]; then
  echo "setup_env: Python 3.11 is required (looked for python3.11, python3, python)" >&2
  exit 1
fi

if [ ! -x "$ILP_VENV/bin/python" ]; then
  echo "setup_env: creating $ILP_VENV" >&2
  "$_python" -m venv "$ILP_VENV"
fi
_stamp="$ILP_VENV/.installed-$(basename "$_req")"
_hash="$(cat "$_req" "$ILP_ROOT/requirements.txt" "$ILP_ROOT/constraints.txt" "$ILP_ROOT/pyproject.toml" \
         | sha256sum | cut -d' ' -f1)"
if [ "$(cat "$_stamp" 2>/dev/null)" != "$_hash" ]; then
  echo "setup_env: installing $(basename "$_req") (pinned; a few minutes on first run)" >&2
  "$ILP_VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
      -r "$_req" -c "$ILP_ROOT/constraints.txt"
  # The checkout itself, importable from anywhere (what an editable install amounts to, without
  # build tooling): a path file in the environment's site-packages.
  "$ILP_VENV/bin/python" -c 'import sys, sysconfig; open(sysconfig.get_paths()["purelib"] + "/ilp-checkout.pth", "w").write(sys.argv[1] + "\n")' "$ILP_ROOT"
  echo "$_hash" > "$_stamp"
fi
ILP_PYTHON="$ILP_VENV/bin/python"
