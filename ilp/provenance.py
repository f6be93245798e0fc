"""Which settings produced each stage's outputs, so a re-run never silently mixes old outputs
with new settings.

Every stage depends on some config fields (`SETTINGS`). When a stage starts, the values of its
fields are recorded in `<workdir>/provenance.json` (paths as configured, `{workdir}` unresolved,
so a moved work directory still matches); when it finishes, the record says so. On a re-run, a
stage that finished or started with other values is a `ResumeError` listing every changed field,
raised before anything runs, unless the user forces it (`--force_rerun=<stage>`), which re-runs
that stage and every later one from scratch.

The record also seals each finished stage's outputs (their `ilp.checksums.manifest`), and is
sealed itself: the file holds the SHA-256 of its content, so a damaged or hand-edited record is
refused in one line instead of trusted. Outputs the record does not vouch for (the file deleted,
or written before seals existed) are not trusted either (`ilp.pipeline`: redo, or `--adopt`).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
from typing import Any

from ilp import checksums, fileio

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
    "data.replay",
    "data.template",
    "data.buckets",
    "data.overlong",
    "data.tokenizer",
  ),
  "detect": ("seed", "detect", "data.template", "data.buckets", "data.tokenizer"),
  "diagnose": ("diagnose", "data.corpora", "detect.answers"),
  "capability": ("seed", "detect", "data.heldout", "data.heldout_text", "data.template", "data.buckets"),
  # the arms list is not a setting of the comparison: the arms stage's index says which arms ran
  "compare": (
    "seed",
    "interventions.bootstrap_samples",
    "interventions.equal_compute",
    "interventions.equal_compute_rounding",
  ),
  "report": ("diagnose.protocol", "diagnose.typical_examples"),
}


def _value(config: Any, path: str) -> Any:
  value = config
  for part in path.split("."):
    value = getattr(value, part)
  if dataclasses.is_dataclass(value):
    value = dataclasses.asdict(value)
  return json.loads(json.dumps(value, default=str))  # the JSON form, as stored


INPUTS = "inputs"  # the settings' entry of the data files a stage reads, by content


def _data_paths(value: Any) -> list[str]:
  """The local paths a data field names: a source list's `path`s, or a directory (the tokenizer).
  Paths under `{workdir}` are left out: an earlier stage wrote them, and its seal covers them."""
  paths = [s.get("path", "") for s in value if isinstance(s, dict)] if isinstance(value, (list, tuple)) else [value]
  return [p for p in paths if isinstance(p, str) and p and "{workdir}" not in p and os.path.exists(p)]


@functools.lru_cache(maxsize=None)
def _fingerprint(path: str, size: int, mtime: int) -> str:
  """SHA-256 of a data file's content, or of a directory's manifest (cached per launch by size and
  modification time, so several stages reading one file hash it once)."""
  del size, mtime
  if os.path.isdir(path):
    return hashlib.sha256(json.dumps(checksums.manifest(path, [path]), sort_keys=True).encode()).hexdigest()
  return checksums.digest(path)


def fingerprint(path: str) -> str:
  stat = os.stat(path)
  return _fingerprint(os.path.abspath(path), stat.st_size, stat.st_mtime_ns)


def settings(config: Any, stage: str) -> dict[str, Any]:
  """The values of the fields `stage` depends on, and the content of the data files they name
  (`INPUTS`: path -> SHA-256): data edited after a stage ran is a changed setting too."""
  values = {path: _value(config, path) for path in SETTINGS.get(stage, ())}
  files = [p for path in SETTINGS.get(stage, ()) if path.startswith("data.") for p in _data_paths(values[path])]
  return {**values, **({INPUTS: {p: fingerprint(p) for p in files}} if files else {})}


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
  says; a field the config no longer has (removed or moved) cannot be set otherwise now. A data
  file whose content changed is named; one no longer there is no change (the outputs stand)."""
  old, new = ({k: v for k, v in d.items() if k != INPUTS} for d in (before, now))
  old, new = _flatten(old, ""), _flatten(new, "")
  known = _flatten({k: v for k, v in defaults.items() if k != INPUTS}, "") if defaults is not None else None
  added = {k for k, v in (known or {}).items() if k not in old and new.get(k) == v}
  gone = {k for k in old if known is not None and k not in known}
  fields = [
    f"{k[1:]}: {old.get(k)!r} -> {new.get(k)!r}"
    for k in sorted(set(old) | set(new))
    if old.get(k) != new.get(k) and k not in added | gone
  ]
  was, current = before.get(INPUTS, {}), now.get(INPUTS, {})
  files = [
    f"data file {p}: content changed (sha256 {was.get(p, 'not read')[:12]} -> {current[p][:12]})"
    for p in sorted(current)
    if was.get(p) != current[p]
  ]
  return fields + files


def _digest(stages: dict[str, Any]) -> str:
  return hashlib.sha256(json.dumps(stages, sort_keys=True).encode()).hexdigest()


def _valid(stages: Any) -> bool:
  return isinstance(stages, dict) and all(
    isinstance(v, dict) and isinstance(v.get("settings"), dict) and isinstance(v.get("outputs", {}), dict)
    for v in stages.values()
  )


class Record:
  """`provenance.json` of a work directory: per stage, its settings, whether it finished, and the
  manifest of its outputs once it did; sealed by the SHA-256 of that content."""

  def __init__(self, path: str, writer: bool):
    self.path, self.writer = path, writer
    self.stages: dict[str, Any] = {}
    self.found = os.path.exists(self.path)
    if self.found:
      with open(self.path, "rb") as f:
        raw = f.read()
      try:
        stored = json.loads(raw)
        valid = (
          isinstance(stored, dict)
          and _valid(stored.get("stages"))
          and stored.get("sha256") == _digest(stored["stages"])
        )
      except (UnicodeDecodeError, json.JSONDecodeError):
        valid = False
      if not valid:
        raise fileio.ResumeError(
          f"{self.path} is damaged (not the sealed record of stages and settings this project writes), so "
          "the settings of the work directory's outputs are unknown; use a new work directory, or delete "
          "this file and re-run with --adopt to accept the outputs as made with the config's settings"
        )
      self.stages = stored["stages"]

  def mark(self, stage: str, values: dict[str, Any], finished: bool, outputs: dict[str, Any] | None = None) -> None:
    """Records `stage`'s settings and state; `outputs`: the manifest of a finished stage's outputs."""
    self.stages[stage] = {
      "settings": values,
      "finished": finished,
      **({"outputs": outputs} if outputs is not None else {}),
    }
    self.save()

  def save(self) -> None:
    """Writes the record, sealed (process 0 only)."""
    if self.writer:
      fileio.write_json_atomic(self.path, {"stages": self.stages, "sha256": _digest(self.stages)})

  def seal(self, stage: str) -> dict[str, Any] | None:
    """The manifest of `stage`'s outputs, if the record vouches for them (finished and sealed)."""
    entry = self.stages.get(stage)
    return entry.get("outputs") if entry and entry.get("finished") else None

  def digest(self) -> str:
    """Identifies everything recorded: settings and outputs of every stage."""
    return _digest(self.stages)
