#!/usr/bin/env bash
# Installs the test environment (once), checks lint and formatting (ruff, pyproject.toml), and
# runs the test suite (CI): every test on one CPU device, spread over the cores by pytest-xdist,
# then, in a second pytest run, the `mesh` tests (sharded runs checked against the single-device
# run) on 8 fake devices (tests/conftest.py). The XLA compilation cache in .cache/jax-tests makes a
# second run faster. `bash scripts/test.sh fast` runs the unit tier (tests/unit) only. Other
# arguments go to pytest: `-x`, `-k name`, `-m slow` (the tests left out by default) ...
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup_env.sh" requirements-test.txt
cd "$ILP_ROOT"
paths=(tests)
if [ "${1:-}" = fast ]; then paths=(tests/unit); shift; fi
select="not slow"
args=()
while [ $# -gt 0 ]; do
  if [ "$1" = -m ] && [ $# -gt 1 ]; then select="$2"; shift 2; else args+=("$1"); shift; fi
done

"$ILP_VENV/bin/ruff" check --quiet . && "$ILP_VENV/bin/ruff" format --check --quiet . || {
  echo "test.sh: ruff found lint or formatting problems: .venv/bin/ruff check --fix . && .venv/bin/ruff format ." >&2
  exit 1
}

run() {  # pytest's status 5 (no test selected in this process, e.g. by -k) is no failure
  local status=0
  "$@" || status=$?
  [ "$status" -eq 0 ] || [ "$status" -eq 5 ] || exit "$status"
}
# pytest-xdist: ILP_TEST_WORKERS processes (default: one per core), each test file on one worker so
# its module fixtures are built once. The mesh tests run in one process: their multi-process runs
# start processes of their own, which a second worker's load stalled past their timeouts.
workers=(-n "${ILP_TEST_WORKERS:-auto}" --dist loadfile)
run env ILP_TEST_DEVICES=1 "$ILP_PYTHON" -m pytest -q "${workers[@]}" "${paths[@]}" -m "($select) and not mesh" "${args[@]}"
run env ILP_TEST_DEVICES=8 "$ILP_PYTHON" -m pytest -q "${paths[@]}" -m "($select) and mesh" "${args[@]}"
