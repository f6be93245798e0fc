"""SHA-256 manifests that seal finished outputs, checked before they are used: a checkpoint
directory (`seal`/`problems`, its own `checksums.json`) and any set of files and directories
(`manifest`/`differences`: a stage's outputs, recorded in the work directory's provenance).

Orbax checksums only the shard index of its zarr3 arrays (tensorstore's `crc32c` index codec),
not the data, and keeps no record of which files make a step: a flipped byte in a data file
restores silently as wrong weights, a truncated or missing file as an opaque OCDBT error. A
manifest (`checksums.json`: every file's size and SHA-256) written once the directory is final,
and compared on load, turns each of these into a named file.
"""

from __future__ import annotations

import hashlib
import json
import os

from ilp import fileio

MANIFEST = "checksums.json"
_CHUNK = 1 << 22


def _files(directory: str, skip: str) -> list[str]:
  found = []
  for root, dirs, names in os.walk(directory):
    dirs.sort()
    found += [os.path.relpath(os.path.join(root, n), directory) for n in sorted(names)]
  return [f for f in found if f != skip]


def digest(path: str) -> str:
  h = hashlib.sha256()
  with open(path, "rb") as f:
    while chunk := f.read(_CHUNK):
      h.update(chunk)
  return h.hexdigest()


def _entry(path: str) -> dict:
  return {"size": os.path.getsize(path), "sha256": digest(path)}


def _listing(root: str, paths: list[str], skip: str = "") -> list[str]:
  """Every file at or under `paths`, relative to `root` (a moved `root` keeps its manifest)."""
  found = []
  for path in paths:
    if os.path.isdir(path):
      found += [os.path.relpath(os.path.join(path, f), root) for f in _files(path, skip)]
    elif os.path.exists(path):
      found.append(os.path.relpath(path, root))
  return found


def manifest(root: str, paths: list[str], skip: str = "") -> dict[str, dict]:
  """Size and SHA-256 of every file at or under `paths` (files or directories; a directory's own
  file named `skip` left out), keyed by its path relative to `root`."""
  return {name: _entry(os.path.join(root, name)) for name in _listing(root, paths, skip)}


def differences(root: str, entries: dict[str, dict], paths: list[str], skip: str = "") -> list[str]:
  """What the files at or under `paths` differ in from `entries` (a `manifest`): missing, resized,
  altered or unlisted files ([] when intact)."""
  found = set(_listing(root, paths, skip))
  bad = [f"{os.path.join(root, name)}: missing" for name in sorted(set(entries) - found)]
  bad += [f"{os.path.join(root, name)}: not in the manifest" for name in sorted(found - set(entries))]
  for name, entry in sorted(entries.items()):
    path = os.path.join(root, name)
    if name not in found:
      continue
    if os.path.getsize(path) != entry["size"]:
      bad.append(f"{path}: {os.path.getsize(path)} bytes, {entry['size']} when saved (truncated?)")
    elif digest(path) != entry["sha256"]:
      bad.append(f"{path}: content differs from its checksum")
  return bad


def seal(directory: str) -> None:
  """Writes the manifest of every file now under `directory` (atomically, so a manifest is whole)."""
  fileio.write_json_atomic(os.path.join(directory, MANIFEST), {"files": manifest(directory, [directory], MANIFEST)})


def sealed(directory: str) -> bool:
  return os.path.exists(os.path.join(directory, MANIFEST))


def problems(directory: str) -> list[str]:
  """What differs from the manifest: missing, resized, altered or unlisted files ([] when intact)."""
  with open(os.path.join(directory, MANIFEST)) as f:
    entries = json.load(f)["files"]
  return differences(directory, entries, [directory], MANIFEST)
