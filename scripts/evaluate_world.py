"""Evaluates a finished ILP-world run against its planted ground truth (the only reader of it).

Prints the unlearned rate per data set and phase (from the detection summary) and per planted
group, and writes `<workdir>/world_eval.json` and `<workdir>/evaluation/` (Markdown + plots):
per planted group, the unlearned rate from the
detection stage; for left-side forgetting (IV), the share learned (exact match) at the end of
phase 1 and at the end of phase 2; for rare patterns (V), exact match after each phase-2 epoch;
and whether the targets of the world hold (control <= 10%, each planted group >= 30% and >= 3x
control).

  python scripts/evaluate_world.py --workdir=runs/world
"""
from __future__ import annotations

import json
import os

import pandas as pd
from absl import app, flags

from ilp import fileio
from ilp.data import world
from ilp.layout import Layout
from ilp.report import plots
from ilp.train import dynamics

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Work directory of a finished world run.")
flags.mark_flag_as_required("workdir")


def evaluate(layout: Layout) -> dict:
  truth = world.load_ground_truth(layout.world)
  table = pd.read_parquet(layout.detection).merge(truth, on="id")
  rates = table.groupby("group")["unlearned"].agg(["size", "mean"])
  groups = {g: {"examples": int(rates.loc[g, "size"]), "unlearned_rate": float(rates.loc[g, "mean"])}
            for g in world.GROUPS if g in rates.index}
  control = groups["control"]["unlearned_rate"]
  frame = dynamics.load_dynamics(layout.dynamics())
  evals = frame[frame["kind"] == "eval"].merge(truth, on="id")
  phase_ends = evals[evals["phase_end"]].groupby(["group", "train_phase"])["exact_match"].mean()
  phase2 = evals[(evals["train_phase"] == 2) & (evals["group"] == "rare")]
  figures = layout.world_evaluation_dir
  os.makedirs(figures, exist_ok=True)
  plots.bar_chart({g: v["unlearned_rate"] for g, v in groups.items()}, os.path.join(figures, "unlearned_by_group.png"),
                  "Unlearned rate per planted group", "unlearned (%)")
  plots.learning_curves(evals, "group", os.path.join(figures, "curves_by_group.png"),
                        "Learning curves per planted group")
  result = {
      "groups": groups,
      "forgetting": {"learned_end_of_phase1": float(phase_ends.get(("forgetting", 1), float("nan"))),
                     "learned_end_of_phase2": float(phase_ends.get(("forgetting", 2), float("nan")))},
      "rare_exact_match_by_phase2_epoch": {int(e): float(v) for e, v in
                                           phase2.groupby("epoch")["exact_match"].mean().items()},
      "targets": {"control_at_most_10pct": control <= 0.10,
                  **{f"{g}_at_least_30pct_and_3x_control": (groups[g]["unlearned_rate"] >= 0.30 and
                                                            groups[g]["unlearned_rate"] >= 3 * control)
                     for g in world.GROUPS if world.CAUSES[g] and g in groups}},
  }
  return result


def main(argv: list[str]) -> None:
  del argv
  layout = Layout(FLAGS.workdir)
  result = evaluate(layout)
  with open(layout.detection_summary) as f:
    summary = json.load(f)
  print(f"unlearned: {100 * summary['unlearned_rate']:.1f}% of {summary['examples']} training examples; "
        f"kappa between sampling runs {summary['kappa_between_runs']}")
  print("by data set: " + ", ".join(f"{k} {100 * v:.1f}%" for k, v in summary["unlearned_rate_by_dataset"].items()))
  print("by phase:    " + ", ".join(f"{k} {100 * v:.1f}%" for k, v in summary["unlearned_rate_by_phase"].items()))
  print(f"{'planted group':<14} {'examples':>8} {'unlearned':>10}")
  for group, row in result["groups"].items():
    print(f"{group:<14} {row['examples']:>8} {100 * row['unlearned_rate']:>9.1f}%")
  f = result["forgetting"]
  print(f"IV: learned at the end of phase 1 {100 * f['learned_end_of_phase1']:.1f}%, "
        f"at the end of phase 2 {100 * f['learned_end_of_phase2']:.1f}%")
  print("V: exact match after phase-2 epochs " +
        ", ".join(f"{e}: {100 * v:.1f}%" for e, v in result["rare_exact_match_by_phase2_epoch"].items()))
  print("targets: " + ", ".join(f"{k}={'yes' if v else 'NO'}" for k, v in result["targets"].items()))
  fileio.write_json_atomic(layout.world_evaluation, result)
  lines = ["# ILP world: evaluation against the planted causes", "", "| planted group | examples | unlearned |",
           "|---|---|---|"] + [f"| {g} | {r['examples']} | {100 * r['unlearned_rate']:.1f}% |"
                               for g, r in result["groups"].items()]
  lines += ["", "![groups](unlearned_by_group.png)", "", "![curves](curves_by_group.png)", ""]
  fileio.write_text_atomic(os.path.join(layout.world_evaluation_dir, "evaluation.md"), "\n".join(lines))


if __name__ == "__main__":
  app.run(main)
