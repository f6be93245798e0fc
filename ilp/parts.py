"""Resumable outputs written one part at a time (detection chunks, dynamics log files): each part
is recorded once whole, with its row count, size and SHA-256, so a resume trusts only parts that
are intact and a reader concatenates only parts with the rows they were written with.

Parts are written atomically (`ilp.fileio`), so a part on disk is whole or absent; the record
(`parts.json`) is written after the part, so a kill in between leaves a whole part the record
lacks, which `Manifest.add` records on the next resume. A damaged part (bit rot, truncation, a
copy gone wrong) differs from its record and is computed again or refused, never read.
"""

from __future__ import annotations

import json
import logging
import os
from typing import TYPE_CHECKING

from ilp import checksums, fileio

if TYPE_CHECKING:
  import pandas as pd

log = logging.getLogger(__name__)
RECORD = "parts.json"


class Manifest:
  """The record of the parts in `directory`: {file name: {rows, size, sha256}}. Only `writer`
  (process 0) writes it; every process reads it."""

  def __init__(self, directory: str, writer: bool = True):
    self.directory, self.writer = directory, writer
    self.path = os.path.join(directory, RECORD)
    self.entries: dict[str, dict] = {}
    self.damaged = ""  # why the record could not be read: no part on disk is then trusted
    if os.path.exists(self.path):
      try:
        with open(self.path) as f:
          self.entries = dict(json.load(f)["parts"])
        if not all(isinstance(v, dict) and {"rows", "size", "sha256"} <= set(v) for v in self.entries.values()):
          raise ValueError("an entry lacks rows, size or sha256")
      except (ValueError, KeyError, TypeError) as e:
        self.entries = {}
        self.damaged = f"{self.path}: damaged ({type(e).__name__}), so none of its parts is trusted"

  def _save(self) -> None:
    if self.writer:
      fileio.write_json_atomic(self.path, {"parts": self.entries})

  def add(self, name: str, rows: int) -> None:
    """Records part `name` (written whole just now) with its `rows`."""
    self.entries[name] = {
      "rows": int(rows),
      **checksums.manifest(self.directory, [os.path.join(self.directory, name)])[name],
    }
    self._save()

  def remove(self, name: str) -> None:
    if self.entries.pop(name, None) is not None:
      self._save()

  def problem(self, name: str, rows: int | None = None) -> str:
    """Why part `name` cannot be trusted ('' when it is whole and, given `rows`, has that many)."""
    entry = self.entries.get(name)
    if entry is None:
      return f"{os.path.join(self.directory, name)}: not recorded as written"
    if rows is not None and entry["rows"] != rows:
      return f"{os.path.join(self.directory, name)}: {entry['rows']} rows recorded, {rows} expected"
    bad = checksums.differences(
      self.directory, {name: {k: entry[k] for k in ("size", "sha256")}}, [os.path.join(self.directory, name)]
    )
    return bad[0] if bad else ""

  def problems(self) -> list[str]:
    """A damaged record, and the recorded parts that are missing or damaged."""
    return [self.damaged] * bool(self.damaged) + [p for name in sorted(self.entries) if (p := self.problem(name))]


def rows_of(path: str) -> int | None:
  """The rows a Parquet file's footer declares (None: not a readable Parquet file)."""
  import pyarrow.parquet as pq

  try:
    return pq.ParquetFile(path).metadata.num_rows
  except Exception:  # noqa: BLE001 - any unreadable file (pyarrow raises several types) is simply not a part
    return None


class Parts:
  """Numbered Parquet parts of one output, computed under one settings hash.

  `settings` identifies what the parts depend on; finding parts from other settings raises a
  ResumeError instead of mixing them with new ones. A part counts as done only when its record
  says it is intact and holds the rows expected of it.
  """

  def __init__(self, directory: str, settings: str, writer: bool = True):
    self.directory, self.writer = directory, writer
    record = os.path.join(directory, "settings.json")
    if os.path.exists(record):
      with open(record) as f:
        if json.load(f)["hash"] != settings:
          raise fileio.ResumeError(
            f"{directory}: finished parts were computed with other settings; delete "
            f"{os.path.dirname(directory)} to start over"
          )
    elif writer:
      fileio.write_json_atomic(record, {"hash": settings})
    self.manifest = Manifest(directory, writer)

  def name(self, k: int) -> str:
    return f"part-{k:05d}.parquet"

  def done(self, k: int, rows: int) -> bool:
    """Part `k` is written, intact, and has `rows` rows (else it is computed again)."""
    path = os.path.join(self.directory, self.name(k))
    if not os.path.exists(path):
      return False
    unrecorded = self.name(k) not in self.manifest.entries and not self.manifest.damaged
    if unrecorded and rows_of(path) == rows:  # killed before it was recorded
      if self.writer:
        self.manifest.add(self.name(k), rows)
      return True
    problem = self.manifest.problem(self.name(k), rows)
    if problem:
      log.warning("%s; the part is computed again", problem)
    return not problem

  def write(self, k: int, frame: "pd.DataFrame") -> None:
    if self.writer:
      fileio.write_parquet_atomic(frame, os.path.join(self.directory, self.name(k)))
      self.manifest.add(self.name(k), len(frame))

  def read(self, rows: list[int]) -> "pd.DataFrame":
    """Parts 0.. with `rows[k]` rows each, verified against their record, concatenated."""
    import pandas as pd

    bad = [p for k, n in enumerate(rows) if (p := self.manifest.problem(self.name(k), n))]
    if bad:
      raise fileio.ResumeError(f"{bad[0]}; delete {self.directory} to compute the parts again")
    paths = [os.path.join(self.directory, self.name(k)) for k in range(len(rows))]
    return pd.concat([pd.read_parquet(p) for p in paths], ignore_index=True)
