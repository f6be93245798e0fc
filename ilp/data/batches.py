"""The training stream as a plan of example indices, and padded arrays for one batch.

The whole stream (every phase, epoch and batch) is planned up front from the seed: the order is
reproducible, the stream position of every example visit is known, and resuming at step k is
just "start at batch k". Sequences are padded to a few bucket lengths so the step compiles a
bounded number of times.
"""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Sequence

import numpy as np

from ilp.data.tokenize import TokenizedExample
from ilp.typed import check


@dataclasses.dataclass(frozen=True)
class PhaseConfig:
  """One entry of `sft.phases`: the records of `datasets` (all when empty) whose `phase` field is
  `phase` (any when None), trained for `epochs` epochs; phases run in the order listed."""

  epochs: int  # epochs of the phase (the least it runs when training to convergence)
  name: str = ""  # default: phase<k>
  datasets: tuple[str, ...] = ()  # its records' data sets (empty: every data set)
  phase: int | None = None  # its records' `phase` field (None: any)

  def __post_init__(self):
    check(self.epochs >= 1, "epochs", f"must be >= 1, got {self.epochs}")
    check(self.phase is None or self.phase >= 1, "phase", f"must be >= 1, got {self.phase}")


def plan_phases(
  datasets: np.ndarray, phases: np.ndarray, configured: Sequence[PhaseConfig], epochs: int
) -> list["PhaseSpec"]:
  """Phase specs over example indices, given each example's data set and `phase` field: from
  `configured` (`sft.phases`), or, when it is empty, one phase per value of the `phase` field in
  increasing order, each of `epochs` epochs."""
  if not configured:
    return [PhaseSpec(f"phase{p}", np.flatnonzero(phases == p), epochs) for p in sorted(set(phases.tolist()))]
  specs = []
  for k, entry in enumerate(configured):
    members = np.ones(len(datasets), bool)
    if entry.datasets:
      members &= np.isin(datasets, list(entry.datasets))
    if entry.phase is not None:
      members &= phases == entry.phase
    specs.append(PhaseSpec(entry.name or f"phase{k + 1}", np.flatnonzero(members), entry.epochs))
  return specs


@dataclasses.dataclass(frozen=True)
class PhaseSpec:
  """One phase of sequential SFT: which examples (indices) and how many epochs."""

  name: str
  examples: np.ndarray
  epochs: int


@dataclasses.dataclass(frozen=True)
class PlannedBatch:
  rows: np.ndarray  # [batch] example indices, -1 for padding rows
  length: int  # bucket length
  phase: int  # 1-based phase number
  epoch: int  # 1-based epoch within the phase
  positions: np.ndarray  # [batch] position of each visit in the training stream, -1 for padding
  replay: bool = False  # rows are packed replay sequences (language modelling), not SFT examples
  placed: int = 0  # rows a control put in place of planned ones (dynamic resampling, the online replay)


@dataclasses.dataclass(frozen=True)
class EvalPoint:
  step: int  # evaluated after this many optimizer steps
  name: str  # "start", "phase1/epoch2", "step500"
  phase: int
  epoch: int
  phase_end: bool


@dataclasses.dataclass(frozen=True)
class Stream:
  batches: list[PlannedBatch]
  eval_points: list[EvalPoint]

  def fingerprint(self) -> str:
    """Identifies the plan, so a resumed run can refuse a changed data set or config."""
    h = hashlib.sha256()
    for b in self.batches:
      h.update(b.rows.tobytes())
      h.update(np.int64(b.length).tobytes())
    return h.hexdigest()[:16]


def bucket_length(length: int, buckets: Sequence[int]) -> int:
  for b in sorted(buckets):
    if length <= b:
      return b
  raise ValueError(f"sequence of {length} tokens exceeds the largest bucket {max(buckets)}")


