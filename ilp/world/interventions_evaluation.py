"""The interventions study scored on finished ILP-world runs (`scripts/evaluate_interventions.py`,
`configs/interventions.py`): each run's diagnosis joined with the world's planted ground truth,
per arm:

- on the examples the *baseline* attributed to the arm's target cause(s), followed into the arm:
  the unlearned rate before and after, and the relative reduction (95% paired bootstrap interval);
- the same on the other baseline-unlearned examples, and the ratio of the two reductions;
- the planted control group's change in points (ground truth; a mitigation must not damage it);
- whether the issue's expectations hold: target cut >= 40% relative, at least twice the cut on the
  others, control not worse by more than 2 points, M-I below "more epochs" on cause I (the fixed
  more-epochs arm, and the knowledge arm's equal-compute control), and, on a converged baseline,
  ten more epochs cutting the unlearned rate by at most 30% relative (the paper's "barely helps");
- the unlearned rate of every planted group in the baseline and each arm.
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np
import pandas as pd

from ilp.detection import columns as col
from ilp.diagnosis.attribution import CAUSES
from ilp.interventions import arms as arms_lib
from ilp.interventions import compare
from ilp.interventions.config import CONTROL_PREFIX
from ilp.layout import Layout
from ilp.world.files import load_ground_truth

ARM_UNLEARNED = col.UNLEARNED + compare.ARM


def _interval(lo: float, hi: float) -> list[float | None]:
  return [None if np.isnan(lo) else float(lo), None if np.isnan(hi) else float(hi)]


def change(base: np.ndarray, arm: np.ndarray, samples: int) -> dict:
  """Rates before/after over paired examples, the relative reduction and its bootstrap interval
  (`samples` resamples)."""
  if not len(base):
    return {"examples": 0}
  b, a = float(base.mean()), float(arm.mean())
  lo, hi = compare.paired_bootstrap(base.astype(float), arm.astype(float), samples, 0)
  reduction = (b - a) / b if b > 0 else float("nan")
  return {
    "examples": int(len(base)),
    "baseline": b,
    "arm": a,
    "change": a - b,
    "change_interval": _interval(lo, hi),
    "relative_reduction": None if np.isnan(reduction) else reduction,
    "relative_reduction_interval": _interval(-hi / b, -lo / b) if b > 0 else [None, None],
  }


def _cause_i(layout: Layout, base: pd.DataFrame, arm: str) -> float | None:
  """The unlearned rate, in run `arm`, of the examples the baseline attributed to I."""
  path = layout.arm(arm).attribution
  if not os.path.exists(path):
    return None
  joined = base[base[col.CAUSE] == "I"].merge(
    pd.read_parquet(path, columns=[col.ID, col.UNLEARNED]), on=col.ID, suffixes=("", compare.ARM)
  )
  return float(joined[ARM_UNLEARNED].mean()) if len(joined) else None


def arm_entry(base: pd.DataFrame, arm: Any, attribution: pd.DataFrame, samples: int) -> dict:
  """One arm (`arm`: its `ArmConfig`) against the baseline (`base`: the baseline's attribution with
  the planted groups), on the examples both have."""
  joined = base.merge(attribution, on=col.ID, suffixes=("", compare.ARM))
  targets = arms_lib.targets(arm)
  target = joined[col.CAUSE].isin(targets) if targets else joined[col.UNLEARNED]
  others = joined[col.UNLEARNED] & ~target
  pick = lambda sel: change(
    joined.loc[sel, col.UNLEARNED].to_numpy(), joined.loc[sel, ARM_UNLEARNED].to_numpy(), samples
  )
  entry = {
    "intervention": arm.intervention,
    "targets": list(targets),
    "examples_compared": int(len(joined)),
    "examples_missing": int(len(base) - len(joined)),
    "target": pick(target),
    "others": pick(others),
    "control": pick(joined["group"] == "control"),
    "all": pick(np.ones(len(joined), bool)),
    "cause_I_unlearned": float(joined.loc[joined[col.CAUSE] == "I", ARM_UNLEARNED].mean()),
    "planted_groups": {
      g: {"baseline": float(d[col.UNLEARNED].mean()), "arm": float(d[ARM_UNLEARNED].mean()), "examples": int(len(d))}
      for g, d in joined.groupby("group")
    },
  }
  t, o, c = entry["target"], entry["others"], entry["control"]
  if targets and t["examples"] and t["relative_reduction"] is not None:
    other_cut = o.get("relative_reduction") or 0.0
    entry["expectations"] = {
      "target_cut_40pct": t["relative_reduction"] >= 0.4,
      "twice_the_others": t["relative_reduction"] >= 2 * max(other_cut, 0.0),
      "control_within_2_points": c["change"] <= 0.02,
    }
  return entry


def evaluate(layout: Layout, config: Any, samples: int) -> dict:
  """Every arm of the run (`config`: its `ilp.config.Config`) that has a diagnosis, against the
  baseline; `samples` bootstrap resamples per interval."""
  truth = load_ground_truth(layout.world)[["id", "group"]]
  base = pd.read_parquet(layout.attribution, columns=[col.ID, col.UNLEARNED, col.CAUSE]).merge(truth, on=col.ID)
  result = {"baseline_unlearned_rate": float(base[col.UNLEARNED].mean()), "arms": {}}
  for arm in config.interventions.arms:
    path = layout.arm(arm.name).attribution
    if os.path.exists(path):
      result["arms"][arm.name] = arm_entry(base, arm, pd.read_parquet(path, columns=[col.ID, col.UNLEARNED]), samples)
  by_intervention = {e["intervention"]: name for name, e in result["arms"].items()}
  if "knowledge" in by_intervention and "epochs" in by_intervention:
    compared = {}
    if os.path.exists(layout.compare_summary):
      with open(layout.compare_summary) as f:
        compared = json.load(f)
    knowledge = by_intervention["knowledge"]
    control = ((compared.get("arms", {}).get(knowledge) or {}).get("equal_compute") or {}).get("control")
    result["cause_I_knowledge_vs_more_epochs"] = {
      "knowledge": result["arms"][knowledge]["cause_I_unlearned"],
      "more_epochs": result["arms"][by_intervention["epochs"]]["cause_I_unlearned"],
      "equal_compute_control": control,
      "at_equal_compute": _cause_i(layout, base, control) if control else None,
    }
  for name, e in result["arms"].items():  # ten more epochs on a converged baseline: the paper's "barely helps"
    settings = next(a.typed_settings() for a in config.interventions.arms if a.name == name)
    cut = e["all"].get("relative_reduction")
    if e["intervention"] == "epochs" and getattr(settings, "extra", 0) and cut is not None:
      e["expectations"] = {"cut_at_most_30pct": cut <= 0.3}
  return result


def response_matrix(runs: list[tuple[Layout, Any]], samples: int) -> dict:
  """The response matrix over several runs (world seeds): rows the causes each baseline attributed,
  columns the arms (the configured ones, with the equal-compute controls that ran), each cell the
  relative reduction of those examples' unlearned rate in the arm, pooled over the runs' examples
  (each baseline-attributed example is one paired observation) with its 95% paired bootstrap
  interval, and each run's own reduction (`by_run`, None where the arm did not run)."""
  cells: dict[str, dict[str, dict]] = {}
  pairs: dict[tuple[str, str], list[list[np.ndarray]]] = {}
  for k, (layout, config) in enumerate(runs):
    base = pd.read_parquet(layout.attribution, columns=[col.ID, col.UNLEARNED, col.CAUSE])
    controls = os.listdir(layout.path("arms")) if os.path.isdir(layout.path("arms")) else []
    names = [a.name for a in config.interventions.arms] + sorted(d for d in controls if d.startswith(CONTROL_PREFIX))
    for name in names:
      path = layout.arm(name).attribution
      if not os.path.exists(path):
        continue
      joined = base.merge(pd.read_parquet(path, columns=[col.ID, col.UNLEARNED]), on=col.ID, suffixes=("", compare.ARM))
      for cause, rows in joined[joined[col.CAUSE].isin(CAUSES)].groupby(col.CAUSE):
        pair = pairs.setdefault((cause, name), [[], [], [None] * len(runs)])
        before, after = rows[col.UNLEARNED].to_numpy(), rows[ARM_UNLEARNED].to_numpy()
        pair[0].append(before)
        pair[1].append(after)
        pair[2][k] = float((before.mean() - after.mean()) / before.mean()) if before.any() else None
  for (cause, name), (before, after, by_run) in sorted(pairs.items()):
    cell = change(np.concatenate(before), np.concatenate(after), samples)
    cells.setdefault(cause, {})[name] = {**cell, "by_run": by_run}
  return {"runs": [layout.root for layout, _ in runs], "cells": cells}


