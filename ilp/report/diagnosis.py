"""The diagnosis as a report section: per-cause tables, the most typical examples of each cause,
and figures (data map, learning curves and pass rates by cause)."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd

from ilp.detection import columns as col
from ilp.diagnosis import attribution
from ilp.diagnosis.diagnose import GROUPS
from ilp.report import plots
from ilp.scoring import dynamics_log

FIGURES = {"data_map": "data_map.png", "curves": "curves_by_cause.png", "pass_rates": "pass_rates_by_cause.png"}


def draw(table: pd.DataFrame, log_frame: pd.DataFrame, directory: str) -> None:
  """The data map coloured by cause, learning curves per cause group, pass rates per cause."""
  plots.data_map(table, col.CAUSE, os.path.join(directory, FIGURES["data_map"]), "Data map, coloured by cause")
  evals = dynamics_log.rows(log_frame, dynamics_log.EVAL).merge(table[[col.ID, col.CAUSE]], on=col.ID)
  plots.learning_curves(evals, col.CAUSE, os.path.join(directory, FIGURES["curves"]), "Learning curves per cause group")
  unlearned = table[table[col.UNLEARNED].astype(bool)]
  plots.histogram(
    {c: g[col.PASS_AT_N].to_numpy() for c, g in unlearned.groupby(col.CAUSE)} or {"": np.zeros(0)},
    os.path.join(directory, FIGURES["pass_rates"]),
    "pass@N of unlearned examples, by cause",
    "fraction of samples correct",
    bins=10,
  )


def cause_curves(table: pd.DataFrame, log_frame: pd.DataFrame) -> dict[int, dict[str, float]]:
  """Per evaluation step, the mean loss and exact match of the examples attributed to each cause
  (and of the learned ones, for reference): TensorBoard scalars `diagnose/curves/<metric>/<cause>`,
  so causes compare as curves over training."""
  evals = dynamics_log.rows(log_frame, dynamics_log.EVAL).merge(table[[col.ID, col.CAUSE]], on=col.ID)
  means = evals.groupby(["step", col.CAUSE])[["loss", "exact_match"]].mean()
  curves: dict[int, dict[str, float]] = {}
  for (step, cause), row in means.iterrows():
    for metric in ("loss", "exact_match"):
      curves.setdefault(int(step), {})[f"diagnose/curves/{metric}/{cause}"] = float(row[metric])
  return curves


def _cause_table(counts_by: dict[str, dict], key: str) -> list[str]:
  lines = [f"| {key} | " + " | ".join(f"{c}" for c in GROUPS) + " |", "|---" * (len(GROUPS) + 1) + "|"]
  for name, counts in counts_by.items():
    lines.append(
      f"| {name} | "
      + " | ".join(f"{v['count']} ({100 * v['share_of_unlearned']:.0f}%)" for v in counts.values())
      + " |"
    )
  return lines


def _cell(text) -> str:
  return str(text).replace("|", "\\|").replace("\n", " ")[:80]


def _example_cells(row: pd.Series) -> str:
  """id | prompt | target | model says, of one attribution row."""
  return (
    f"{row[col.ID]} | {_cell(row[col.PROMPT])} | {_cell(row[col.REFERENCE])} | {_cell(row.get(col.GREEDY_TEXT, ''))}"
  )


def markdown(table: pd.DataFrame, summary: dict, link_prefix: str, typical: int) -> str:
  """The section; figures are linked under `link_prefix` (relative to where the Markdown lives)."""
  overall = summary["by_cause"]
  lines = [
    "## Why examples were not learned (diagnosis)",
    "",
    f"{summary['unlearned']} unlearned examples under the {summary['protocol']} protocol, "
    f"{summary['top_candidates']} of them top-K candidates (the most severe; the paper diagnoses these); "
    f"{100 * summary['unattributed_share']:.1f}% unattributed.",
    "",
    "| cause | unlearned examples | share of unlearned | top-K candidates | share of top-K |",
    "|---|---|---|---|---|",
  ]
  lines += [
    f"| {c} {attribution.CAUSE_NAMES.get(c, '')} | {v['count']} | {100 * v['share_of_unlearned']:.1f}% | "
    f"{v['top_k_count']} | {100 * v['share_of_top_k']:.1f}% |"
    for c, v in overall.items()
  ]
  lines += ["", "### By data set", ""] + _cause_table(summary["by_dataset"], "dataset")
  lines += ["", "### By phase", ""] + _cause_table(summary["by_phase"], "phase")
  lines += ["", "### Most typical examples of each cause", ""]
  for cause in attribution.CAUSES:
    rows = table[table[col.CAUSE] == cause].sort_values(col.score(cause), ascending=False).head(typical)
    if rows.empty:
      continue
    lines += [
      f"**{cause}: {attribution.CAUSE_NAMES[cause]}**",
      "",
      "| id | prompt | target | model says | evidence |",
      "|---|---|---|---|---|",
    ]
    for _, r in rows.iterrows():
      fired = ", ".join(f.split(":", 1)[1] for f in r[col.FIRED].split(";") if f.startswith(cause + ":"))
      lines.append(f"| {_example_cells(r)} | score {r[col.score(cause)]:.2f}: {fired} |")
    lines.append("")
  unattributed = table[table[col.CAUSE] == attribution.UNATTRIBUTED]
  if len(unattributed):
    shown = unattributed.sort_values(col.ID).head(typical)
    lines += [
      f"**Unattributed: {len(unattributed)} unlearned examples with no cause's evidence** (the first "
      f"{len(shown)}, with every condition that fired)",
      "",
      "| id | prompt | target | model says | conditions |",
      "|---|---|---|---|---|",
    ]
    lines += [f"| {_example_cells(r)} | {r[col.FIRED].replace(';', ', ') or 'none'} |" for _, r in shown.iterrows()]
    lines.append("")
  lines += [
    "![data map](" + link_prefix + FIGURES["data_map"] + ")",
    "",
    "![curves by cause](" + link_prefix + FIGURES["curves"] + ")",
    "",
    "![pass rates by cause](" + link_prefix + FIGURES["pass_rates"] + ")",
    "",
  ]
  return "\n".join(lines)
