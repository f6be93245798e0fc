"""Replay of pre-training text during SFT: the interleaved plan, and through the real loop."""

import numpy as np
import pytest

from ilp import config as config_lib
from ilp.data import batches as batching
from ilp.data import replay
from ilp.typed import ConfigError
from tests import sft_data


def _stream():
  phases = [batching.PhaseSpec("p1", np.arange(20), 2), batching.PhaseSpec("p2", np.arange(20, 40), 1)]
  return batching.build_stream(np.full(40, 10), phases, (16,), 8, seed=0, eval_every=4)


def test_interleave_puts_a_replay_batch_after_every_k_sft_batches():
  stream = _stream()
  out = replay.interleave(stream, 2, 20, 8, 24, seed=0)
  sft = [b for b in out.batches if not b.replay]
  assert [b.rows.tolist() for b in sft] == [b.rows.tolist() for b in stream.batches]  # SFT batches untouched
  flags = [b.replay for b in out.batches]
  assert flags == [False, False, True] * (len(stream.batches) // 2) + [False] * (len(stream.batches) % 2)
  for b in out.batches:
    if b.replay:
      assert b.length == 24 and (b.positions == -1).all() and ((0 <= b.rows) & (b.rows < 20)).all()
  # Every evaluation point still follows the same SFT batch: old step s -> s + s // 2.
  assert [p.step for p in out.eval_points] == [p.step + p.step // 2 for p in stream.eval_points]
  assert [p.name for p in out.eval_points] == [p.name for p in stream.eval_points]


def test_replay_rows_are_uniform_and_prefix_stable():
  rows = np.concatenate([replay.replay_rows(20, 64, 0, k) for k in range(200)])
  assert abs((rows < 5).mean() - 0.25) < 0.02 and rows.max() == 19 and rows.min() == 0
  short = replay.interleave(_stream(), 2, 20, 8, 24, seed=0)
  phases = [batching.PhaseSpec("p1", np.arange(20), 2), batching.PhaseSpec("p2", np.arange(20, 40), 3)]
  longer = replay.interleave(
    batching.build_stream(np.full(40, 10), phases, (16,), 8, seed=0, eval_every=4), 2, 20, 8, 24, seed=0
  )
  for a, b in zip(short.batches, longer.batches):  # a replanned (longer) stream keeps the shared prefix
    np.testing.assert_array_equal(a.rows, b.rows)


def test_replay_without_sources_is_a_config_error(tmp_path):
  paths = sft_data.make_inputs(str(tmp_path / "data"), per_dataset=4)
  config = sft_data.sft_config(paths)
  config.sft.replay.every_steps = 2
  with pytest.raises(ConfigError) as e:
    config_lib.load(config)
  assert e.value.field == "data.replay"
