"""Each arm against the baseline, example by example: unlearned rates with paired bootstrap
intervals, overall and by data set, phase and *baseline-attributed cause* (the examples the
baseline attributed to I, II, ... followed into the arm), the difference in differences of a
mitigation, greedy accuracy, and ROUGE-L by position in the training stream (the paper's
Table 11).

Inputs are per-example tables (a run's `diagnosis/attribution.parquet`): id, dataset, phase,
unlearned, greedy_correct, greedy_text, reference, last_visit_position, and for the baseline
cause. An arm may lack examples it deleted or held out; every paired comparison is over the ids
both runs trained on, and the summary counts the others.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import pandas as pd

from ilp.detection import columns as col
from ilp.diagnosis.attribution import CAUSES
from ilp.scoring import verifiers

LEVEL = 0.95
COLUMNS = (
  col.ID,
  col.DATASET,
  col.PHASE,
  col.UNLEARNED,
  col.GREEDY_CORRECT,
  col.GREEDY_TEXT,
  col.REFERENCE,
  col.LAST_VISIT_POSITION,
)  # what the comparison reads of each run's attribution table
ARM = "_arm"  # suffix of the arm's columns in a paired table
# Resampled indices are drawn this many at a time, so a large run's bootstrap stays within memory.
CHUNK = 1 << 22
RATE_COLUMNS = [
  "group_kind",
  "group",
  "n",
  "baseline_rate",
  "arm_rate",
  "change",
  "change_low",
  "change_high",
  "relative_change",
  "baseline_low",
  "baseline_high",
  "arm_low",
  "arm_high",
]


def bootstrap_means(values: np.ndarray, samples: int, seed: int) -> np.ndarray:
  """Column means of `samples` resamples of the rows of `values` (n, k) -> (samples, k). All
  columns share each resample, which pairs them. The indices are those of successive
  `default_rng(seed).integers(0, n, (rows, n))` draws of at most CHUNK indices each."""
  if samples < 1:
    raise ValueError(f"bootstrap samples must be positive, not {samples}")
  columns = np.ascontiguousarray(np.asarray(values, np.float64).T)  # a column at a time: contiguous, ~10x faster
  n = columns.shape[1]
  rng = np.random.default_rng(seed)
  rows = max(1, CHUNK // max(n, 1))
  means = []
  for start in range(0, samples, rows):
    indices = rng.integers(0, n, size=(min(rows, samples - start), n))
    means.append(np.stack([column[indices].mean(axis=1) for column in columns], axis=1))
  return np.concatenate(means)


def _percentiles(draws: np.ndarray, level: float) -> tuple[float, float]:
  low, high = np.quantile(draws, [(1 - level) / 2, (1 + level) / 2])
  return float(low), float(high)


def mean_interval(values: np.ndarray, samples: int, seed: int, level: float = LEVEL) -> tuple[float, float]:
  """Percentile bootstrap interval of a mean; NaN for no values."""
  if not len(values):
    return math.nan, math.nan
  return _percentiles(bootstrap_means(np.asarray(values)[:, None], samples, seed)[:, 0], level)


def paired_bootstrap(
  base: np.ndarray, arm: np.ndarray, samples: int, seed: int, level: float = LEVEL
) -> tuple[float, float]:
  """Percentile bootstrap interval of mean(arm) - mean(base) over paired examples: the same
  resampled examples in both runs, so the examples' own difficulty cancels."""
  if len(base) != len(arm):
    raise ValueError(f"paired samples differ in length: {len(base)} baseline, {len(arm)} arm")
  if not len(base):
    return math.nan, math.nan
  means = bootstrap_means(np.column_stack([base, arm]), samples, seed)
  return _percentiles(means[:, 1] - means[:, 0], level)


def paired(base: pd.DataFrame, arm: pd.DataFrame) -> pd.DataFrame:
  """The examples both runs trained on: the baseline's columns, and the arm's with suffix _arm
  (an arm's own `cause` is dropped: groups are always the baseline's)."""
  for name, table, columns in (("baseline", base, COLUMNS + (col.CAUSE,)), ("arm", arm, COLUMNS)):
    missing = sorted(set(columns) - set(table.columns))
    if missing:
      raise ValueError(f"{name} table lacks columns {missing}")
  return base.merge(
    arm.drop(columns=[col.CAUSE], errors="ignore"), on=col.ID, suffixes=("", ARM), validate="one_to_one"
  )


