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
STRICT_DAMAGE = (  # what a lenient loader would accept silently (issue 25)
  "unknown field",
  "whitespace-only prompt",
  "invisible-only response",
  "messages out of order",
  "repeated key",
  "lone surrogate",
  "data set '..'",
)


def _strict(record: dict, kind: str) -> bytes:
  """`record` (a prompt/response one) with the fault `kind` of STRICT_DAMAGE, as a JSONL line."""
  if kind == "unknown field":
    record["stage"] = record.pop("phase", 2)  # the field is called phase
  elif kind == "whitespace-only prompt":
    record["prompt"] = " \t "
  elif kind == "invisible-only response":
    record["response"] = "\u00a0\u200b"
  elif kind == "messages out of order":
    turns = [("assistant", record.pop("response")), ("user", record.pop("prompt")), ("assistant", "x")]
    record["messages"] = [{"role": r, "content": c} for r, c in turns]
  elif kind == "repeated key":
    return json.dumps(record)[:-1].encode() + b', "prompt": "again"}'
  elif kind == "lone surrogate":
    record["response"] = "x\ud800"  # JSON-escaped as \ud800: valid JSON, not text
  elif kind == "data set '..'":
    record["dataset"] = ".."
  return json.dumps(record).encode()


def damage_jsonl(source: str, target: str, kind: str) -> None:
  """Writes `source`'s SFT records to `target` with one fault of `kind` (one of JSONL_DAMAGE or
  STRICT_DAMAGE), each one a data error the loaders must name by file and line."""
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
  elif kind in STRICT_DAMAGE:
    lines[3] = _strict(row(3), kind)
  else:
    raise ValueError(f"unknown damage {kind!r} (one of {JSONL_DAMAGE + STRICT_DAMAGE})")
  with open(target, "wb") as f:
    f.write(b"\n".join(lines) + (b"\n" if lines else b""))
