"""Replay during SFT: steps on other SFT-format records (e.g. the instruction-like documents of
pre-training, or general instruction data) interleaved with the SFT steps of a planned stream.

Mixing such data into fine-tuning keeps what it teaches (InstructGPT's pre-training mix, Ouyang
et al. 2022; rehearsal in continual instruction tuning, Scialom et al. 2022, "Fine-tuned language
models are continual learners"). It is also a mechanism of ILP: an SFT answer that contradicts
what the replayed records keep saying for the same question competes with them for as long as
SFT runs, whatever the number of epochs. Replay records are trained on like SFT records (loss on
the response) but are not the data under study: no dynamics log, no detection.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ilp.data.batches import PlannedBatch, Stream
from ilp.typed import check


@dataclasses.dataclass(frozen=True)
class ReplayConfig:
  """Replay during SFT (section `sft.replay`): one step on a batch of `data.replay` records after
  every `every_steps` SFT steps, so replay takes 1 / (every_steps + 1) of the steps."""

  every_steps: int = 0  # SFT steps between two replay steps (0: no replay)

  def __post_init__(self):
    check(self.every_steps >= 0, "every_steps", f"must be >= 0 (0: off), got {self.every_steps}")


def replay_rows(records: int, batch_size: int, seed: int, k: int) -> np.ndarray:
  """The k-th replay batch's record indices, drawn uniformly; seeded by k alone, so a stream
  replanned to fewer batches keeps the replay batches it shares with the old one."""
  return np.random.default_rng([seed, 13, k]).integers(0, records, batch_size)


def interleave(stream: Stream, every: int, records: int, batch_size: int, length: int, seed: int) -> Stream:
  """`stream` with a replay batch after every `every` SFT batches; evaluation points move with the
  batches they follow.

  Args:
    stream: the planned SFT stream.
    every: SFT batches between two replay batches.
    records: how many replay records there are.
    batch_size: rows per replay batch (the SFT batch size).
    length: the replay batches' padded length (a bucket that holds every replay record).
    seed: the run's seed.
  """
  batches: list[PlannedBatch] = []
  moved: dict[int, int] = {0: 0}  # old step -> new step
  for i, planned in enumerate(stream.batches, start=1):
    batches.append(planned)
    if i % every == 0:
      batches.append(
        PlannedBatch(
          replay_rows(records, batch_size, seed, i // every - 1),
          length,
          planned.phase,
          planned.epoch,
          np.full(batch_size, -1, np.int64),
          replay=True,
        )
      )
    moved[i] = len(batches)
  return Stream(batches, [dataclasses.replace(p, step=moved[p.step]) for p in stream.eval_points])