def _epoch(
  lengths: np.ndarray, members: np.ndarray, buckets: Sequence[int], batch_size: int, rng: np.random.Generator
) -> list[tuple[np.ndarray, int]]:
  """Shuffled batches that visit every member once; a batch holds one bucket length."""
  queues: dict[int, list[int]] = {b: [] for b in sorted(buckets)}
  out = []
  for i in rng.permutation(members):
    bucket = bucket_length(int(lengths[i]), buckets)
    queues[bucket].append(int(i))
    if len(queues[bucket]) == batch_size:
      out.append((np.asarray(queues[bucket]), bucket))
      queues[bucket] = []
  for bucket, rest in queues.items():
    if rest:
      out.append((np.asarray(rest + [-1] * (batch_size - len(rest))), bucket))
  return out


Segment = tuple[int, int, str, bool, np.ndarray, np.random.Generator]  # phase, epoch, name, phase end, members, rng


def visit_positions(rows: Sequence[np.ndarray]) -> list[np.ndarray]:
  """The stream position of every real row, consecutive in batch order (-1 for padding rows), so
  a transform that reorders rows can renumber the visits."""
  out, position = [], 0
  for r in rows:
    real = r >= 0
    positions = np.full(r.shape, -1, np.int64)
    positions[real] = position + np.arange(real.sum())
    position += int(real.sum())
    out.append(positions)
  return out


def _plan(
  segments: Sequence[Segment], lengths: np.ndarray, buckets: Sequence[int], batch_size: int, eval_every: int
) -> Stream:
  """Batches for each segment (one shuffled pass over its members) in order, with an evaluation
  point at each segment's end and every `eval_every` steps."""
  planned: list[tuple[np.ndarray, int, int, int]] = []  # rows, length, phase, epoch
  evals = [EvalPoint(0, "start", 1, 0, False)]
  for phase, epoch, name, phase_end, members, rng in segments:
    for rows, length in _epoch(lengths, members, buckets, batch_size, rng):
      planned.append((rows, length, phase, epoch))
      step = len(planned)
      if eval_every and step % eval_every == 0:
        evals.append(EvalPoint(step, f"step{step}", phase, epoch, False))
    if evals[-1].step == len(planned) and evals[-1].name.startswith("step"):  # keep one pass per step
      evals.pop()
    evals.append(EvalPoint(len(planned), name, phase, epoch, phase_end))
  positions = visit_positions([rows for rows, *_ in planned])
  return Stream([PlannedBatch(*batch, p) for batch, p in zip(planned, positions)], evals)


def build_stream(
  lengths: np.ndarray,
  phases: Sequence[PhaseSpec],
  buckets: Sequence[int],
  batch_size: int,
  seed: int,
  eval_every: int = 0,
) -> Stream:
  """Plans every batch of every phase and epoch, phases in sequence, and the evaluation points.

  Args:
    lengths: token count of every example.
    phases: the phases in training order (`plan_phases`).
    buckets: padded lengths; a batch holds one.
    batch_size: rows per batch (the last batch of a bucket is padded with -1 rows).
    seed: the shuffle of phase p, epoch e uses [seed, p, e].
    eval_every: an extra evaluation point every this many steps (0: none).
  """
  segments = [
    (s, e, f"{phase.name}/epoch{e}", e == phase.epochs, phase.examples, np.random.default_rng([seed, s, e]))
    for s, phase in enumerate(phases, start=1)
    for e in range(1, phase.epochs + 1)
  ]
  return _plan(segments, lengths, buckets, batch_size, eval_every)


def global_rounds(phases: Sequence[PhaseSpec]) -> list[np.ndarray]:
  """The members of each round when the visits of all phases are interleaved.

  An example gets the visits it gets in `build_stream`, n = the epochs of every phase it belongs
  to summed, and is visited in rounds floor((j + 1/2) R / n) + 1 for j = 0..n-1: n distinct,
  evenly spaced rounds of 1..R, so every phase is present from the first round to the last. R is
  the largest `epochs` of a phase, or the largest n where overlapping phases give an example more
  visits than that (distinct rounds need R >= n).
  """
  visits = np.concatenate([np.repeat(p.examples, p.epochs) for p in phases]).astype(np.int64)
  examples, counts = np.unique(visits, return_counts=True)
  total = max([p.epochs for p in phases] + counts.tolist())
  rounds: list[list[np.ndarray]] = [[] for _ in range(total)]
  for n in np.unique(counts).tolist():
    for j in range(n):
      rounds[int((j + 0.5) * total / n)].append(examples[counts == n])
  out = [np.sort(np.concatenate(r)) if r else np.zeros(0, np.int64) for r in rounds]
  assert all(len(np.unique(r)) == len(r) for r in out), "an example is visited twice in one round"
  return out


