#!/usr/bin/env bash
# Installs the runtime environment (once), runs the interventions study on the ILP world
# (configs/interventions.py: the baseline, then one arm per mitigation, then their comparison)
# and prints the comparison, with the planted-cause view from the world's ground truth. WORKDIR
# (default runs/interventions) receives every artifact; extra arguments go to launch.py (e.g.
# --config.world.seed=1). Re-running resumes: finished stages and arms are skipped.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup_env.sh" requirements.txt
cd "$ILP_ROOT"
workdir="${WORKDIR:-runs/interventions}"
"$ILP_PYTHON" launch.py --config=configs/interventions.py --workdir="$workdir" "$@"
"$ILP_PYTHON" scripts/evaluate_interventions.py --workdirs="$workdir"
cat <<MSG

Artifacts in $workdir (the baseline) and $workdir/arms/<arm>/ (each arm, the same layout):
  compare/comparison.md, compare/summary.json, compare/comparison.parquet   each arm against the baseline
  arms/<arm>/intervention/   what the arm took from the baseline's diagnosis (retrieved documents,
                             edited SFT records, groups) and its summary.json
  capability.json            held-out questions and held-out text, per run
  interventions_eval.json    the comparison by planted cause (world ground truth)
TensorBoard overlays every run's curves: tensorboard --logdir $workdir
MSG
