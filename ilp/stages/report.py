"""Stage `report`: a Markdown report of the run with tables and plots, `workdir/report/`.

It reads what earlier stages wrote (detection table and summary, dynamics log, and the diagnosis
when that stage ran, whose section and figures it embeds) and never the world's ground truth;
`scripts/evaluate_world.py` adds the planted-group view separately.
"""
from __future__ import annotations

import json
import os

import ml_collections
import pandas as pd

from ilp import fileio
from ilp.report import plots
from ilp.stages import diagnose
from ilp.train import dynamics

NAME = "report"


def outputs(workdir: str) -> list[str]:
  return [os.path.join(workdir, NAME)]


def _rate_table(frame: pd.DataFrame, by: list[str]) -> str:
  rows = frame.groupby(by).agg(examples=("id", "size"), unlearned=("unlearned", "mean"),
                               pass_at_n=("pass_at_n", "mean"), greedy=("greedy_correct", "mean"))
  lines = [f"| {' | '.join(by)} | examples | unlearned | mean pass@N | greedy correct |",
           "|" + "---|" * (len(by) + 4)]
  for key, r in rows.iterrows():
    key = key if isinstance(key, tuple) else (key,)
    lines.append(f"| {' | '.join(map(str, key))} | {int(r.examples)} | {100 * r.unlearned:.1f}% | "
                 f"{r.pass_at_n:.2f} | {100 * r.greedy:.1f}% |")
  return "\n".join(lines)


def run(config: ml_collections.ConfigDict, workdir: str) -> None:
  table = pd.read_parquet(os.path.join(workdir, "detect", "detection.parquet"))
  summary = json.load(open(os.path.join(workdir, "detect", "summary.json")))
  evals = dynamics.load_dynamics(os.path.join(workdir, "sft", "dynamics"))
  evals = evals[evals["kind"] == "eval"]
  with fileio.atomic_directory(os.path.join(workdir, NAME)) as out:
    by_group = {f"{d} / stage {s}": v for (d, s), v in table.groupby(["dataset", "stage"])["unlearned"].mean().items()}
    plots.bar_chart(by_group, os.path.join(out, "unlearned.png"), "Unlearned training examples", "unlearned (%)")
    plots.histogram(table["pass_at_n"].to_numpy(), os.path.join(out, "pass_rates.png"),
                    f"pass@{int(table['n'].iloc[0])} of every training example", "fraction of samples correct")
    evals = evals.assign(group=evals["dataset"] + " / stage " + evals["data_stage"].astype(str))
    plots.learning_curves(evals, "group", os.path.join(out, "curves.png"), "Learning curves (evaluation passes)")
    kappa = summary["kappa_between_runs"]
    lines = [
        "# ILP report", "",
        f"{summary['unlearned']} of {summary['examples']} training examples are unlearned "
        f"({100 * summary['unlearned_rate']:.1f}%): pass@N < {config.detect.threshold} with N = "
        f"{config.detect.num_samples} samples at temperature {config.detect.temperature}. "
        + (f"Cohen's kappa of the labels between {summary['runs']} sampling runs: {kappa:.2f}." if kappa is not None
           else ""), "",
        "## Unlearned rate by data set and stage", "", _rate_table(table, ["dataset", "stage"]), "",
        "![unlearned](unlearned.png)", "", "## Pass rates", "", "![pass rates](pass_rates.png)", "",
        "## Training dynamics", "", "![curves](curves.png)", ""]
    if "p_exist" in table:
      lines += ["## Knowledge probes of the base model", "",
                f"- knowledge exists (base P(true option) > {config.detect.mc.p_exist}): {100 * table['p_exist'].mean():.1f}%",
                f"- base high-confidence errors: {100 * table['base_high_conf_error'].mean():.1f}%",
                f"- mean JSD(base, SFT) over the options: {table['jsd_base_sft'].mean():.3f} bits", ""]
    diagnosis = os.path.join(workdir, diagnose.DIR)
    if os.path.exists(diagnosis):
      attributed = pd.read_parquet(os.path.join(diagnosis, diagnose.TABLE))
      lines.append(diagnose.markdown(attributed, json.load(open(os.path.join(diagnosis, "summary.json"))),
                                     f"../{diagnose.DIR}/", config.diagnose.typical_examples))
    with open(os.path.join(out, "report.md"), "w") as f:
      f.write("\n".join(lines))
