"""The SFT stream as a run configures it: phases in sequence or interleaved, near-duplicate
groups spread apart, and the last phase stretched for progressive epochs."""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Sequence

import numpy as np
import pandas as pd

from ilp.data import batches as batching
from ilp.data import replay as replaying
from ilp.data import spread as spreading
from ilp.data.records import DataError


def groups_from_file(path: str, ids: Sequence[str]) -> list[np.ndarray]:
  """Example indices of each group in the JSON file `path` (a list of id lists); ids that are not
  trained on (deleted, held out) are dropped, and groups left with one member vanish."""
  with open(path) as f:
    listed = json.load(f)
  if not isinstance(listed, list) or not all(isinstance(g, list) for g in listed):
    raise DataError(f"{path}: expected a JSON list of id lists")
  index = {i: k for k, i in enumerate(ids)}
  groups = [np.asarray([index[i] for i in g if i in index], np.int64) for g in listed]
  return [g for g in groups if len(g) > 1]


def sft_phases(frame: pd.DataFrame, section: Any) -> list[batching.PhaseSpec]:
  """The phases `section` (the `sft` config) trains on the examples table `frame`, in order."""
  return batching.plan_phases(
    frame["dataset"].to_numpy(object), frame["phase"].to_numpy(), section.phases, section.epochs
  )


def sft_stream(
  frame: pd.DataFrame,
  section: Any,
  buckets: Sequence[int],
  seed: int,
  epochs: dict[int, int] | None = None,
  replay: tuple[int, int] | None = None,
) -> tuple[batching.Stream, dict[str, Any]]:
  """The planned stream of `section` (the `sft` config) over the examples table `frame`, and what
  the transforms did (for the summary).

  Training to convergence (`sft.convergence.max_epochs`) plans every phase for its most epochs
  (`max_epochs` plus the cooldown); `epochs` (1-based phase -> epochs) replaces that for the phases
  already decided. Phase p, epoch e is shuffled with [seed, p, e] whatever the other phases' epochs,
  so a replanned stream keeps the batches trained so far. `replay` (the number of replay records
  and the bucket length that holds them all) interleaves replay steps (`sft.replay`).
  """
  phases = sft_phases(frame, section)
  longest = section.convergence.max_epochs + section.convergence.cooldown_epochs
  if section.convergence.max_epochs:
    phases = [dataclasses.replace(p, epochs=(epochs or {}).get(k, longest)) for k, p in enumerate(phases, start=1)]
  if section.progressive.enabled:  # the last phase runs up to max_epochs; early stopping ends it
    phases[-1] = dataclasses.replace(phases[-1], epochs=section.progressive.max_epochs)
  build = batching.build_global_stream if section.order == "global" else batching.build_stream
  lengths = frame["length"].to_numpy()
  stream = build(lengths, phases, buckets, section.batch_size, seed, section.eval_every_steps)
  info: dict[str, Any] = {"order": section.order, "phases": {p.name: p.epochs for p in phases}}
  if section.spread.groups:
    groups = groups_from_file(section.spread.groups, frame["id"].tolist())
    stream, info["spread"] = spreading.spread(stream, groups, section.spread.buckets, section.spread.every_steps, seed)
  if section.replay.every_steps:
    records, length = replay
    stream = replaying.interleave(stream, section.replay.every_steps, records, section.batch_size, length, seed)
    info["replay_steps"] = sum(b.replay for b in stream.batches)
  return stream, info


def last_phase_epoch_ends(stream: batching.Stream) -> list[int]:
  """Steps that end an epoch of the stream's last phase (where progressive epochs decide)."""
  last = max(b.phase for b in stream.batches)
  return [p.step for p in stream.eval_points if p.step > 0 and p.phase == last and "/epoch" in p.name]
