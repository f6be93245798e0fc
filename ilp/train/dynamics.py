"""Writes the per-example dynamics log (its rows and their kinds: `ilp.scoring.dynamics_log`,
which reads it back).

Rows are buffered and written as Parquet files under `dynamics/` at checkpoint time, so after a
resume the log holds exactly the steps the restored state has taken. Each file is recorded with its
rows and checksum (`ilp.parts.Manifest`), so a damaged file is found before a resume builds on it
(`problems`) and before a reader concatenates it (`ilp.scoring.dynamics_log.load`).
"""

from __future__ import annotations

import glob
import os
import re
import shutil

import numpy as np
import pandas as pd

from ilp import fileio
from ilp.data.batches import EvalPoint
from ilp.parts import Manifest, rows_of
from ilp.scoring import dynamics_log
from ilp.scoring.dynamics_log import BATCH, EVAL
from ilp.scoring.statistics import STATS


def _step_of(path: str) -> tuple[int, int]:
  first, last = re.match(r".*-(\d+)-(\d+)", os.path.basename(path)).groups()
  return int(first), int(last)


class DynamicsWriter:
  """Buffers rows and writes them atomically; only the writing process (process 0) writes."""

  def __init__(self, directory: str, examples: pd.DataFrame, enabled: bool = True):
    """`examples` has the examples table's ID_COLUMNS, one row per example index used in batches."""
    self.directory = directory
    self.examples = examples.reset_index(drop=True)
    self.enabled = enabled
    self._pending: list[pd.DataFrame] = []
    self._first_step: int | None = None
    self._last_step = 0
    self._read: dict[str, pd.DataFrame] = {}  # the files `frame` has read
    if enabled:
      os.makedirs(directory, exist_ok=True)
    self.manifest = Manifest(directory, writer=enabled)

  def _write(self, frame: pd.DataFrame, name: str) -> None:
    fileio.write_parquet_atomic(frame, os.path.join(self.directory, name))
    self.manifest.add(name, len(frame))

  def _rows(self, rows: np.ndarray, stats: dict[str, np.ndarray], **columns) -> pd.DataFrame:
    real = rows >= 0
    frame = self.examples.iloc[rows[real]].reset_index(drop=True)
    for name, value in columns.items():
      frame[name] = value[real] if isinstance(value, np.ndarray) else value
    for name in STATS:
      frame[name] = np.asarray(stats[name])[real]
    frame["loss"] = frame["nll_sum"] / frame["tokens"].clip(lower=1)
    return frame

  def add_batch(
    self, step: int, phase: int, epoch: int, rows: np.ndarray, positions: np.ndarray, stats: dict[str, np.ndarray]
  ) -> None:
    """Buffers one training step's rows.

    Args:
      step: optimizer steps taken after this one.
      phase, epoch: where in the stream the step is (1-based).
      rows: the batch's example indices (-1: padding).
      positions: each row's position in the training stream.
      stats: per-row statistics (`ilp.scoring.statistics.STATS`).
    """
    if not self.enabled:
      return
    self._pending.append(
      self._rows(
        rows, stats, kind=BATCH, eval_point="", step=step, train_phase=phase, epoch=epoch, stream_position=positions
      )
    )
    self._first_step = step if self._first_step is None else self._first_step
    self._last_step = step

  def flush(self) -> None:
    """Writes the buffered batch rows as `batch-<first>-<last>.parquet`."""
    if not self.enabled or not self._pending:
      return
    self._write(
      pd.concat(self._pending, ignore_index=True), f"batch-{self._first_step:08d}-{self._last_step:08d}.parquet"
    )
    self._pending, self._first_step = [], None

  def write_eval(self, point: EvalPoint, rows: np.ndarray, stats: dict[str, np.ndarray]) -> None:
    if not self.enabled:
      return
    frame = self._rows(
      rows,
      stats,
      kind=EVAL,
      eval_point=point.name,
      step=point.step,
      train_phase=point.phase,
      epoch=point.epoch,
      stream_position=-1,
    )
    frame["phase_end"] = point.phase_end
    name = re.sub(r"[^A-Za-z0-9_.]+", "_", point.name)
    self._write(frame, f"eval-{point.step:08d}-{point.step:08d}-{name}.parquet")

  def frame(self) -> pd.DataFrame:
    """Every row so far: the files (each read once) and the rows not yet written (what a monitor of
    the running training sees)."""
    return dynamics_log.load(self.directory, self._read, self._pending)

  def discard_after(self, step: int) -> None:
    """Drops files written after the checkpoint a run resumes from (they will be redone), and
    records a kept file a kill left unrecorded (written whole: writes are atomic)."""
    self._pending, self._first_step = [], None
    if not self.enabled:
      return
    for path in glob.glob(os.path.join(self.directory, "*.parquet")):
      name = os.path.basename(path)
      if _step_of(path)[0] > step:
        os.remove(path)
        self.manifest.remove(name)
      elif name not in self.manifest.entries and (rows := rows_of(path)) is not None:
        self.manifest.add(name, rows)


def problems(directory: str) -> list[str]:
  """The log's recorded files that are missing or damaged ([] also when there is no log yet)."""
  return Manifest(directory, writer=False).problems() if os.path.isdir(directory) else []


def copy_until(source: str, directory: str, step: int) -> None:
  """Copies another run's dynamics files up to `step` (the checkpoint a run starts from,
  `sft.extend`), so that this run's log holds every step its state has taken."""
  os.makedirs(directory, exist_ok=True)
  copied = Manifest(directory)
  for path in glob.glob(os.path.join(source, "*.parquet")):
    if _step_of(path)[1] <= step:
      shutil.copy2(path, os.path.join(directory, os.path.basename(path)))
      copied.add(os.path.basename(path), rows_of(path) or 0)
