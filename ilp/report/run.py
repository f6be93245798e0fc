"""The run's Markdown report: unlearned rates by data set and phase, pass rates, learning curves,
the base-model probes, and the diagnosis section when there is one."""
from __future__ import annotations

import os

import pandas as pd

from ilp.detection.table import DetectConfig
from ilp.report import plots


def rate_table(frame: pd.DataFrame, by: list[str]) -> str:
  """Examples, unlearned rate, mean pass@N and greedy accuracy per group of the detection table."""
  rows = frame.groupby(by).agg(examples=("id", "size"), unlearned=("unlearned", "mean"),
                               pass_at_n=("pass_at_n", "mean"), greedy=("greedy_correct", "mean"))
  lines = [f"| {' | '.join(by)} | examples | unlearned | mean pass@N | greedy correct |",
           "|" + "---|" * (len(by) + 4)]
  for key, r in rows.iterrows():
    key = key if isinstance(key, tuple) else (key,)
    lines.append(f"| {' | '.join(map(str, key))} | {int(r.examples)} | {100 * r.unlearned:.1f}% | "
                 f"{r.pass_at_n:.2f} | {100 * r.greedy:.1f}% |")
  return "\n".join(lines)


def draw(detection: pd.DataFrame, evals: pd.DataFrame, directory: str) -> None:
  """unlearned.png, pass_rates.png and curves.png into `directory`."""
  by_group = {f"{d} / phase {s}": v for (d, s), v in detection.groupby(["dataset", "phase"])["unlearned"].mean().items()}
  plots.bar_chart(by_group, os.path.join(directory, "unlearned.png"), "Unlearned training examples", "unlearned (%)")
  plots.histogram(detection["pass_at_n"].to_numpy(), os.path.join(directory, "pass_rates.png"),
                  f"pass@{int(detection['n'].iloc[0])} of every training example", "fraction of samples correct")
  evals = evals.assign(group=evals["dataset"] + " / phase " + evals["phase"].astype(str))
  plots.learning_curves(evals, "group", os.path.join(directory, "curves.png"), "Learning curves (evaluation passes)")


def markdown(detection: pd.DataFrame, summary: dict, detect: DetectConfig, diagnosis_section: str | None) -> str:
  """The report's text; the figures of `draw` sit next to it."""
  kappa = summary["kappa_between_runs"]
  lines = [
      "# ILP report", "",
      f"{summary['unlearned']} of {summary['examples']} training examples are unlearned "
      f"({100 * summary['unlearned_rate']:.1f}%): pass@N < {detect.threshold} with N = "
      f"{detect.num_samples} samples at temperature {detect.temperature}. "
      + (f"Cohen's kappa of the labels between {summary['runs']} sampling runs: {kappa:.2f}." if kappa is not None
         else ""), "",
      "## Unlearned rate by data set and phase", "", rate_table(detection, ["dataset", "phase"]), "",
      "![unlearned](unlearned.png)", "", "## Pass rates", "", "![pass rates](pass_rates.png)", "",
      "## Training dynamics", "", "![curves](curves.png)", ""]
  if "p_exist" in detection:
    lines += ["## Knowledge probes of the base model", "",
              f"- knowledge exists (base P(true option) > {detect.mc.p_exist}): {100 * detection['p_exist'].mean():.1f}%",
              f"- base high-confidence errors: {100 * detection['base_high_conf_error'].mean():.1f}%",
              f"- mean JSD(base, SFT) over the options: {detection['jsd_base_sft'].mean():.3f} bits", ""]
  if diagnosis_section is not None:
    lines.append(diagnosis_section)
  return "\n".join(lines)
