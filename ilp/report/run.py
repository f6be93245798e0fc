"""The run's Markdown report: unlearned rates by data set and phase, pass rates, learning curves,
whether SFT converged (ILP is measured after convergence), the base-model probes, and the
diagnosis section when there is one."""

from __future__ import annotations

import os
from typing import Sequence

import pandas as pd

from ilp.detection import columns as col
from ilp.detection.config import DetectConfig
from ilp.detection.converged import trained_epochs
from ilp.report import plots

NAMES = {col.MULTIPLE_CHOICE: "MC (paper's protocol)", col.GENERATIVE: "generative"}


def rate_table(frame: pd.DataFrame, by: list[str], protocols: Sequence[str]) -> str:
  """Examples, and per protocol its unlearned rate and mean pass@N, per group of the detection
  table; greedy accuracy when the generative protocol ran."""
  means = [col.of(p, name) for p in protocols for name in (col.UNLEARNED, col.PASS_AT_N)]
  means += [col.GREEDY_CORRECT] if col.GREEDY_CORRECT in frame else []
  rows = frame.groupby(by).agg(examples=(col.ID, "size"), **{name: (name, "mean") for name in means})
  heads = [h for protocol in protocols for h in (f"unlearned, {NAMES[protocol]}", f"mean pass@N, {NAMES[protocol]}")]
  heads += ["greedy correct"] if col.GREEDY_CORRECT in rows else []
  lines = [f"| {' | '.join(by)} | examples | {' | '.join(heads)} |", "|" + "---|" * (len(by) + 1 + len(heads))]
  for key, r in rows.iterrows():
    key = key if isinstance(key, tuple) else (key,)
    cells = [f"{100 * r[col.of(p, col.UNLEARNED)]:.1f}% | {r[col.of(p, col.PASS_AT_N)]:.2f}" for p in protocols]
    cells += [f"{100 * r[col.GREEDY_CORRECT]:.1f}%"] if col.GREEDY_CORRECT in rows else []
    lines.append(f"| {' | '.join(map(str, key))} | {int(r['examples'])} | {' | '.join(cells)} |")
  return "\n".join(lines)


def draw(
  detection: pd.DataFrame, evals: pd.DataFrame, protocol: str, directory: str, convergence: dict | None = None
) -> None:
  """unlearned.png and pass_rates.png (under `protocol`), curves.png, and convergence.png from
  SFT's `convergence` record when given, into `directory`."""
  by_group = {
    f"{d} / phase {s}": v
    for (d, s), v in detection.groupby([col.DATASET, col.PHASE])[col.of(protocol, col.UNLEARNED)].mean().items()
  }
  plots.bar_chart(
    by_group,
    os.path.join(directory, "unlearned.png"),
    f"Unlearned training examples ({NAMES[protocol]})",
    "unlearned (%)",
  )
  plots.histogram(
    detection[col.of(protocol, col.PASS_AT_N)].to_numpy(),
    os.path.join(directory, "pass_rates.png"),
    f"pass@N of every training example ({NAMES[protocol]})",
    "fraction of predictions correct",
  )
  evals = evals.assign(group=evals["dataset"] + " / phase " + evals["phase"].astype(str))
  plots.learning_curves(evals, "group", os.path.join(directory, "curves.png"), "Learning curves (evaluation passes)")
  if convergence:
    plots.convergence(convergence, os.path.join(directory, "convergence.png"))


def _number(value: float | None) -> str:
  return "–" if value is None else f"{value:.4g}"