def _row(kind: str, group: str, base: np.ndarray, arm: np.ndarray, samples: int, seed: int) -> dict[str, Any]:
  if not len(base):
    return {"group_kind": kind, "group": group, "n": 0, **{k: math.nan for k in RATE_COLUMNS[3:]}}
  b, a = float(base.mean()), float(arm.mean())
  means = bootstrap_means(np.column_stack([base, arm]), samples, seed)
  return {
    "group_kind": kind,
    "group": group,
    "n": len(base),
    "baseline_rate": b,
    "arm_rate": a,
    "change": a - b,
    **dict(zip(("change_low", "change_high"), _percentiles(means[:, 1] - means[:, 0], LEVEL))),
    "relative_change": (a - b) / b if b > 0 else math.nan,
    **dict(zip(("baseline_low", "baseline_high"), _percentiles(means[:, 0], LEVEL))),
    **dict(zip(("arm_low", "arm_high"), _percentiles(means[:, 1], LEVEL))),
  }


def rates(base: pd.DataFrame, arm: pd.DataFrame, samples: int, seed: int) -> pd.DataFrame:
  """Unlearned rate in the baseline and the arm over their common examples, one row per group
  (columns RATE_COLUMNS): "overall"/"all"; per "dataset"; per "phase"; and kind "cause": each
  cause I..V the baseline attributed (groups without common examples are left out), "unlearned"
  (every baseline-unlearned example) and "learned" (the baseline-learned ones: an arm must not
  make them unlearned). Intervals: 95% bootstrap, the change's paired."""
  joined = paired(base, arm)
  rows = []

  def add(kind: str, group: Any, sel: np.ndarray) -> None:
    rows.append(
      _row(
        kind,
        str(group),
        joined.loc[sel, col.UNLEARNED].to_numpy(float),
        joined.loc[sel, col.UNLEARNED + ARM].to_numpy(float),
        samples,
        seed,
      )
    )

  add("overall", "all", np.ones(len(joined), bool))
  for kind in (col.DATASET, col.PHASE):
    for value in sorted(joined[kind].unique()):
      add(kind, value, (joined[kind] == value).to_numpy())
  for cause in CAUSES:
    if (joined[col.CAUSE] == cause).any():
      add("cause", cause, (joined[col.CAUSE] == cause).to_numpy())
  unlearned = joined[col.UNLEARNED].to_numpy(bool)
  for name, sel in (("unlearned", unlearned), ("learned", ~unlearned)):
    if sel.any():
      add("cause", name, sel)
  return pd.DataFrame(rows, columns=RATE_COLUMNS)


def difference_in_differences(
  base: pd.DataFrame, arm: pd.DataFrame, targets: Sequence[str], samples: int, seed: int
) -> dict[str, Any]:
  """Change of the unlearned rate on the examples the baseline attributed to the target causes,
  minus the change on the other baseline-unlearned examples: what the mitigation did beyond what
  any retraining does. The interval resamples the two groups independently (stratified). A
  control arm (no targets) gets the change on all baseline-unlearned examples as `other_change`
  and NaN for the target and the DiD."""
  joined = paired(base, arm)
  target = joined[col.CAUSE].isin(list(targets)).to_numpy()
  other = joined[col.UNLEARNED].to_numpy(bool) & ~target
  diff = joined[col.UNLEARNED + ARM].to_numpy(float) - joined[col.UNLEARNED].to_numpy(float)
  out: dict[str, Any] = {"targets": list(targets), "target_n": int(target.sum()), "other_n": int(other.sum())}
  draws = {}
  for name, sel, group_seed in (("target", target, seed), ("other", other, seed + 1)):
    values = diff[sel]
    out[f"{name}_change"] = float(values.mean()) if len(values) else math.nan
    draws[name] = bootstrap_means(values[:, None], samples, group_seed)[:, 0] if len(values) else None
    out[f"{name}_change_low"], out[f"{name}_change_high"] = (
      _percentiles(draws[name], LEVEL) if len(values) else (math.nan, math.nan)
    )
  out["did"] = out["target_change"] - out["other_change"]
  out["did_low"], out["did_high"] = (
    _percentiles(draws["target"] - draws["other"], LEVEL) if target.any() and other.any() else (math.nan, math.nan)
  )
  return out


def greedy_accuracy(table: pd.DataFrame, samples: int = 1000, seed: int = 0) -> dict[str, Any]:
  """Share of greedy answers judged correct, with its bootstrap interval."""
  values = table[col.GREEDY_CORRECT].to_numpy(float)
  low, high = mean_interval(values, samples, seed)
  return {"examples": len(values), "rate": float(values.mean()) if len(values) else math.nan, "low": low, "high": high}


