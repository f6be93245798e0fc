"""The per-example dynamics log, as read: one row per (example, time it was seen or evaluated).

Training writes it (`ilp.train.dynamics.DynamicsWriter`); diagnosis, the report and the scripts
read it through here, below both, so reading the log needs nothing of training. Rows are keyed by
the examples table's `ID_COLUMNS` and carry the statistics of `ilp.scoring.statistics.STATS`, and
are of two kinds (column KIND):
- BATCH: the example in the forward pass of the training step that used it (parameters *before*
  that step's update), with its training phase, epoch and stream position;
- EVAL: a full pass over the training set at an evaluation point (start, epoch and phase ends,
  every K steps).
"""

from __future__ import annotations

import glob
import os
from typing import Sequence

import pandas as pd

from ilp.fileio import ResumeError
from ilp.parts import Manifest

KIND = "kind"
BATCH, EVAL = "batch", "eval"


def load(
  directory: str, cache: dict[str, pd.DataFrame] | None = None, pending: Sequence[pd.DataFrame] = ()
) -> pd.DataFrame:
  """Every row of a dynamics directory (`<run>/dynamics`), ordered by kind, step and example; each
  file must hold the rows it was recorded with (`ilp.parts.Manifest`).

  Args:
    directory: the log's directory.
    cache: path -> rows of the files read before, updated: a written file never changes, so a
      monitor reading a growing log during training reads each file once.
    pending: rows of the running training not written yet, added to the files'.
  """
  files = sorted(glob.glob(os.path.join(directory, "*.parquet")))
  if not files and not pending:
    raise FileNotFoundError(f"{directory}: no dynamics files")
  recorded = Manifest(directory, writer=False).entries if files else {}
  cache = {} if cache is None else cache
  for path in files:
    if path not in cache:
      cache[path] = pd.read_parquet(path)
  frames = [cache[path] for path in files]
  for path, frame in zip(files, frames):
    expected = recorded.get(os.path.basename(path), {}).get("rows")
    if expected is not None and expected != len(frame):
      raise ResumeError(f"{path}: {len(frame)} rows, {expected} when written; the sft stage must be redone")
  frame = pd.concat([*frames, *pending], ignore_index=True)
  return frame.sort_values([KIND, "step", "id", "stream_position"], kind="stable").reset_index(drop=True)


def rows(frame: pd.DataFrame, kind: str) -> pd.DataFrame:
  """The log's rows of one kind (BATCH or EVAL)."""
  return frame[frame[KIND] == kind]


def cartography(
  frame: pd.DataFrame, kind: str = EVAL, skip_start: bool = True, id_columns: Sequence[str] = ("id", "dataset", "phase")
) -> pd.DataFrame:
  """Dataset-Cartography summaries per example, from EVAL passes (default) or BATCH visits.

  confidence / variability: mean / std of the gold-token probability; correctness: share of
  exact-match rows; forgetting_events: exact-match 1 -> 0 transitions in step order (Toneva et
  al.); first_learned_step: first step with exact match (NaN if never); final_*: last row.
  """
  selected = rows(frame, kind)
  if kind == EVAL and skip_start:
    selected = selected[selected["eval_point"] != "start"]
  selected = selected.sort_values(["id", "step"], kind="stable")
  learned = selected["exact_match"] > 0.5
  previous = learned.groupby(selected["id"]).shift(1, fill_value=False)
  selected = selected.assign(_forgot=(previous & ~learned).astype(int), _learned_step=selected["step"].where(learned))
  grouped = selected.groupby(list(id_columns), sort=True)
  out = grouped.agg(
    confidence=("gold_prob", "mean"),
    correctness=("exact_match", "mean"),
    forgetting_events=("_forgot", "sum"),
    first_learned_step=("_learned_step", "min"),
    final_exact_match=("exact_match", "last"),
    final_loss=("loss", "last"),
    observations=("step", "size"),
  )
  out.insert(1, "variability", grouped["gold_prob"].std(ddof=0))  # population std, vectorised
  return out.reset_index()
