#!/usr/bin/env bash
# Installs the runtime environment (once) and runs the demo pipeline (configs/demo.py).
# WORKDIR (default runs/demo) receives every artifact; extra arguments go to launch.py.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup_env.sh" requirements.txt
cd "$ILP_ROOT"
exec "$ILP_PYTHON" launch.py --config=configs/demo.py --workdir="${WORKDIR:-runs/demo}" "$@"
