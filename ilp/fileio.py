"""Atomic output: a stage's files appear whole or not at all.

Every stage writes into a temporary sibling and renames it into place, so a killed job never
leaves a half-written artifact that a later run would mistake for a finished one.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from typing import Any, Iterator


@contextlib.contextmanager
def atomic_directory(final: str) -> Iterator[str]:
  """Yields a temporary directory that replaces `final` when the block succeeds."""
  final = os.path.abspath(final)
  parent = os.path.dirname(final)
  os.makedirs(parent, exist_ok=True)
  tmp = tempfile.mkdtemp(prefix=f".tmp-{os.path.basename(final)}-", dir=parent)
  try:
    yield tmp
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  if os.path.exists(final):
    shutil.rmtree(final)
  os.replace(tmp, final)


def write_json_atomic(path: str, payload: Any) -> None:
  """Writes JSON to `path` through a temporary file and a rename."""
  path = os.path.abspath(path)
  os.makedirs(os.path.dirname(path), exist_ok=True)
  fd, tmp = tempfile.mkstemp(prefix=f".tmp-{os.path.basename(path)}-", dir=os.path.dirname(path))
  try:
    with os.fdopen(fd, "w") as f:
      json.dump(payload, f, indent=2, sort_keys=True)
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise
