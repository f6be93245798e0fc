"""Replay of pre-training text during SFT: language-modelling steps interleaved with the SFT
steps of a planned stream.

Mixing pre-training data into fine-tuning keeps what pre-training taught (e.g. InstructGPT's
"PPO-ptx" pre-training mix, Ouyang et al. 2022; replay in continual learning, Scialom et al. 2022,
"Fine-tuned language models are continual learners"). It is also a mechanism of ILP: an SFT answer
that contradicts a fact the replayed text keeps stating competes with it for as long as SFT runs,
whatever the number of epochs.
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from ilp.data.batches import EvalPoint, PlannedBatch, Stream
from ilp.typed import check


@dataclasses.dataclass(frozen=True)
class ReplayConfig:
  """Replay during SFT (section `sft.replay`): one step of language modelling on packed sequences
  of `data.replay` (by weight) after every `every_steps` SFT steps, so replay takes
  1 / (every_steps + 1) of the steps; its sequences are the stream's longest bucket."""
  every_steps: int = 0   # SFT steps between two replay steps (0: no replay)

  def __post_init__(self):
    check(self.every_steps >= 0, "every_steps", f"must be >= 0 (0: off), got {self.every_steps}")


def replay_rows(sizes: Sequence[int], weights: Sequence[float], batch_size: int, seed: int, k: int) -> np.ndarray:
  """The k-th replay batch's sequence indices (over the corpora's sequences concatenated): each
  row picks a corpus by weight, then one of its sequences; seeded by k alone, so a stream
  replanned to fewer batches keeps the replay batches it shares with the old one."""
  rng = np.random.default_rng([seed, 13, k])
  corpus = rng.choice(len(sizes), size=batch_size, p=np.asarray(weights) / np.sum(weights))
  offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
  return offsets[corpus] + (rng.random(batch_size) * np.asarray(sizes)[corpus]).astype(np.int64)


def interleave(stream: Stream, every: int, sizes: Sequence[int], weights: Sequence[float], batch_size: int,
               length: int, seed: int) -> Stream:
  """`stream` with a replay batch after every `every` SFT batches; evaluation points move with the
  batches they follow.

  Args:
    stream: the planned SFT stream.
    every: SFT batches between two replay batches.
    sizes, weights: each replay corpus's number of packed sequences, and its weight.
    batch_size: rows per replay batch (the SFT batch size).
    length: the replay sequences' length (a bucket the SFT step already compiles).
    seed: the run's seed.
  """
  batches: list[PlannedBatch] = []
  moved: dict[int, int] = {0: 0}   # old step -> new step
  for i, planned in enumerate(stream.batches, start=1):
    batches.append(planned)
    if i % every == 0:
      k = i // every - 1
      batches.append(PlannedBatch(replay_rows(sizes, weights, batch_size, seed, k), length, planned.phase,
                                  planned.epoch, np.full(batch_size, -1, np.int64), replay=True))
    moved[i] = len(batches)
  points = [dataclasses.replace(p, step=moved[p.step]) for p in stream.eval_points]
  return Stream(batches, points)
