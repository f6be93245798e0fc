"""Each arm against the baseline, example by example: unlearned rates with paired bootstrap
intervals, overall and by data set, phase and *baseline-attributed cause* (the examples the
baseline attributed to I, II, ... followed into the arm), the difference in differences of a
mitigation, greedy accuracy, and ROUGE-L by position in the training stream (the paper's
Table 11).

Inputs are per-example tables (a run's `diagnosis/attribution.parquet`): id, dataset, phase,
unlearned, greedy_correct, greedy_text, reference, last_visit_position, and for the baseline
cause. An arm may lack examples it deleted or held out; every comparison is over the ids both
runs trained on, and the summary counts the others.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import pandas as pd

from ilp.scoring import verifiers

CAUSES = ("I", "II", "III", "IV", "V")
LEVEL = 0.95


def _indices(n: int, samples: int, seed: int) -> np.ndarray:
  return np.random.default_rng(seed).integers(0, n, size=(samples, n))


def mean_interval(values: np.ndarray, samples: int, seed: int) -> tuple[float, float]:
  """Percentile bootstrap interval of a mean."""
  if not len(values):
    return math.nan, math.nan
  means = np.asarray(values, np.float64)[_indices(len(values), samples, seed)].mean(axis=1)
  return tuple(float(x) for x in np.quantile(means, [(1 - LEVEL) / 2, (1 + LEVEL) / 2]))


def paired_bootstrap(base: np.ndarray, arm: np.ndarray, samples: int, seed: int) -> tuple[float, float]:
  """Percentile bootstrap interval of mean(arm) - mean(base) over paired examples (the same
  resampled examples in both runs, so the examples' own difficulty cancels)."""
  return mean_interval(np.asarray(arm, np.float64) - np.asarray(base, np.float64), samples, seed)


def _row(kind: str, group: str, base: np.ndarray, arm: np.ndarray, samples: int, seed: int) -> dict[str, Any]:
  b, a = float(base.mean()), float(arm.mean())
  low, high = paired_bootstrap(base, arm, samples, seed)
  return {"group_kind": kind, "group": group, "n": len(base), "baseline_rate": b, "arm_rate": a, "change": a - b,
          "change_low": low, "change_high": high, "relative_change": (a - b) / b if b > 0 else math.nan,
          **dict(zip(("baseline_low", "baseline_high"), mean_interval(base, samples, seed))),
          **dict(zip(("arm_low", "arm_high"), mean_interval(arm, samples, seed)))}


def paired(base: pd.DataFrame, arm: pd.DataFrame) -> pd.DataFrame:
  """The examples both runs trained on: the baseline's columns, and the arm's with suffix _arm."""
  return base.merge(arm, on="id", suffixes=("", "_arm"))


def rates(joined: pd.DataFrame, samples: int, seed: int) -> pd.DataFrame:
  """Unlearned rate before/after, per group: overall; per data set; per phase; per cause the
  baseline attributed (I..V), over all baseline-unlearned examples ("unlearned") and over the
  baseline-learned ones ("learned": an arm must not make them unlearned)."""
  rows = []
  add = lambda kind, group, sel: rows.append(_row(kind, str(group), joined.loc[sel, "unlearned"].to_numpy(float),
                                                  joined.loc[sel, "unlearned_arm"].to_numpy(float), samples, seed))
  add("overall", "all", np.ones(len(joined), bool))
  for kind in ("dataset", "phase"):
    for value in sorted(joined[kind].unique()):
      add(kind, value, joined[kind] == value)
  for cause in CAUSES:
    if (joined["cause"] == cause).any():
      add("cause", cause, joined["cause"] == cause)
  for name, sel in (("unlearned", joined["unlearned"]), ("learned", ~joined["unlearned"])):
    if sel.any():
      add("cause", name, sel)
  return pd.DataFrame(rows)


def difference_in_differences(joined: pd.DataFrame, targets: Sequence[str], samples: int, seed: int) -> dict[str, Any]:
  """Change of the unlearned rate on the baseline's examples of the target causes minus the change
  on the other baseline-unlearned examples, with a stratified bootstrap interval (each group
  resampled on its own). Without targets (a control arm): NaN."""
  unlearned = joined["unlearned"].to_numpy(bool)
  target = joined["cause"].isin(targets).to_numpy() if targets else np.zeros(len(joined), bool)
  other = unlearned & ~target
  diff = (joined["unlearned_arm"].to_numpy(float) - joined["unlearned"].to_numpy(float))
  out = {"targets": list(targets), "target_n": int(target.sum()), "other_n": int(other.sum()),
         "target_change": float(diff[target].mean()) if target.any() else math.nan,
         "other_change": float(diff[other].mean()) if other.any() else math.nan}
  out["did"] = out["target_change"] - out["other_change"]
  if target.any() and other.any():
    t = diff[target][_indices(int(target.sum()), samples, seed)].mean(axis=1)
    o = diff[other][_indices(int(other.sum()), samples, seed + 1)].mean(axis=1)
    out["did_low"], out["did_high"] = (float(x) for x in np.quantile(t - o, [(1 - LEVEL) / 2, (1 + LEVEL) / 2]))
  else:
    out["did_low"] = out["did_high"] = math.nan
  return out


def rouge_by_position(table: pd.DataFrame, edge: float = 0.1) -> dict[str, Any]:
  """Mean ROUGE-L of the greedy answer against the reference for examples whose last visit lies in
  the first `edge` of the training stream, the middle (|position - 1/2| <= edge / 2) and the last
  `edge`, with counts."""
  position = table["last_visit_position"].to_numpy(float)
  parts = {"first": position <= edge, "middle": np.abs(position - 0.5) <= edge / 2, "last": position >= 1 - edge}
  out = {}
  for name, sel in parts.items():
    scores = [verifiers.rouge_l(p, r) for p, r in zip(table.loc[sel, "greedy_text"], table.loc[sel, "reference"])]
    out[name] = {"examples": int(sel.sum()), "rouge_l": float(np.mean(scores)) if scores else math.nan}
  return out


def _plain(value: Any) -> Any:
  """JSON-ready: NaN becomes None, numpy scalars Python numbers."""
  if isinstance(value, dict):
    return {k: _plain(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [_plain(v) for v in value]
  if isinstance(value, (np.floating, float)):
    return None if math.isnan(value) else float(value)
  if isinstance(value, np.integer):
    return int(value)
  return value


def response_matrix(summary: dict[str, Any]) -> dict[str, dict[str, float | None]]:
  """Rows: the causes the baseline attributed; columns: the arms; cells: the relative reduction
  of the unlearned rate on that cause's examples (1 = all learned in the arm, negative = worse).
  A diagnosis confirmed by intervention has a dominant diagonal: each cause responds most to its
  own mitigation. It needs no ground truth, so a user can check it on their own data."""
  return {cause: {arm: (None if s["by_cause"].get(cause, {}).get("relative_change") is None
                        else -s["by_cause"][cause]["relative_change"]) for arm, s in summary.items()}
          for cause in CAUSES if any(cause in s["by_cause"] for s in summary.values())}


def comparison(base: pd.DataFrame, arms: dict[str, pd.DataFrame], targets: dict[str, Sequence[str]],
               samples: int = 1000, seed: int = 0) -> tuple[pd.DataFrame, dict[str, Any]]:
  """The long table of every arm's `rates` (column `arm`) and a JSON-ready summary per arm.

  Args:
    base: the baseline's per-example table (with `cause`).
    arms: each arm's per-example table, by arm name.
    targets: each arm's target causes (empty for a control arm).
    samples, seed: the bootstrap.
  """
  frames, summary = [], {}
  for name, arm in arms.items():
    joined = paired(base, arm.drop(columns=["cause"], errors="ignore"))
    table = rates(joined, samples, seed)
    frames.append(table.assign(arm=name))
    overall = table.iloc[0]
    by_cause = table[table["group_kind"] == "cause"].set_index("group")
    accuracy = lambda column: dict(zip(("rate", "low", "high"), (joined[column].mean(),
                                                                  *mean_interval(joined[column].to_numpy(float), samples, seed))))
    summary[name] = _plain({
        "examples": len(joined), "missing_from_arm": len(base) - len(joined), "targets": list(targets.get(name, ())),
        "unlearned": {k: overall[k] for k in ("baseline_rate", "arm_rate", "change", "change_low", "change_high",
                                              "baseline_low", "baseline_high", "arm_low", "arm_high")},
        "by_cause": {c: {k: r[k] for k in ("n", "baseline_rate", "arm_rate", "change", "change_low", "change_high",
                                           "relative_change")} for c, r in by_cause.iterrows()},
        "difference_in_differences": difference_in_differences(joined, targets.get(name, ()), samples, seed),
        "greedy_accuracy": {"baseline": accuracy("greedy_correct"), "arm": accuracy("greedy_correct_arm")},
        "rouge_l_by_position": {"baseline": rouge_by_position(base), "arm": rouge_by_position(arm)}})
  columns = ["arm", "group_kind", "group", "n", "baseline_rate", "arm_rate", "change", "change_low", "change_high",
             "relative_change", "baseline_low", "baseline_high", "arm_low", "arm_high"]
  table = pd.concat(frames, ignore_index=True)[columns] if frames else pd.DataFrame(columns=columns)
  return table, summary
