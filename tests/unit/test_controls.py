"""Dev-set controls: the resampling trigger and its replay on resume, the progressive-epoch
stopping rule, the dev hash split, and both through the real training loop (kill and resume)."""

import json

import numpy as np
import pytest

from ilp.data import batches as batching
from ilp.data import dev
from ilp.train import controls


def _stream(n=64, batch=8, seed=0):
  lengths = np.full(n, 10)
  phases = [batching.PhaseSpec("p1", np.arange(n), 3)]
  return batching.build_stream(lengths, phases, (16,), batch, seed)


def _dev(**accuracy):
  return {
    "all": {"loss": 1.0, "accuracy": 0.5, "examples": 10},
    **{k: {"loss": 1.0, "accuracy": v, "examples": 5} for k, v in accuracy.items()},
  }


def test_resampling_fires_on_a_relative_drop_and_fills_the_coming_batches():
  datasets = np.asarray(["a"] * 32 + ["b"] * 32, object)
  stream = _stream()
  before = [b.rows.copy() for b in stream.batches]
  r = controls.Resampler(controls.ResampleConfig(every_steps=4, drop=0.05, share=0.5), datasets, np.full(64, 10), 0)
  r.update(4, _dev(a=0.80, b=0.50), stream)
  r.update(8, _dev(a=0.77, b=0.50), stream)  # a fell 3.75% (< 5%): nothing
  assert not r.events
  r.update(12, _dev(a=0.70, b=0.60), stream)  # a fell 9.1% since the last check: resample a
  assert [(e["step"], e["dataset"]) for e in r.events] == [(12, "a")]
  for i, (old, new) in enumerate(zip(before, (b.rows for b in stream.batches))):
    if 12 <= i < 16:  # the next every_steps batches: half of each batch now from a
      assert (datasets[new] == "a").sum() >= 4 and (new != old).sum() > 0
      assert stream.batches[i].length == 16 and len(new) == 8
    else:
      np.testing.assert_array_equal(old, new)
  assert r.events[0]["rows"] == sum(int((stream.batches[i].rows != before[i]).sum()) for i in range(12, 16))


def test_resampling_state_replays_onto_a_fresh_stream():
  datasets = np.asarray(["a"] * 32 + ["b"] * 32, object)
  config = controls.ResampleConfig(every_steps=4, drop=0.05, share=0.25)
  first, second = _stream(), _stream()
  r = controls.Resampler(config, datasets, np.full(64, 10), 3)
  for step, acc in ((4, 0.9), (8, 0.5), (12, 0.9), (16, 0.2)):
    r.update(step, _dev(a=acc, b=0.5), first)
  state = json.loads(json.dumps(r.state()))
  replay = controls.Resampler(config, datasets, np.full(64, 10), 3)
  replay.restore(state, second)
  assert len(replay.events) == 2 and replay.last == r.last
  for a, b in zip(first.batches, second.batches):
    np.testing.assert_array_equal(a.rows, b.rows)


def test_progressive_stopping_rule():
  stop = controls.EarlyStop(controls.ProgressiveConfig(True, 10, 0.01), [5, 10, 15, 20])
  assert stop.due(10) and not stop.due(11)
  losses = {5: 2.0, 10: 1.5, 15: 1.505, 20: 1.52}  # +0.005 is within δ; +0.015 is not
  results = [stop.update(s, {"all": {"loss": v}}, None) for s, v in losses.items()]
  assert results == [False, False, False, True] and stop.stopped_at == 20
  restored = controls.EarlyStop(controls.ProgressiveConfig(True, 10, 0.01), [5, 10, 15, 20])
  restored.restore(json.loads(json.dumps(stop.state())), None)
  assert restored.losses == stop.losses and restored.stopped_at == 20


def test_dev_results_against_a_direct_computation():
  stats = {
    "nll_sum": np.asarray([2.0, 4.0, 3.0]),
    "tokens": np.asarray([1, 3, 2]),
    "exact_match": np.asarray([True, False, True]),
  }
  out = controls.dev_results(stats, np.asarray(["a", "b", "b"], object))
  assert out["all"]["loss"] == pytest.approx(9 / 6) and out["all"]["accuracy"] == pytest.approx(2 / 3)
  assert out["b"]["loss"] == pytest.approx(7 / 5) and out["b"]["accuracy"] == 0.5 and out["a"]["examples"] == 1


def test_dev_split_is_a_stable_hash_rule():
  ids = [f"x-{i}" for i in range(2000)]
  held = dev.held_out(ids, 0.1)
  assert 0.08 < held.mean() < 0.12
  np.testing.assert_array_equal(dev.held_out(ids[::-1], 0.1), held[::-1])  # order does not matter
  import hashlib

  direct = [int(hashlib.sha256(i.encode()).hexdigest()[:16], 16) / 2**64 < 0.1 for i in ids[:50]]
  assert held[:50].tolist() == direct
