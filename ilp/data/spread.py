"""Near-duplicate groups kept out of each other's mini-batches (the paper's bucketing for
conflicting data), as a transform of a planned stream.

The stream is cut into windows of `every` steps. Inside a window, batch j belongs to bucket
j mod `buckets`, and each group's members present in the window are dealt to distinct buckets by
a fresh random draw ([seed, window]): the groups are re-formed every `every` steps. A member's
visit in a batch of another bucket is swapped with a visit of an example in no group, of the same
padded length and the same phase and epoch, from a batch of the member's bucket. Swaps move rows
only between batches of one (phase, epoch, length), so every epoch still visits each example once
and no new batch shape appears (the train step does not recompile). When no batch of the member's
bucket can take it, any batch of the segment without another member of the group does (a
fallback); when none can, the transform fails naming the group.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import numpy as np

from ilp.data.batches import Stream


def _positions(rows: list[np.ndarray]) -> list[np.ndarray]:
  """Stream positions of every real row, consecutive in batch order."""
  out, position = [], 0
  for r in rows:
    p = np.full(r.shape, -1, np.int64)
    real = r >= 0
    p[real] = position + np.arange(real.sum())
    position += int(real.sum())
    out.append(p)
  return out


def spread(stream: Stream, groups: Sequence[np.ndarray], buckets: int, every: int, seed: int
           ) -> tuple[Stream, dict[str, Any]]:
  """`stream` with no two members of a group in one batch (see the module docstring), and counts
  of what was done (groups, windows, swaps, fallbacks).

  Args:
    stream: the planned stream.
    groups: example indices of each group (an example belongs to at most one group).
    buckets: B, the number of buckets a window's batches are dealt into (>= the largest group).
    every: K, the window length in steps; the dealing is redrawn per window.
    seed: the dealing's seed.
  """
  if buckets < 2 or every < 1:
    raise ValueError(f"spread: buckets must be >= 2 and every >= 1, got {buckets} and {every}")
  group_of: dict[int, int] = {}
  for k, members in enumerate(groups):
    if len(members) > buckets:
      raise ValueError(f"spread: group {k} has {len(members)} members, more than buckets={buckets}")
    for i in members:
      if int(i) in group_of:
        raise ValueError(f"spread: example {int(i)} is in groups {group_of[int(i)]} and {k}")
      group_of[int(i)] = k
  rows = [b.rows.copy() for b in stream.batches]
  segment = [(b.phase, b.epoch, b.length) for b in stream.batches]
  counts = {"groups": len(groups), "windows": 0, "swaps": 0, "fallbacks": 0}

  def others_of(k: int, j: int, member: int) -> bool:
    return any(group_of.get(int(r)) == k and r != member for r in rows[j] if r >= 0)

  def free_slots(j: int) -> np.ndarray:
    return np.flatnonzero([(r >= 0) and (int(r) not in group_of) for r in rows[j]])

  for w, start in enumerate(range(0, len(rows), every)):
    window = range(start, min(start + every, len(rows)))
    counts["windows"] += 1
    rng = np.random.default_rng([seed, w])
    visits: dict[int, dict[int, list[int]]] = {}   # group -> member -> batches holding a visit
    for i in window:
      for r in rows[i]:
        if r >= 0 and int(r) in group_of:
          visits.setdefault(group_of[int(r)], {}).setdefault(int(r), []).append(i)
    for k in sorted(visits):
      members = sorted(visits[k])
      for member, bucket in zip(members, rng.permutation(buckets)[:len(members)]):
        for i in visits[k][member]:
          if (i - start) % buckets == bucket and not others_of(k, i, member):
            continue
          same = [j for j in window if j != i and segment[j] == segment[i] and not others_of(k, j, member)
                  and len(free_slots(j))]
          targets = [j for j in same if (j - start) % buckets == bucket]
          if not targets:
            if not others_of(k, i, member):
              counts["fallbacks"] += 1
              continue
            targets = same
            counts["fallbacks"] += 1
          if not targets:
            raise ValueError(f"spread: group {k} cannot be kept apart at step {i + 1}: no batch of the same "
                             f"phase, epoch and length can take member {member}")
          j = targets[int(rng.integers(len(targets)))]
          slot_j = int(rng.choice(free_slots(j)))
          slot_i = int(np.flatnonzero(rows[i] == member)[0])
          rows[i][slot_i], rows[j][slot_j] = rows[j][slot_j], rows[i][slot_i]
          counts["swaps"] += 1
  for i, r in enumerate(rows):
    found = [group_of[int(x)] for x in r if x >= 0 and int(x) in group_of]
    if len(found) != len(set(found)):
      raise RuntimeError(f"spread: batch {i} holds two members of a group")
  batches = [dataclasses.replace(b, rows=r, positions=p)
             for b, r, p in zip(stream.batches, rows, _positions(rows))]
  return Stream(batches, stream.eval_points), counts
