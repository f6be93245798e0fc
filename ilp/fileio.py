"""Atomic output: a stage's files appear whole or not at all.

Every stage writes into a temporary sibling and renames it into place, so a killed job never
leaves a half-written artifact that a later run would mistake for a finished one; long outputs
are written as parts (`ilp.parts`) so a killed job resumes after its last finished part.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from typing import TYPE_CHECKING, Any, Iterator

if TYPE_CHECKING:
  import pandas as pd


TMP_PREFIX = ".tmp-"  # what atomic writes name their temporary siblings


def remove_orphans(root: str) -> list[str]:
  """Removes the temporary siblings (`TMP_PREFIX`) a killed job left anywhere under `root`, and
  returns them: run only while holding the work-directory lock, when no write is in progress."""
  found = []
  for parent, directories, files in os.walk(root):
    for name in [d for d in directories if d.startswith(TMP_PREFIX)] + [f for f in files if f.startswith(TMP_PREFIX)]:
      path = os.path.join(parent, name)
      if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
      else:
        os.remove(path)
      found.append(path)
    directories[:] = [d for d in directories if not d.startswith(TMP_PREFIX)]
  return found


@contextlib.contextmanager
def atomic_directory(final: str) -> Iterator[str]:
  """Yields a temporary directory that replaces `final` when the block succeeds."""
  final = os.path.abspath(final)
  parent = os.path.dirname(final)
  os.makedirs(parent, exist_ok=True)
  tmp = tempfile.mkdtemp(prefix=f"{TMP_PREFIX}{os.path.basename(final)}-", dir=parent)
  try:
    yield tmp
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  if os.path.exists(final):
    shutil.rmtree(final)
  os.replace(tmp, final)


@contextlib.contextmanager
def atomic_file(path: str) -> Iterator[str]:
  """Yields a temporary path in `path`'s directory that replaces `path` when the block succeeds."""
  path = os.path.abspath(path)
  os.makedirs(os.path.dirname(path), exist_ok=True)
  fd, tmp = tempfile.mkstemp(prefix=f"{TMP_PREFIX}{os.path.basename(path)}-", dir=os.path.dirname(path))
  os.close(fd)
  try:
    yield tmp
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


def write_json_atomic(path: str, payload: Any) -> None:
  """Writes JSON to `path` through a temporary file and a rename."""
  with atomic_file(path) as tmp, open(tmp, "w") as f:
    json.dump(payload, f, indent=2, sort_keys=True)


def write_text_atomic(path: str, text: str) -> None:
  with atomic_file(path) as tmp, open(tmp, "w") as f:
    f.write(text)


def write_parquet_atomic(frame: "pd.DataFrame", path: str) -> None:
  """A DataFrame as Parquet (without its index) through a temporary file and a rename."""
  with atomic_file(path) as tmp:
    frame.to_parquet(tmp, index=False)


class ResumeError(RuntimeError):
  """Finished work on disk was produced with other settings than the run that tries to resume it."""
