#!/usr/bin/env bash
# Installs the runtime environment (once), runs the demo pipeline (configs/demo.py: the ILP world
# study) and evaluates detection and diagnosis against the world's planted ground truth. WORKDIR
# (default runs/demo) receives every artifact; extra arguments go to launch.py (e.g.
# --config.world.seed=1).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup_env.sh" requirements.txt
cd "$ILP_ROOT"
workdir="${WORKDIR:-runs/demo}"
"$ILP_PYTHON" launch.py --config=configs/demo.py --workdir="$workdir" "$@"
"$ILP_PYTHON" scripts/evaluate_world.py --workdir="$workdir"
"$ILP_PYTHON" scripts/validate_diagnosis.py --workdirs="$workdir"
cat <<MSG

Artifacts in $workdir:
  world/                  generated corpora, SFT data, tokenizer (ground_truth.jsonl: for evaluation only)
  pretrain/, sft/         checkpoints, TensorBoard logs (tensorboard --logdir $workdir), final models
  examples.parquet        the SFT examples as trained on (text and tokens)
  sft/dynamics/           per-example training dynamics (Parquet)
  detect/detection.parquet, detect/summary.json   what SFT failed to teach, per example, under the paper's
                          multiple-choice protocol (mc_*) and the generative one (gen_*)
  diagnosis/attribution.parquet, diagnosis/summary.json   why: the cause of each unlearned example, with evidence
  report/report.md        tables and figures of the whole run
  world_eval.json, diagnosis_validation.json      the planted-group table and the diagnosis of each protocol's
                          label scored against the planted causes
MSG
