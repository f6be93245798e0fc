"""Near-duplicate groups kept out of each other's mini-batches (the paper's bucketing for
conflicting data, e.g. paraphrases with contradicting answers), as a transform of a planned
stream."""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import numpy as np

from ilp.data.batches import Stream, visit_positions

NON_MEMBER, PADDING = -1, -2  # `owner` of a row that is in no group, of a padding row


def _group_index(groups: Sequence[np.ndarray], buckets: int, every: int, size: int) -> np.ndarray:
  """The group of every example index below `size` (NON_MEMBER for none), after checking the
  arguments."""
  if buckets < 2:
    raise ValueError(f"spread: buckets must be >= 2, got {buckets}")
  if every < 1:
    raise ValueError(f"spread: every must be >= 1, got {every}")
  group_of = np.full(size, NON_MEMBER, np.int64)
  for k, members in enumerate(groups):
    if len(members) > buckets:
      raise ValueError(f"spread: group {k} has {len(members)} members, more than buckets={buckets}")
    for i in np.asarray(members, np.int64).tolist():
      if group_of[i] != NON_MEMBER:
        raise ValueError(f"spread: example {i} is in groups {group_of[i]} and {k}")
      group_of[i] = k
  return group_of


@dataclasses.dataclass
class _Swaps:
  """The stream's rows being rearranged: `owner` holds each row's group (NON_MEMBER, PADDING),
  `segment` each batch's (phase, epoch, length) code; swaps stay within a segment."""

  rows: np.ndarray
  owner: np.ndarray
  segment: np.ndarray
  buckets: int
  counts: dict[str, int]

  def usable(self, i: int, k: int, among: np.ndarray) -> np.ndarray:
    """The batches of `among` that can take the visit in batch i of a member of group k: same
    segment, a row of no group to swap with, no member of group k."""
    same = among[(self.segment[among] == self.segment[i]) & (among != i)]
    return same[(self.owner[same] == NON_MEMBER).any(1) & ~(self.owner[same] == k).any(1)]

  def place(self, i: int, member: int, k: int, bucket: int, window: np.ndarray, rng: np.random.Generator) -> None:
    """Moves the visit of `member` (group k) in batch i into a batch of `bucket` of its segment."""
    rows, owner = self.rows, self.owner
    candidates = self.usable(i, k, window)
    targets = candidates[(candidates - window[0]) % self.buckets == bucket]
    if not len(targets):
      self.counts["fallbacks"] += 1
      if (owner[i] == k).sum() == 1:
        return
      targets = candidates if len(candidates) else self.usable(i, k, np.arange(len(rows)))
      if not len(targets):
        raise ValueError(
          f"spread: group {k} cannot be kept apart at step {i + 1}: no batch of the same phase, "
          f"epoch and length can take member {member}"
        )
    j = int(targets[rng.integers(len(targets))])
    slot_j = int(rng.choice(np.flatnonzero(owner[j] == NON_MEMBER)))
    slot_i = int(np.flatnonzero(rows[i] == member)[0])
    rows[[i, j], [slot_i, slot_j]] = rows[[j, i], [slot_j, slot_i]]
    owner[[i, j], [slot_i, slot_j]] = owner[[j, i], [slot_j, slot_i]]
    self.counts["swaps"] += 1


def spread(
  stream: Stream, groups: Sequence[np.ndarray], buckets: int, every: int, seed: int
) -> tuple[Stream, dict[str, Any]]:
  """`stream` with no two members of a group in one batch, and counts of what was done (groups,
  windows, swaps, fallbacks).

  The stream is cut into windows of `every` consecutive steps; inside a window, batch j belongs to
  bucket j mod `buckets`. Each group's distinct members present in a window are dealt to distinct
  buckets by a random draw (generator [seed, window], one draw per group in group order, before
  any swap): the grouping is re-formed every `every` steps. Every visit of a member in the window
  goes to its bucket: a visit in a batch of another bucket is swapped with a visit of an example
  in no group, chosen at random among the batches of the member's bucket that share the visit's
  (phase, epoch, padded length) and hold no other member of the group. Swaps move rows only
  between batches of one (phase, epoch, length), so every epoch still visits each example once and
  no new (batch, length) shape appears: the train step does not recompile. When no batch of the
  member's bucket can take it (a fallback), the visit stays if its batch holds no other member of
  the group, and otherwise is swapped into a batch of its (phase, epoch, length) that holds none, in
  the window if one there can take it, else anywhere in the stream; when there is none, the
  transform fails naming the group and step. Positions are renumbered in the new order; evaluation
  points are kept.

  Args:
    stream: the planned stream (every batch has the same number of rows).
    groups: example indices of each group (an example belongs to at most one group).
    buckets: B >= 2, the number of buckets a window's batches are dealt into (>= the largest group).
    every: K >= 1, the window length in steps.
    seed: the seed of the dealing and the choice of swap partners.
  """
  counts = {"groups": len(groups), "windows": 0, "swaps": 0, "fallbacks": 0}
  largest = max([int(np.max(g)) for g in groups if len(g)] + [int(b.rows.max()) for b in stream.batches] + [0])
  group_of = _group_index(groups, buckets, every, largest + 1)
  if not stream.batches:
    return stream, counts
  rows = np.stack([b.rows for b in stream.batches])
  keys = [(b.phase, b.epoch, b.length) for b in stream.batches]
  codes = {key: c for c, key in enumerate(dict.fromkeys(keys))}
  swaps = _Swaps(
    rows,
    np.where(rows >= 0, group_of[np.maximum(rows, 0)], PADDING),
    np.asarray([codes[key] for key in keys]),
    buckets,
    counts,
  )
  owner = swaps.owner
  for w, start in enumerate(range(0, len(rows), every)):
    window = np.arange(start, min(start + every, len(rows)))
    counts["windows"] += 1
    rng = np.random.default_rng([seed, w])
    at, slot = np.nonzero(owner[window] >= 0)
    visits: dict[int, dict[int, list[int]]] = {}  # group -> member -> batches holding a visit
    for i, member in zip((at + start).tolist(), rows[at + start, slot].tolist()):
      visits.setdefault(int(group_of[member]), {}).setdefault(member, []).append(i)
    dealt = {k: dict(zip(sorted(visits[k]), rng.permutation(buckets).tolist())) for k in sorted(visits)}
    for k, bucket_of in dealt.items():
      for member, bucket in bucket_of.items():
        for i in visits[k][member]:
          if (i - start) % buckets != bucket:
            swaps.place(i, member, k, bucket, window, rng)
  assert all(len(np.unique(h[h >= 0])) == (h >= 0).sum() for h in owner), "two members of a group share a batch"
  batches = [
    dataclasses.replace(b, rows=r, positions=p) for b, r, p in zip(stream.batches, rows, visit_positions(list(rows)))
  ]
  return Stream(batches, stream.eval_points), counts