def convergence_section(record: dict) -> str:
  """ "Convergence": per SFT phase whether it converged, the epoch judged, the epochs trained, and
  each data set's improvements against delta (`sft/summary.json`'s `convergence`)."""
  last = record["phases"][record["last_phase"]]
  verdict = "converged" if record["converged"] else "did **not** converge: the model may be under-trained"
  window = last.get("window", 1)
  span = "the epoch before" if window == 1 else f"the {window} epochs before (means of {window} epochs)"
  lines = [
    "## Convergence",
    "",
    f"A phase has converged when, for every data set, the relative improvement of its mean response loss "
    f"over {span}, divided by the epoch's learning rate relative to the phase's peak (adjusted), is "
    f"below delta = {last['delta']:g}, or the loss moved by less than {last['min_delta']:g} nats. SFT's last "
    f"phase, {record['last_phase']}, {verdict}.",
    "",
    "| phase | converged | judged epoch | trained epochs | learning rate (of peak) | data set | loss: before → "
    "judged | relative improvement | adjusted improvement | criterion met |",
    "|" + "---|" * 10,
  ]
  for name, v in record["phases"].items():
    stopped = f" ({v['stopped_by']})" if v.get("stopped_by") else ""
    head = (
      f"| {name} | {'yes' if v['converged'] else '**no**'} | {v['epoch']} | {trained_epochs(v)}{stopped} | "
      f"{v['relative_lr']:.2f}"
    )
    for dataset, f in v["datasets"].items():
      met = f.get("reason") or (
        "**no**"
        if not f["converged"]
        else "yes"
        if f["adjusted_improvement"] < v["delta"]
        else "yes (loss moved < min_delta)"
      )
      lines.append(
        f"{head} | {dataset} | {_number(f['previous_loss'])} → {_number(f['loss'])} | "
        f"{_number(f.get('relative_improvement'))} | {_number(f.get('adjusted_improvement'))} | {met} |"
      )
  return "\n".join(lines + ["", "![convergence](convergence.png)", ""])


def markdown(
  detection: pd.DataFrame,
  summary: dict,
  detect: DetectConfig,
  diagnosis_section: str | None,
  convergence: dict | None = None,
) -> str:
  """The report's text; the figures of `draw` sit next to it."""
  lines = ["# ILP report", ""]
  for protocol in detect.protocols:
    s = summary[protocol]
    kappa = s["kappa_between_runs"]
    lines += [
      f"- **{NAMES[protocol]}**: {s['unlearned']} of {summary['examples']} training examples unlearned "
      f"({100 * s['unlearned_rate']:.1f}%): pass@N < {detect.threshold} in {s['repeat_rule']} of "
      f"{s['runs']} runs, N = {detect.num_samples} "
      + ("predictions from the 4-option distribution" if protocol == col.MULTIPLE_CHOICE else "generations")
      + f" at temperature {detect.temperature}"
      + (f"; Cohen's kappa between runs {kappa:.2f}." if kappa is not None else ".")
    ]
  if "kappa_between_protocols" in summary:
    lines.append(f"- Agreement of the two labels (Cohen's kappa): {summary['kappa_between_protocols']:.2f}.")
  lines += [
    "",
    "## Unlearned rate by data set and phase",
    "",
    rate_table(detection, [col.DATASET, col.PHASE], detect.protocols),
    "",
    "![unlearned](unlearned.png)",
    "",
    "## Pass rates",
    "",
    "![pass rates](pass_rates.png)",
    "",
    "## Training dynamics",
    "",
    "![curves](curves.png)",
    "",
  ]
  if convergence:
    lines.append(convergence_section(convergence))
  if col.P_EXIST in detection:
    lines += [
      "## Knowledge probes of the base model",
      "",
      f"- knowledge exists (P_exist: base accuracy over N MC predictions > {detect.mc.p_exist}): "
      f"{100 * detection[col.P_EXIST].mean():.1f}%",
      f"- base high-confidence errors (P(wrong option) > {detect.mc.t_conf}): "
      f"{100 * detection[col.BASE_HIGH_CONF_ERROR].mean():.1f}%",
      f"- mean JSD(base, SFT) over the options: {detection[col.JSD_BASE_SFT].mean():.3f} bits (log base 2)",
      "",
    ]
  if col.BASE_BLIND in detection:
    lines.insert(
      -1,
      f"- blind (base pass@{detect.base_samples} < {detect.threshold} and BoN-{detect.blind_bon_k} "
      f"< {detect.blind_bon}): {100 * detection[col.BASE_BLIND].mean():.1f}%",
    )
  if diagnosis_section is not None:
    lines.append(diagnosis_section)
  return "\n".join(lines)
