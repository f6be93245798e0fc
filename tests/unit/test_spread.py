"""Near-duplicate groups spread over buckets of batches, re-dealt every K steps."""

from collections import Counter

import numpy as np
import pytest

from ilp.data import batches as batching
from ilp.data.spread import spread

LENGTHS = np.asarray(([10] * 75 + [20] * 25) * 2)  # two bucket lengths in each phase
PHASES = [batching.PhaseSpec("p1", np.arange(0, 100), 3), batching.PhaseSpec("p2", np.arange(100, 200), 2)]
GROUPS = [
  np.asarray(g)
  for g in (
    [0, 1],
    [2, 3, 4],
    [5, 6],
    [7, 8, 9],
    [10, 80],
    [11, 12, 81],
    [76, 77],
    [78, 79, 82],
    [100, 101],
    [102, 103, 104],
    [105, 176],
    [177, 178, 179],
    [13, 150],
    [20, 21, 22],
    [110, 111, 112],
  )
]  # pairs and triples, some of two lengths
BUCKETS, EVERY = 4, 8


def _stream():
  return batching.build_stream(LENGTHS, PHASES, (16, 32), 8, seed=0)


def _clashes(stream):
  return sum(len(set(b.rows.tolist()) & set(g.tolist())) > 1 for b in stream.batches for g in GROUPS)


def _segment_rows(stream):
  out = {}
  for b in stream.batches:
    out.setdefault((b.phase, b.epoch), Counter()).update(b.rows.tolist())
  return out


def _placement(stream):
  """(group, window) -> member -> the buckets (batch index in the window mod B) of its visits."""
  out = {}
  for i, b in enumerate(stream.batches):
    for k, g in enumerate(GROUPS):
      for member in set(b.rows.tolist()) & set(g.tolist()):
        out.setdefault((k, i // EVERY), {}).setdefault(member, set()).add((i % EVERY) % BUCKETS)
  return out


def test_spread_never_puts_two_members_of_a_group_in_one_batch():
  stream = _stream()
  assert _clashes(stream) > 0  # the plan had members sharing batches
  out, counts = spread(stream, GROUPS, BUCKETS, EVERY, seed=0)
  assert _clashes(out) == 0
  assert counts["groups"] == len(GROUPS) and counts["windows"] == -(-len(stream.batches) // EVERY)
  assert counts["swaps"] > 0
  # one step per window: only bucket 0 exists, so every clash is resolved by a fallback move
  out, counts = spread(stream, GROUPS, BUCKETS, every=1, seed=0)
  assert _clashes(out) == 0 and counts["fallbacks"] > 0 and _segment_rows(out) == _segment_rows(stream)


def test_spread_only_moves_rows_within_a_phase_epoch_and_length():
  stream = _stream()
  out, _ = spread(stream, GROUPS, BUCKETS, EVERY, seed=0)
  assert _segment_rows(out) == _segment_rows(stream)
  assert [(b.phase, b.epoch, b.length, b.rows.shape) for b in out.batches] == [
    (b.phase, b.epoch, b.length, b.rows.shape) for b in stream.batches
  ]
  for before, after in zip(stream.batches, out.batches):
    np.testing.assert_array_equal(after.rows < 0, before.rows < 0)  # padding rows stay where they were
  assert out.eval_points == stream.eval_points


def test_spread_deals_members_to_distinct_buckets_redrawn_per_window():
  out, counts = spread(_stream(), GROUPS, BUCKETS, EVERY, seed=0)
  placement = _placement(out)
  # Within a window the members sit in batches of distinct buckets, except after a fallback
  # (no batch of the dealt bucket with the member's phase, epoch and length in the window).
  shared = [
    key
    for key, members in placement.items()
    if len(members) > 1 and len(set().union(*members.values())) < sum(map(len, members.values()))
  ]
  assert len(shared) <= counts["fallbacks"] and len(shared) < len(placement) / 4
  # The dealing follows the documented draw: rng [seed, window], one permutation per group present.
  off = 0
  for w in range(counts["windows"]):
    rng = np.random.default_rng([0, w])
    for k in sorted(k for k, v in placement if v == w):
      members = placement[(k, w)]
      for member, bucket in zip(sorted(members), rng.permutation(BUCKETS).tolist()):
        off += len(members[member] - {bucket})
  assert off <= counts["fallbacks"]
  # Re-formed: the same members get other buckets in another window.
  deals = {}
  for (k, w), members in placement.items():
    if len(members) > 1 and all(len(b) == 1 for b in members.values()):
      deals.setdefault((k, tuple(sorted(members))), set()).add(tuple(min(members[m]) for m in sorted(members)))
  assert any(len(d) > 1 for d in deals.values())


def test_spread_is_deterministic_and_identity_without_groups():
  stream = _stream()
  a, counts_a = spread(stream, GROUPS, BUCKETS, EVERY, seed=3)
  b, counts_b = spread(stream, GROUPS, BUCKETS, EVERY, seed=3)
  assert a.fingerprint() == b.fingerprint() and counts_a == counts_b
  assert spread(stream, GROUPS, BUCKETS, EVERY, seed=4)[0].fingerprint() != a.fingerprint()
  unchanged, counts = spread(stream, [], BUCKETS, EVERY, seed=3)
  assert unchanged.fingerprint() == stream.fingerprint() and counts["swaps"] == counts["fallbacks"] == 0


def test_spread_rejects_bad_arguments():
  with pytest.raises(ValueError, match="group 1 has 3 members, more than buckets=2"):
    spread(_stream(), GROUPS, buckets=2, every=EVERY, seed=0)
  with pytest.raises(ValueError, match="buckets must be >= 2"):
    spread(_stream(), [], buckets=1, every=EVERY, seed=0)
  with pytest.raises(ValueError, match="every must be >= 1"):
    spread(_stream(), [], buckets=BUCKETS, every=0, seed=0)
  with pytest.raises(ValueError, match="example 1 is in groups 0 and 1"):
    spread(_stream(), [np.asarray([0, 1]), np.asarray([1, 2])], BUCKETS, EVERY, seed=0)


def test_spread_fails_naming_the_group_when_members_cannot_be_kept_apart():
  # one batch of length 32 per epoch: two of its members can never be apart
  lengths = np.asarray([10] * 40 + [20] * 3)
  stream = batching.build_stream(lengths, [batching.PhaseSpec("p", np.arange(43), 1)], (16, 32), 8, seed=0)
  with pytest.raises(ValueError, match=r"group 0 cannot be kept apart at step \d+"):
    spread(stream, [np.asarray([40, 41])], BUCKETS, EVERY, seed=0)


def test_spread_renumbers_positions_in_batch_order():
  stream = _stream()
  out, _ = spread(stream, GROUPS, BUCKETS, EVERY, seed=0)
  positions = np.concatenate([b.positions[b.rows >= 0] for b in out.batches])
  np.testing.assert_array_equal(positions, np.arange(sum((b.rows >= 0).sum() for b in stream.batches)))
  assert all((b.positions[b.rows < 0] == -1).all() for b in out.batches)
