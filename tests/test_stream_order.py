"""Stream transforms: the global order across phases, and near-duplicate groups spread apart."""
from collections import Counter

import numpy as np
import pytest

from ilp.data import batches as batching
from ilp.data.spread import spread

LENGTHS = np.asarray([10] * 150 + [20] * 50)   # two bucket lengths


def _phases():
  return [batching.PhaseSpec("p1", np.arange(0, 60), 5), batching.PhaseSpec("p2", np.arange(60, 200), 2)]


def _visits(stream):
  return Counter(int(r) for b in stream.batches for r in b.rows if r >= 0)


def test_global_order_keeps_visits_and_interleaves_phases():
  sequential = batching.build_stream(LENGTHS, _phases(), (16, 32), 8, seed=0)
  mixed = batching.build_global_stream(LENGTHS, _phases(), (16, 32), 8, seed=0, eval_every=7)
  assert _visits(mixed) == _visits(sequential)
  assert {b.length for b in mixed.batches} <= {b.length for b in sequential.batches}
  assert {b.phase for b in mixed.batches} == {1} and {b.epoch for b in mixed.batches} == set(range(1, 6))
  rounds = batching.global_rounds(_phases())
  assert [len(r) for r in rounds] == [60, 60 + 140, 60, 60 + 140, 60]
  last_round = {int(r) for b in mixed.batches if b.epoch == 4 for r in b.rows if r >= 0}
  assert set(range(60, 200)) <= last_round and set(range(60)) <= last_round   # both phases late in training
  positions = np.concatenate([b.positions[b.positions >= 0] for b in mixed.batches])
  np.testing.assert_array_equal(positions, np.arange(len(positions)))
  names = [p.name for p in mixed.eval_points]
  assert names[0] == "start" and names[-1] == "global/epoch5" and mixed.eval_points[-1].phase_end
  assert any(n.startswith("step") for n in names)
  again = batching.build_global_stream(LENGTHS, _phases(), (16, 32), 8, seed=0, eval_every=7)
  assert again.fingerprint() == mixed.fingerprint()
  assert batching.build_global_stream(LENGTHS, _phases(), (16, 32), 8, seed=1).fingerprint() != mixed.fingerprint()


GROUPS = [np.asarray([3, 70]), np.asarray([5, 6, 150]), np.asarray([151, 152]), np.asarray([80, 90, 100])]


def _stream():
  return batching.build_stream(LENGTHS, _phases(), (16, 32), 8, seed=0)


def _member_batches(stream, group):
  return [i for i, b in enumerate(stream.batches) if len(set(b.rows.tolist()) & set(group.tolist())) > 0]


def test_spread_keeps_group_members_apart_without_new_shapes():
  stream = _stream()
  before = [(b.phase, b.epoch, b.length) for b in stream.batches]
  collisions = sum(len(set(b.rows.tolist()) & set(g.tolist())) > 1 for b in stream.batches for g in GROUPS)
  out, counts = spread(stream, GROUPS, buckets=4, every=5, seed=0)
  assert counts["swaps"] > 0 and counts["windows"] == -(-len(stream.batches) // 5)
  for b in out.batches:
    for g in GROUPS:
      assert len(set(b.rows.tolist()) & set(g.tolist())) <= 1
  assert [(b.phase, b.epoch, b.length) for b in out.batches] == before
  for key in set(before):   # each (phase, epoch, length) segment visits the same examples
    pick = lambda s: sorted(int(r) for b in s.batches if (b.phase, b.epoch, b.length) == key for r in b.rows)
    assert pick(out) == pick(stream)
  positions = np.concatenate([b.positions[b.positions >= 0] for b in out.batches])
  np.testing.assert_array_equal(positions, np.arange(len(positions)))
  assert collisions > 0    # the plan had groups sharing batches before


def test_spread_deals_members_to_distinct_buckets_and_redeals_per_window():
  stream = _stream()
  every, buckets = 9, 4
  out, counts = spread(stream, GROUPS, buckets=buckets, every=every, seed=0)
  dealt = {}   # (group, window) -> {member: bucket of the batch holding it}
  for k, g in enumerate(GROUPS):
    for i, b in enumerate(out.batches):
      for r in set(b.rows.tolist()) & set(g.tolist()):
        dealt.setdefault((k, i // every), {})[r] = (i % every) % buckets
  # distinct buckets per window, except where a segment had no batch of the dealt bucket and
  # length (a counted fallback, which still keeps the members in different batches)
  shared = sum(len(set(v.values())) < len(v) for v in dealt.values())
  assert shared <= counts["fallbacks"] < len(dealt) / 2
  # re-formed every K steps: the same members are dealt differently in different windows
  seen = {}
  for (k, w), v in dealt.items():
    if len(v) > 1:
      seen.setdefault((k, tuple(sorted(v))), set()).add(tuple(v[m] for m in sorted(v)))
  assert any(len(deals) > 1 for deals in seen.values())


def test_spread_is_deterministic_and_identity_without_groups():
  stream = _stream()
  a, _ = spread(stream, GROUPS, 4, 5, seed=3)
  b, _ = spread(stream, GROUPS, 4, 5, seed=3)
  assert a.fingerprint() == b.fingerprint()
  assert spread(stream, [], 4, 5, seed=3)[0].fingerprint() == stream.fingerprint()


def test_spread_rejects_a_group_larger_than_the_buckets():
  with pytest.raises(ValueError, match="group 1 has 3 members, more than buckets=2"):
    spread(_stream(), GROUPS, buckets=2, every=5, seed=0)
