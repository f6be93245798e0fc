"""Damage done on purpose to a work directory or its inputs, by the fault check (`scripts/fault_check.py`) and the
reliability tests: both must injure files the same way to mean the same thing by "survived"."""

from __future__ import annotations

import json
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


JSONL_DAMAGE = (
  "malformed JSON",
  "missing response",
  "wrong type",
  "empty response",
  "duplicate id",
  "invalid UTF-8",
  "empty file",
)


def damage_jsonl(source: str, target: str, kind: str) -> None:
  """Writes `source`'s SFT records to `target` with one fault of `kind` (one of JSONL_DAMAGE), each
  one a data error the loaders must name by file and line."""
  lines = open(source, "rb").read().splitlines()
  row = lambda k: json.loads(lines[k])
  if kind == "malformed JSON":
    lines[3] = lines[3][:-5]
  elif kind == "missing response":
    r = row(2)
    r.pop("response")
    lines[2] = json.dumps(r).encode()
  elif kind == "wrong type":
    r = row(4)
    r["phase"] = "two"
    lines[4] = json.dumps(r).encode()
  elif kind == "empty response":
    r = row(1)
    r["response"] = "  "
    lines[1] = json.dumps(r).encode()
  elif kind == "duplicate id":
    lines.append(lines[0])
  elif kind == "invalid UTF-8":
    lines[5] = b'{"id": "u", "prompt": "\xff\xfe", "response": "x"}'
  elif kind == "empty file":
    lines = []
  else:
    raise ValueError(f"unknown damage {kind!r} (one of {JSONL_DAMAGE})")
  with open(target, "wb") as f:
    f.write(b"\n".join(lines) + (b"\n" if lines else b""))
