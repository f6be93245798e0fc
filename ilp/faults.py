"""Damage done on purpose to a work directory, by the fault check (`scripts/fault_check.py`) and the
reliability tests: both must injure files the same way to mean the same thing by "survived"."""
from __future__ import annotations

import os


def largest_file(directory: str) -> str:
  """The biggest file under `directory` (a checkpoint's weights, in practice)."""
  files = [os.path.join(root, n) for root, _, names in os.walk(directory) for n in names]
  return max(files, key=os.path.getsize)


def flip_bytes(path: str, count: int = 8) -> None:
  """Inverts `count` bytes in the middle of `path`: silent bit rot, same size, same name."""
  with open(path, "r+b") as f:
    f.seek(max(os.path.getsize(path) // 2 - count // 2, 0))
    data = f.read(count)
    f.seek(-len(data), os.SEEK_CUR)
    f.write(bytes(255 - b for b in data))


def truncate(path: str) -> None:
  """Cuts `path` to half its size, as an interrupted copy or a full disk would."""
  os.truncate(path, os.path.getsize(path) // 2)
