"""Evaluates a finished ILP-world run against its planted ground truth (the only reader of it).

Prints the unlearned rate per data set and stage (from the detection summary) and per planted
group, and writes `<workdir>/world_eval.json` and `<workdir>/evaluation/` (Markdown + plots):
per planted group, the unlearned rate from the
detection stage; for left-side forgetting (IV), the share learned (exact match) at the end of
stage 1 and at the end of stage 2; for rare patterns (V), exact match after each stage-2 epoch;
and whether the targets of the world hold (control <= 10%, each planted group >= 30% and >= 3x
control).

  python scripts/evaluate_world.py --workdir=runs/world
"""
from __future__ import annotations

import json
import os
import sys

import pandas as pd
from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ilp import fileio  # noqa: E402
from ilp.data import world  # noqa: E402
from ilp.report import plots  # noqa: E402
from ilp.train import dynamics  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Work directory of a finished world run.")
flags.mark_flag_as_required("workdir")


def evaluate(workdir: str) -> dict:
  truth = world.load_ground_truth(os.path.join(workdir, "world"))
  table = pd.read_parquet(os.path.join(workdir, "detect", "detection.parquet")).merge(truth, on="id")
  rates = table.groupby("group")["unlearned"].agg(["size", "mean"])
  groups = {g: {"examples": int(rates.loc[g, "size"]), "unlearned_rate": float(rates.loc[g, "mean"])}
            for g in world.GROUPS if g in rates.index}
  control = groups["control"]["unlearned_rate"]
  frame = dynamics.load_dynamics(os.path.join(workdir, "sft", "dynamics"))
  evals = frame[frame["kind"] == "eval"].merge(truth, on="id")
  stage_ends = evals[evals["stage_end"]].groupby(["group", "train_stage"])["exact_match"].mean()
  stage2 = evals[(evals["train_stage"] == 2) & (evals["group"] == "rare")]
  figures = os.path.join(workdir, "evaluation")
  os.makedirs(figures, exist_ok=True)
  plots.bar_chart({g: v["unlearned_rate"] for g, v in groups.items()}, os.path.join(figures, "unlearned_by_group.png"),
                  "Unlearned rate per planted group", "unlearned (%)")
  plots.learning_curves(evals, "group", os.path.join(figures, "curves_by_group.png"),
                        "Learning curves per planted group")
  result = {
      "groups": groups,
      "forgetting": {"learned_end_of_stage1": float(stage_ends.get(("forgetting", 1), float("nan"))),
                     "learned_end_of_stage2": float(stage_ends.get(("forgetting", 2), float("nan")))},
      "rare_exact_match_by_stage2_epoch": {int(e): float(v) for e, v in
                                           stage2.groupby("epoch")["exact_match"].mean().items()},
      "targets": {"control_at_most_10pct": control <= 0.10,
                  **{f"{g}_at_least_30pct_and_3x_control": (groups[g]["unlearned_rate"] >= 0.30 and
                                                            groups[g]["unlearned_rate"] >= 3 * control)
                     for g in world.GROUPS if world.CAUSES[g] and g in groups}},
  }
  return result


def main(argv: list[str]) -> None:
  del argv
  result = evaluate(FLAGS.workdir)
  summary = json.load(open(os.path.join(FLAGS.workdir, "detect", "summary.json")))
  print(f"unlearned: {100 * summary['unlearned_rate']:.1f}% of {summary['examples']} training examples; "
        f"kappa between sampling runs {summary['kappa_between_runs']}")
  print("by data set: " + ", ".join(f"{k} {100 * v:.1f}%" for k, v in summary["unlearned_rate_by_dataset"].items()))
  print("by stage:    " + ", ".join(f"{k} {100 * v:.1f}%" for k, v in summary["unlearned_rate_by_stage"].items()))
  print(f"{'planted group':<14} {'examples':>8} {'unlearned':>10}")
  for group, row in result["groups"].items():
    print(f"{group:<14} {row['examples']:>8} {100 * row['unlearned_rate']:>9.1f}%")
  f = result["forgetting"]
  print(f"IV: learned at the end of stage 1 {100 * f['learned_end_of_stage1']:.1f}%, "
        f"at the end of stage 2 {100 * f['learned_end_of_stage2']:.1f}%")
  print("V: exact match after stage-2 epochs " +
        ", ".join(f"{e}: {100 * v:.1f}%" for e, v in result["rare_exact_match_by_stage2_epoch"].items()))
  print("targets: " + ", ".join(f"{k}={'yes' if v else 'NO'}" for k, v in result["targets"].items()))
  fileio.write_json_atomic(os.path.join(FLAGS.workdir, "world_eval.json"), result)
  lines = ["# ILP world: evaluation against the planted causes", "", "| planted group | examples | unlearned |",
           "|---|---|---|"] + [f"| {g} | {r['examples']} | {100 * r['unlearned_rate']:.1f}% |"
                               for g, r in result["groups"].items()]
  lines += ["", "![groups](unlearned_by_group.png)", "", "![curves](curves_by_group.png)", ""]
  with open(os.path.join(FLAGS.workdir, "evaluation", "evaluation.md"), "w") as f:
    f.write("\n".join(lines))


if __name__ == "__main__":
  app.run(main)
