"""The diagnosis as a report section: per-cause tables, the most typical examples of each cause,
and figures (data map, learning curves and pass rates by cause)."""
from __future__ import annotations

import os

import numpy as np
import pandas as pd

from ilp.diagnosis import attribution
from ilp.diagnosis.diagnose import GROUPS
from ilp.report import plots

FIGURES = {"data_map": "data_map.png", "curves": "curves_by_cause.png", "pass_rates": "pass_rates_by_cause.png"}


def draw(table: pd.DataFrame, log_frame: pd.DataFrame, directory: str) -> None:
  """The data map coloured by cause, learning curves per cause group, pass rates per cause."""
  plots.data_map(table, "cause", os.path.join(directory, FIGURES["data_map"]), "Data map, coloured by cause")
  evals = log_frame[log_frame["kind"] == "eval"].merge(table[["id", "cause"]], on="id")
  plots.learning_curves(evals, "cause", os.path.join(directory, FIGURES["curves"]), "Learning curves per cause group")
  unlearned = table[table["unlearned"].astype(bool)]
  plots.histogram({c: g["pass_at_n"].to_numpy() for c, g in unlearned.groupby("cause")} or {"": np.zeros(0)},
                  os.path.join(directory, FIGURES["pass_rates"]), "pass@N of unlearned examples, by cause",
                  "fraction of samples correct", bins=10)


def _cause_table(counts_by: dict[str, dict], key: str) -> list[str]:
  lines = [f"| {key} | " + " | ".join(f"{c}" for c in GROUPS) + " |", "|---" * (len(GROUPS) + 1) + "|"]
  for name, counts in counts_by.items():
    lines.append(f"| {name} | " + " | ".join(f"{v['count']} ({100 * v['share_of_unlearned']:.0f}%)"
                                             for v in counts.values()) + " |")
  return lines


def _cell(text) -> str:
  return str(text).replace("|", "\\|").replace("\n", " ")[:80]


def markdown(table: pd.DataFrame, summary: dict, link_prefix: str, typical: int) -> str:
  """The section; figures are linked under `link_prefix` (relative to where the Markdown lives)."""
  overall = summary["by_cause"]
  lines = ["## Why examples were not learned (diagnosis)", "",
           f"{summary['unlearned']} unlearned examples under the {summary['protocol']} protocol, "
           f"{summary['top_candidates']} of them top-K candidates (the most severe; the paper diagnoses these); "
           f"{100 * summary['unattributed_share']:.1f}% unattributed.", "",
           "| cause | unlearned examples | share of unlearned | top-K candidates | share of top-K |", "|---|---|---|---|---|"]
  lines += [f"| {c} {attribution.CAUSE_NAMES.get(c, '')} | {v['count']} | {100 * v['share_of_unlearned']:.1f}% | "
            f"{v['top_k_count']} | {100 * v['share_of_top_k']:.1f}% |" for c, v in overall.items()]
  lines += ["", "### By data set", ""] + _cause_table(summary["by_dataset"], "dataset")
  lines += ["", "### By phase", ""] + _cause_table(summary["by_phase"], "phase")
  lines += ["", "### Most typical examples of each cause", ""]
  for cause in attribution.CAUSES:
    rows = table[table["cause"] == cause].sort_values(f"score_{cause}", ascending=False).head(typical)
    if rows.empty:
      continue
    lines += [f"**{cause}: {attribution.CAUSE_NAMES[cause]}**", "", "| id | prompt | target | model says | evidence |",
              "|---|---|---|---|---|"]
    for _, r in rows.iterrows():
      fired = ", ".join(f.split(":", 1)[1] for f in r["fired"].split(";") if f.startswith(cause + ":"))
      lines.append(f"| {r['id']} | {_cell(r['prompt'])} | {_cell(r['reference'])} | {_cell(r.get('greedy_text', ''))} "
                   f"| score {r[f'score_{cause}']:.2f}: {fired} |")
    lines.append("")
  unattributed = table[table["cause"] == attribution.UNATTRIBUTED]
  if len(unattributed):
    shown = unattributed.sort_values("id").head(typical)
    lines += [f"**Unattributed: {len(unattributed)} unlearned examples with no cause's evidence** (the first "
              f"{len(shown)}, with every condition that fired)", "", "| id | prompt | target | model says | conditions |",
              "|---|---|---|---|---|"]
    lines += [f"| {r['id']} | {_cell(r['prompt'])} | {_cell(r['reference'])} | {_cell(r.get('greedy_text', ''))} | "
              f"{r['fired'].replace(';', ', ') or 'none'} |" for _, r in shown.iterrows()]
    lines.append("")
  lines += ["![data map](" + link_prefix + FIGURES["data_map"] + ")", "",
            "![curves by cause](" + link_prefix + FIGURES["curves"] + ")", "",
            "![pass rates by cause](" + link_prefix + FIGURES["pass_rates"] + ")", ""]
  return "\n".join(lines)