def matrix_text(matrix: dict) -> str:
  """The pooled response matrix: per cell the reduction [95% interval] (per-run reductions)."""
  arms = sorted({a for row in matrix["cells"].values() for a in row}, key=lambda a: (a.startswith("more_epochs"), a))
  lines = [f"\nresponse matrix over {len(matrix['runs'])} runs: relative reduction [95%] (per run)"]
  for cause, row in sorted(matrix["cells"].items()):
    n = max(c["examples"] for c in row.values())
    parts = []
    for arm in arms:
      c = row.get(arm)
      if c is None:
        continue
      lo, hi = c["relative_reduction_interval"]
      runs = "/".join("—" if r is None else f"{100 * r:.0f}" for r in c["by_run"])
      parts.append(f"{arm} {_pct(c['relative_reduction'])} [{_pct(lo)}, {_pct(hi)}] ({runs})")
    lines.append(f"{cause} (n={n}): " + "; ".join(parts))
  return "\n".join(lines)


def _pct(x: float | None) -> str:
  return "—" if x is None else f"{100 * x + 0.0:.1f}%"


def summary_text(name: str, result: dict) -> str:
  """The run's table: per arm the target's rates and cut, the others' cut, control and overall
  change, and the expectations; cause I against more epochs; every planted group per arm."""
  lines = [
    f"\n{name}: baseline unlearned {_pct(result['baseline_unlearned_rate'])} (generative label)",
    f"{'arm':<16} {'target':<7} {'n':>4} {'base→arm':>15} {'rel. cut [95%]':>22} {'others cut':>11} "
    f"{'control Δ':>10} {'all Δ':>8}  expectations",
  ]
  for arm, e in result["arms"].items():
    t, o, c, a = e["target"], e["others"], e["control"], e["all"]
    lo, hi = t.get("relative_reduction_interval", [None, None])
    lines.append(
      f"{arm:<16} {','.join(e['targets']) or '-':<7} {t['examples']:>4} "
      f"{_pct(t.get('baseline')):>7}→{_pct(t.get('arm')):<7} "
      f"{_pct(t.get('relative_reduction')):>7} [{_pct(lo)}, {_pct(hi)}] "
      f"{_pct(o.get('relative_reduction')):>11} {100 * c['change']:>+9.1f}p {100 * a['change']:>+7.1f}p  "
      + ", ".join(f"{k}={'yes' if v else 'NO'}" for k, v in e.get("expectations", {}).items())
    )
  if "cause_I_knowledge_vs_more_epochs" in result:
    r = result["cause_I_knowledge_vs_more_epochs"]
    lines.append(
      f"cause I (baseline-attributed): knowledge arm {_pct(r['knowledge'])} vs more epochs "
      f"{_pct(r['more_epochs'])}; at equal compute ({r['equal_compute_control'] or 'no control'}) "
      f"{_pct(r['at_equal_compute'])}"
    )
  groups = sorted({g for e in result["arms"].values() for g in e["planted_groups"]})
  lines.append(f"{'planted group':<14}" + "".join(f"{n[:12]:>13}" for n in ["baseline", *result["arms"]]))
  for g in groups:
    first = next(iter(result["arms"].values()))["planted_groups"].get(g, {})
    lines.append(
      f"{g:<14}{_pct(first.get('baseline')):>13}"
      + "".join(f"{_pct(e['planted_groups'].get(g, {}).get('arm')):>13}" for e in result["arms"].values())
    )
  return "\n".join(lines)
