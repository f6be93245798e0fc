#!/usr/bin/env bash
# Installs the test environment (once) and runs the whole test suite. Extra arguments go to pytest.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup_env.sh" requirements-test.txt
cd "$ILP_ROOT"
exec "$ILP_PYTHON" -m pytest -q tests "$@"