def build_global_stream(
  lengths: np.ndarray,
  phases: Sequence[PhaseSpec],
  buckets: Sequence[int],
  batch_size: int,
  seed: int,
  eval_every: int = 0,
) -> Stream:
  """The paper's global shuffle across the whole multi-phase mixture: the visits of all phases
  interleaved over rounds (`global_rounds`), each round shuffled with [seed, 0, round] and batched
  like an epoch of `build_stream`. The stream is one phase (1) whose epochs are the rounds; the
  evaluation points are "start", every `eval_every` steps and "global/epoch<r>" at each round's
  end (the last one ends the phase). Same arguments as `build_stream`."""
  rounds = global_rounds(phases)
  segments = [
    (1, r, f"global/epoch{r}", r == len(rounds), members, np.random.default_rng([seed, 0, r]))
    for r, members in enumerate(rounds, start=1)
  ]
  return _plan(segments, lengths, buckets, batch_size, eval_every)


def covering(buckets: Sequence[int], longest: int) -> tuple[int, ...]:
  """The buckets plus, if needed, one more (a multiple of 64) that fits a sequence of `longest`."""
  buckets = sorted(buckets)
  return tuple(buckets if longest <= buckets[-1] else buckets + [int(np.ceil(longest / 64) * 64)])


def eval_batches(lengths: np.ndarray, buckets: Sequence[int], batch_size: int) -> list[tuple[np.ndarray, int]]:
  """Every example once, in index order within each bucket, for full evaluation passes."""
  out = []
  bucket_of = np.asarray([bucket_length(int(n), buckets) for n in lengths])
  for bucket in sorted(buckets):
    members = np.flatnonzero(bucket_of == bucket)
    for start in range(0, len(members), batch_size):
      rows = members[start : start + batch_size]
      out.append((np.concatenate([rows, np.full(batch_size - len(rows), -1)]), bucket))
  return out


def assemble(examples: Sequence[TokenizedExample], rows: np.ndarray, length: int, pad_id: int) -> dict[str, np.ndarray]:
  """Right-padded arrays for the given rows.

  tokens/mask are the model input; targets[t] = tokens[t + 1] and loss_mask marks the targets
  that are response tokens, so position t's logits are scored against the next token.
  """
  n = len(rows)
  tokens = np.full((n, length), pad_id, np.int32)
  mask = np.zeros((n, length), np.int32)
  loss_mask = np.zeros((n, length), np.int32)
  for r, i in enumerate(rows):
    if i < 0:
      continue
    ex = examples[i]
    tokens[r, : ex.length] = ex.tokens
    mask[r, : ex.length] = 1
    loss_mask[r, ex.prompt_length - 1 : ex.length - 1] = 1
  targets = np.concatenate([tokens[:, 1:], np.full((n, 1), pad_id, np.int32)], axis=1)
  return {"tokens": tokens, "mask": mask, "targets": targets, "loss_mask": loss_mask}


def lm_batch(sequences: np.ndarray) -> dict[str, np.ndarray]:
  """Arrays for continual pre-training: every next token of packed text is a target."""
  n, length = sequences.shape
  targets = np.concatenate([sequences[:, 1:], np.zeros((n, 1), np.int32)], axis=1)
  loss_mask = np.ones((n, length), np.int32)
  loss_mask[:, -1] = 0
  return {"tokens": sequences, "mask": np.ones((n, length), np.int32), "targets": targets, "loss_mask": loss_mask}
