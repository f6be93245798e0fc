"""SHA-256 manifests that seal a finished checkpoint directory, checked before it is used.

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


def _files(directory: str) -> list[str]:
  found = []
  for root, dirs, names in os.walk(directory):
    dirs.sort()
    found += [os.path.relpath(os.path.join(root, n), directory) for n in sorted(names)]
  return [f for f in found if f != MANIFEST]


def _digest(path: str) -> str:
  h = hashlib.sha256()
  with open(path, "rb") as f:
    while chunk := f.read(_CHUNK):
      h.update(chunk)
  return h.hexdigest()


def seal(directory: str) -> None:
  """Writes the manifest of every file now under `directory` (atomically, so a manifest is whole)."""
  entries = {
    f: {"size": os.path.getsize(os.path.join(directory, f)), "sha256": _digest(os.path.join(directory, f))}
    for f in _files(directory)
  }
  fileio.write_json_atomic(os.path.join(directory, MANIFEST), {"files": entries})


def sealed(directory: str) -> bool:
  return os.path.exists(os.path.join(directory, MANIFEST))


def problems(directory: str) -> list[str]:
  """What differs from the manifest: missing, resized, altered or unlisted files ([] when intact)."""
  with open(os.path.join(directory, MANIFEST)) as f:
    entries = json.load(f)["files"]
  found = set(_files(directory))
  bad = [f"{os.path.join(directory, name)}: missing" for name in sorted(set(entries) - found)]
  bad += [f"{os.path.join(directory, name)}: not in the manifest" for name in sorted(found - set(entries))]
  for name, entry in sorted(entries.items()):
    path = os.path.join(directory, name)
    if name not in found:
      continue
    if os.path.getsize(path) != entry["size"]:
      bad.append(f"{path}: {os.path.getsize(path)} bytes, {entry['size']} when saved (truncated?)")
    elif _digest(path) != entry["sha256"]:
      bad.append(f"{path}: content differs from its checksum")
  return bad
