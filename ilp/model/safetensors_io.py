"""Lazy reading and sharded writing of safetensors checkpoint directories.

Reading memory-maps each file and hands out numpy views, so a caller that slices a tensor per
device shard never holds a full host copy of a large checkpoint (a 7B model loads in its shards'
worth of memory). Writing splits tensors over files of bounded size with the standard
`model.safetensors.index.json`, which transformers' `from_pretrained` reads.
"""

from __future__ import annotations

import json
import os
import struct
from typing import Iterable

import ml_dtypes
import numpy as np
from safetensors.numpy import save_file

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"

_DTYPES = {
  "F64": np.float64,
  "F32": np.float32,
  "F16": np.float16,
  "BF16": ml_dtypes.bfloat16,
  "I64": np.int64,
  "I32": np.int32,
  "I16": np.int16,
  "I8": np.int8,
  "U8": np.uint8,
  "BOOL": np.bool_,
}


class CheckpointError(ValueError):
  """A checkpoint directory is missing files or tensors, or holds malformed ones."""


def _read_header(path: str) -> tuple[dict, int]:
  with open(path, "rb") as f:
    raw = f.read(8)
    if len(raw) != 8:
      raise CheckpointError(f"{path}: file too short to be safetensors")
    (length,) = struct.unpack("<Q", raw)
    try:
      header = json.loads(f.read(length))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
      raise CheckpointError(f"{path}: malformed safetensors header ({e})") from e
  header.pop("__metadata__", None)
  return header, 8 + length


class SafetensorsDir:
  """Name -> lazily memory-mapped numpy array over all safetensors files of a directory."""

  def __init__(self, directory: str):
    self.directory = directory
    index_path = os.path.join(directory, INDEX_FILE)
    if os.path.exists(index_path):
      with open(index_path) as f:
        weight_map = json.load(f).get("weight_map")
      if not isinstance(weight_map, dict):
        raise CheckpointError(f"{index_path}: no 'weight_map' object")
      files = sorted(set(weight_map.values()))
    elif os.path.exists(os.path.join(directory, SINGLE_FILE)):
      files = [SINGLE_FILE]
    else:
      raise CheckpointError(f"{directory}: neither {SINGLE_FILE} nor {INDEX_FILE} found")
    self._entries: dict[str, tuple[str, dict, int]] = {}
    for name in files:
      path = os.path.join(directory, name)
      if not os.path.exists(path):
        raise CheckpointError(f"{index_path}: lists {name}, which does not exist")
      header, offset = _read_header(path)
      for tensor, info in header.items():
        self._entries[tensor] = (path, info, offset)
    self._maps: dict[str, np.memmap] = {}

  def names(self) -> list[str]:
    return sorted(self._entries)

  def __contains__(self, name: str) -> bool:
    return name in self._entries

  def file_of(self, name: str) -> str:
    return self._entries[name][0]

  def shape(self, name: str) -> tuple[int, ...]:
    return tuple(self._entries[name][1]["shape"])

  def get(self, name: str) -> np.ndarray:
    """A read-only view of the tensor; bytes are paged in only when sliced and copied."""
    path, info, offset = self._entries[name]
    if info["dtype"] not in _DTYPES:
      raise CheckpointError(f"{path}: tensor {name} has unsupported dtype {info['dtype']}")
    if path not in self._maps:
      self._maps[path] = np.memmap(path, dtype=np.uint8, mode="r")
    begin, end = info["data_offsets"]
    data = self._maps[path][offset + begin : offset + end]
    return data.view(_DTYPES[info["dtype"]]).reshape(info["shape"])


def write_sharded(tensors: Iterable[tuple[str, np.ndarray]], directory: str, max_shard_bytes: int) -> None:
  """Writes tensors (streamed one by one) into `directory` as one file or several plus an index."""
  shards: list[dict[str, np.ndarray]] = [{}]
  sizes = [0]
  tmp_names = []
  for name, array in tensors:
    if sizes[-1] and sizes[-1] + array.nbytes > max_shard_bytes:
      tmp_names.append(_flush(shards[-1], directory, len(tmp_names)))
      shards.append({})
      sizes.append(0)
    shards[-1][name] = np.ascontiguousarray(array)
    sizes[-1] += array.nbytes
  tmp_names.append(_flush(shards[-1], directory, len(tmp_names)))
  total = len(tmp_names)
  if total == 1:
    os.replace(tmp_names[0][0], os.path.join(directory, SINGLE_FILE))
    return
  weight_map = {}
  for i, (tmp, names) in enumerate(tmp_names):
    final = f"model-{i + 1:05d}-of-{total:05d}.safetensors"
    os.replace(tmp, os.path.join(directory, final))
    weight_map.update({n: final for n in names})
  with open(os.path.join(directory, INDEX_FILE), "w") as f:
    json.dump({"metadata": {"total_size": int(sum(sizes))}, "weight_map": weight_map}, f, indent=2)


def _flush(shard: dict[str, np.ndarray], directory: str, i: int) -> tuple[str, list[str]]:
  path = os.path.join(directory, f".shard-{i}.tmp")
  save_file(shard, path, metadata={"format": "pt"})
  names = list(shard)
  shard.clear()
  return path, names
