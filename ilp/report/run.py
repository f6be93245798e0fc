"""The run's Markdown report: unlearned rates by data set and phase, pass rates, learning curves,
the base-model probes, and the diagnosis section when there is one."""
from __future__ import annotations

import os
from typing import Sequence

import pandas as pd

from ilp.detection.table import PREFIX, DetectConfig
from ilp.report import plots


NAMES = {"multiple_choice": "MC (paper's protocol)", "generative": "generative"}


def rate_table(frame: pd.DataFrame, by: list[str], protocols: Sequence[str]) -> str:
  """Examples, and per protocol its unlearned rate and mean pass@N, per group of the detection
  table; greedy accuracy when the generative protocol ran."""
  aggs = {"examples": ("id", "size")}
  for protocol in protocols:
    p = PREFIX[protocol]
    aggs.update({f"{p}unlearned": (f"{p}unlearned", "mean"), f"{p}pass": (f"{p}pass_at_n", "mean")})
  if "greedy_correct" in frame:
    aggs["greedy"] = ("greedy_correct", "mean")
  rows = frame.groupby(by).agg(**aggs)
  heads = [h for protocol in protocols for h in (f"unlearned, {NAMES[protocol]}", f"mean pass@N, {NAMES[protocol]}")]
  heads += ["greedy correct"] if "greedy" in rows else []
  lines = [f"| {' | '.join(by)} | examples | {' | '.join(heads)} |", "|" + "---|" * (len(by) + 1 + len(heads))]
  for key, r in rows.iterrows():
    key = key if isinstance(key, tuple) else (key,)
    cells = [f"{100 * r[f'{PREFIX[p]}unlearned']:.1f}% | {r[f'{PREFIX[p]}pass']:.2f}" for p in protocols]
    cells += [f"{100 * r['greedy']:.1f}%"] if "greedy" in rows else []
    lines.append(f"| {' | '.join(map(str, key))} | {int(r['examples'])} | {' | '.join(cells)} |")
  return "\n".join(lines)


def draw(detection: pd.DataFrame, evals: pd.DataFrame, protocol: str, directory: str) -> None:
  """unlearned.png and pass_rates.png (under `protocol`) and curves.png into `directory`."""
  p = PREFIX[protocol]
  by_group = {f"{d} / phase {s}": v
              for (d, s), v in detection.groupby(["dataset", "phase"])[f"{p}unlearned"].mean().items()}
  plots.bar_chart(by_group, os.path.join(directory, "unlearned.png"),
                  f"Unlearned training examples ({NAMES[protocol]})", "unlearned (%)")
  plots.histogram(detection[f"{p}pass_at_n"].to_numpy(), os.path.join(directory, "pass_rates.png"),
                  f"pass@N of every training example ({NAMES[protocol]})", "fraction of predictions correct")
  evals = evals.assign(group=evals["dataset"] + " / phase " + evals["phase"].astype(str))
  plots.learning_curves(evals, "group", os.path.join(directory, "curves.png"), "Learning curves (evaluation passes)")


def markdown(detection: pd.DataFrame, summary: dict, detect: DetectConfig, diagnosis_section: str | None) -> str:
  """The report's text; the figures of `draw` sit next to it."""
  lines = ["# ILP report", ""]
  for protocol in detect.protocols:
    s = summary[protocol]
    kappa = s["kappa_between_runs"]
    lines += [f"- **{NAMES[protocol]}**: {s['unlearned']} of {summary['examples']} training examples unlearned "
              f"({100 * s['unlearned_rate']:.1f}%): pass@N < {detect.threshold} in {s['repeat_rule']} of "
              f"{s['runs']} runs, N = {detect.num_samples} "
              + ("predictions from the 4-option distribution" if protocol == "multiple_choice" else "generations")
              + f" at temperature {detect.temperature}"
              + (f"; Cohen's kappa between runs {kappa:.2f}." if kappa is not None else ".")]
  if "kappa_between_protocols" in summary:
    lines.append(f"- Agreement of the two labels (Cohen's kappa): {summary['kappa_between_protocols']:.2f}.")
  lines += ["", "## Unlearned rate by data set and phase", "", rate_table(detection, ["dataset", "phase"],
                                                                         detect.protocols), "",
            "![unlearned](unlearned.png)", "", "## Pass rates", "", "![pass rates](pass_rates.png)", "",
            "## Training dynamics", "", "![curves](curves.png)", ""]
  if "p_exist" in detection:
    lines += ["## Knowledge probes of the base model", "",
              f"- knowledge exists (P_exist: base accuracy over N MC predictions > {detect.mc.p_exist}): "
              f"{100 * detection['p_exist'].mean():.1f}%",
              f"- base high-confidence errors (P(wrong option) > {detect.mc.t_conf}): "
              f"{100 * detection['base_high_conf_error'].mean():.1f}%",
              f"- mean JSD(base, SFT) over the options: {detection['jsd_base_sft'].mean():.3f} bits (log base 2)", ""]
  if "base_blind" in detection:
    lines.insert(-1, f"- blind (base pass@{detect.base_samples} < {detect.threshold} and BoN-{detect.blind_bon_k} "
                     f"< {detect.blind_bon}): {100 * detection['base_blind'].mean():.1f}%")
  if diagnosis_section is not None:
    lines.append(diagnosis_section)
  return "\n".join(lines)
