"""Which settings produced each stage's outputs, so a re-run never silently mixes old outputs
with new settings.

Every stage depends on some config fields (`SETTINGS`). When a stage starts, the values of its
fields are recorded in `<workdir>/provenance.json` (paths as configured, `{workdir}` unresolved,
so a moved work directory still matches); when it finishes, the record says so. On a re-run, a
stage that finished or started with other values is a `ResumeError` listing every changed field,
raised before anything runs, unless the user forces it (`--force_rerun=<stage>`), which re-runs
that stage and every later one from scratch.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

from ilp import fileio

SETTINGS: dict[str, tuple[str, ...]] = {
  "world": ("world",),
  "init_model": ("seed", "model", "init", "data.tokenizer"),
  "pretrain": ("seed", "pretrain", "data.corpora", "data.tokenizer"),
  "sft": (
    "seed",
    "sft",
    "data.sft",
    "data.dev",
    "data.dev_fraction",
    "data.template",
    "data.buckets",
    "data.overlong",
    "data.tokenizer",
  ),
  "detect": ("seed", "detect", "data.template", "data.buckets", "data.tokenizer"),
  "diagnose": ("diagnose", "data.corpora", "detect.answers"),
  "capability": ("seed", "detect", "data.heldout", "data.heldout_text", "data.template", "data.buckets"),
  "report": ("diagnose.protocol", "diagnose.typical_examples"),
}


def _value(config: Any, path: str) -> Any:
  value = config
  for part in path.split("."):
    value = getattr(value, part)
  if dataclasses.is_dataclass(value):
    value = dataclasses.asdict(value)
  return json.loads(json.dumps(value, default=str))  # the JSON form, as stored


def settings(config: Any, stage: str) -> dict[str, Any]:
  """The values of the fields `stage` depends on."""
  return {path: _value(config, path) for path in SETTINGS.get(stage, ())}


def _flatten(value: Any, prefix: str) -> dict[str, Any]:
  if isinstance(value, dict):
    out = {}
    for k, v in value.items():
      out.update(_flatten(v, f"{prefix}.{k}"))
    return out
  return {prefix: value}


def changes(before: dict[str, Any], now: dict[str, Any], defaults: dict[str, Any] | None = None) -> list[str]:
  """'field: old -> new' for every leaf field that differs. With `defaults` (the stage's settings
  under the default config), the config's own changes since the run are none of the user's: a field
  the record lacks that is now at its default was added after the run, which ran as its default
  says; a field the config no longer has (removed or moved) cannot be set otherwise now."""
  old, new = (_flatten(d, "") for d in (before, now))
  known = _flatten(defaults, "") if defaults is not None else None
  added = {k for k, v in (known or {}).items() if k not in old and new.get(k) == v}
  gone = {k for k in old if known is not None and k not in known}
  return [
    f"{k[1:]}: {old.get(k)!r} -> {new.get(k)!r}"
    for k in sorted(set(old) | set(new))
    if old.get(k) != new.get(k) and k not in added | gone
  ]


class Record:
  """`provenance.json` of a work directory."""

  def __init__(self, path: str, writer: bool):
    self.path, self.writer = path, writer
    self.stages: dict[str, Any] = {}
    if os.path.exists(self.path):
      with open(self.path, "rb") as f:
        raw = f.read()
      try:
        self.stages = json.loads(raw)
        valid = isinstance(self.stages, dict) and all(
          isinstance(v, dict) and isinstance(v.get("settings"), dict) for v in self.stages.values()
        )
      except (UnicodeDecodeError, json.JSONDecodeError):
        valid = False
      if not valid:
        raise fileio.ResumeError(
          f"{self.path} is damaged (not the record of stages and settings this project writes), so "
          "the settings of the work directory's outputs are unknown; use a new work directory, or delete "
          "the work directory's outputs and this file to start over"
        )

  def mark(self, stage: str, values: dict[str, Any], finished: bool) -> None:
    self.stages[stage] = {"settings": values, "finished": finished}
    if self.writer:
      fileio.write_json_atomic(self.path, self.stages)