def rouge_by_position(table: pd.DataFrame, edge: float = 0.1) -> dict[str, Any]:
  """Mean ROUGE-L F-measure (detection's `rouge_l` verifier: rouge-score over normalised words) of
  the greedy answer against the reference for the examples whose last visit lies in the first
  `edge` of the training stream (position <= edge), the middle (|position - 1/2| <= edge / 2) and
  the last (position >= 1 - edge), with counts: whether what was seen last is remembered best.
  Unknown (NaN) positions count nowhere."""
  if not 0 < edge <= 0.5:
    raise ValueError(f"edge {edge} must lie in (0, 0.5]")
  position = table[col.LAST_VISIT_POSITION].to_numpy(float)
  parts = {"first": position <= edge, "middle": np.abs(position - 0.5) <= edge / 2, "last": position >= 1 - edge}
  out = {}
  for name, sel in parts.items():
    scores = [
      verifiers.rouge_l(str(pred), str(ref))
      for pred, ref in zip(table.loc[sel, col.GREEDY_TEXT], table.loc[sel, col.REFERENCE])
    ]
    out[name] = {"examples": int(sel.sum()), "rouge_l": float(np.mean(scores)) if scores else math.nan}
  return out


def _json_ready(value: Any) -> Any:
  """JSON-ready: NaN becomes None, numpy scalars Python numbers."""
  if isinstance(value, dict):
    return {str(k): _json_ready(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [_json_ready(v) for v in value]
  if isinstance(value, (bool, np.bool_)):
    return bool(value)
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
  return {
    cause: {
      arm: (
        None
        if s["by_cause"].get(cause, {}).get("relative_change") is None
        else -s["by_cause"][cause]["relative_change"]
      )
      for arm, s in summary.items()
    }
    for cause in CAUSES
    if any(cause in s["by_cause"] for s in summary.values())
  }


def reduction_interval(entry: dict[str, Any]) -> tuple[float, float]:
  """The 95% interval of a relative reduction (a `by_cause` entry): the paired change's interval
  over the baseline rate, negated (a cut is a negative change)."""
  b = entry.get("baseline_rate") or 0.0
  if b <= 0 or entry.get("change_low") is None or entry.get("change_high") is None:
    return math.nan, math.nan
  return -entry["change_high"] / b, -entry["change_low"] / b


def comparison(
  base: pd.DataFrame,
  arms: dict[str, pd.DataFrame],
  targets: dict[str, Sequence[str]],
  samples: int = 1000,
  seed: int = 0,
) -> tuple[pd.DataFrame, dict[str, Any]]:
  """The long table of every arm's `rates` (column `arm` first) and a JSON-ready summary per arm:
  examples compared, baseline ids missing from the arm and arm ids not in the baseline, the
  overall unlearned rates, the rates per baseline-attributed cause, the relative reduction on each
  target cause, the difference in differences, greedy accuracy of both runs over the common
  examples, and ROUGE-L by position of each run over its own table (a property of that run's
  training order, so the baseline's is the same for every arm).

  Args:
    base: the baseline's per-example table (with `cause`).
    arms: each arm's per-example table, by arm name.
    targets: each arm's target causes (empty or absent for a control arm).
    samples: bootstrap resamples.
    seed: bootstrap seed.
  """
  frames, summary = [], {}
  base_rouge = rouge_by_position(base)
  for name, arm in arms.items():
    joined = paired(base, arm)
    arm_targets = list(targets.get(name, ()))
    table = rates(base, arm, samples, seed)
    frames.append(table.assign(arm=name))
    overall = table.iloc[0]
    by_cause = table[table["group_kind"] == "cause"].set_index("group")
    correct = joined[[col.GREEDY_CORRECT, col.GREEDY_CORRECT + ARM]].to_numpy(float)
    change_low, change_high = paired_bootstrap(correct[:, 0], correct[:, 1], samples, seed)
    summary[name] = _json_ready(
      {
        "examples": len(joined),
        "missing_from_arm": len(base) - len(joined),
        "arm_only": int((~arm[col.ID].isin(base[col.ID])).sum()),
        "targets": arm_targets,
        "unlearned": {k: overall[k] for k in RATE_COLUMNS[3:]},
        "by_cause": {
          c: {
            k: r[k]
            for k in ("n", "baseline_rate", "arm_rate", "change", "change_low", "change_high", "relative_change")
          }
          for c, r in by_cause.iterrows()
        },
        "target_reduction": {
          c: -by_cause.loc[c, "relative_change"] if c in by_cause.index else math.nan for c in arm_targets
        },
        "difference_in_differences": difference_in_differences(base, arm, arm_targets, samples, seed),
        "greedy_accuracy": {
          "baseline": greedy_accuracy(base[base[col.ID].isin(arm[col.ID])], samples, seed),
          "arm": greedy_accuracy(arm[arm[col.ID].isin(base[col.ID])], samples, seed),
          "change": float(correct[:, 1].mean() - correct[:, 0].mean()) if len(joined) else math.nan,
          "change_low": change_low,
          "change_high": change_high,
        },
        "rouge_l_by_position": {"baseline": base_rouge, "arm": rouge_by_position(arm)},
      }
    )
  columns = ["arm"] + RATE_COLUMNS
  table = pd.concat(frames, ignore_index=True)[columns] if frames else pd.DataFrame(columns=columns)
  return table, summary
