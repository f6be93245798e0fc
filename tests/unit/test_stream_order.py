"""The global order: the visits of all phases interleaved in one shuffled stream."""

from collections import Counter

import numpy as np

from ilp.data import batches as batching

LENGTHS = np.asarray([10] * 150 + [20] * 50)  # two bucket lengths


def _phases():
  return [batching.PhaseSpec("p1", np.arange(0, 60), 2), batching.PhaseSpec("p2", np.arange(60, 200), 3)]


def _visits(stream):
  return Counter(int(r) for b in stream.batches for r in b.rows if r >= 0)


def test_global_stream_keeps_the_visits_of_build_stream():
  overlapping = [batching.PhaseSpec("a", np.arange(0, 120), 4), batching.PhaseSpec("b", np.arange(100, 200), 2)]
  for phases in (_phases(), overlapping):
    sequential = batching.build_stream(LENGTHS, phases, (16, 32), 8, seed=0)
    mixed = batching.build_global_stream(LENGTHS, phases, (16, 32), 8, seed=0)
    assert _visits(mixed) == _visits(sequential)
    for b in mixed.batches:  # one visit per example and round
      real = b.rows[b.rows >= 0]
      assert len(set(real.tolist())) == len(real)
    for r in {b.epoch for b in mixed.batches}:
      rows = np.concatenate([b.rows for b in mixed.batches if b.epoch == r])
      assert len(set(rows[rows >= 0].tolist())) == (rows >= 0).sum()


def test_global_rounds_spread_each_examples_visits_evenly():
  spec = batching.PhaseSpec
  rounds = batching.global_rounds(
    [spec("a", np.arange(0, 3), 5), spec("b", np.arange(3, 5), 2), spec("c", np.arange(5, 6), 1)]
  )
  # R = 5: 5 visits in every round, 2 in rounds floor(1.25) + 1 = 2 and floor(3.75) + 1 = 4, 1 in round 3
  assert [r.tolist() for r in rounds] == [[0, 1, 2], [0, 1, 2, 3, 4], [0, 1, 2, 5], [0, 1, 2, 3, 4], [0, 1, 2]]
  # overlapping phases giving an example more visits than any phase's epochs: R grows to keep rounds distinct
  overlap = batching.global_rounds([spec("a", np.arange(0, 2), 2), spec("b", np.arange(1, 3), 2)])
  assert [r.tolist() for r in overlap] == [[1], [0, 1, 2], [1], [0, 1, 2]]


def test_global_stream_interleaves_phases_from_the_first_round():
  mixed = batching.build_global_stream(LENGTHS, _phases(), (16, 32), 8, seed=0)
  first = {int(r) for b in mixed.batches if b.epoch == 1 for r in b.rows if r >= 0}
  assert first & set(range(60)) and set(range(60, 200)) <= first  # the last phase is there from the start
  assert {b.phase for b in mixed.batches} == {1} and {b.epoch for b in mixed.batches} == {1, 2, 3}


def test_global_stream_shapes_positions_and_eval_points():
  sequential = batching.build_stream(LENGTHS, _phases(), (16, 32), 8, seed=0)
  mixed = batching.build_global_stream(LENGTHS, _phases(), (16, 32), 8, seed=0, eval_every=7)
  assert {b.length for b in mixed.batches} <= {b.length for b in sequential.batches}
  assert {b.rows.shape for b in mixed.batches} == {(8,)}
  positions = np.concatenate([b.positions[b.rows >= 0] for b in mixed.batches])
  np.testing.assert_array_equal(positions, np.arange(sum(_visits(mixed).values())))
  assert all((b.positions[b.rows < 0] == -1).all() for b in mixed.batches)
  points = mixed.eval_points
  assert points[0].name == "start" and [p.name for p in points if p.name.startswith("global")] == [
    "global/epoch1",
    "global/epoch2",
    "global/epoch3",
  ]
  assert [p.name for p in points if p.phase_end] == ["global/epoch3"] and points[-1].step == len(mixed.batches)
  ends = {p.step for p in points if p.name.startswith("global")}
  every_seven = [s for s in range(7, len(mixed.batches), 7) if s not in ends]
  assert [p.step for p in points if p.name.startswith("step")] == every_seven


def test_global_stream_is_deterministic_per_seed():
  a = batching.build_global_stream(LENGTHS, _phases(), (16, 32), 8, seed=0)
  b = batching.build_global_stream(LENGTHS, _phases(), (16, 32), 8, seed=0)
  c = batching.build_global_stream(LENGTHS, _phases(), (16, 32), 8, seed=1)
  assert a.fingerprint() == b.fingerprint() != c.fingerprint()
