"""Corpus mixing for (continual) pre-training: every row of every batch draws its corpus by
weight (e.g. 0.8 general + 0.2 injected knowledge) and walks that corpus's packed sequences in a
seeded order, cycling when it runs out."""

from __future__ import annotations

from typing import Any

import numpy as np

from ilp.data import batches as batching
from ilp.data import loaders
from ilp.data.config import DataConfig
from ilp.data.tokenize import pack_corpus


def mixture_rows(sizes: list[int], weights: list[float], rows: int, seed: int) -> np.ndarray:
  """Global sequence indices for `rows` draws: corpus by weight, then that corpus's next sequence."""
  rng = np.random.default_rng([seed, 7])
  probs = np.asarray(weights) / np.sum(weights)
  choice = rng.choice(len(sizes), size=rows, p=probs)
  offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]])
  out = np.empty(rows, np.int64)
  for c, size in enumerate(sizes):
    picks = np.flatnonzero(choice == c)
    order = np.concatenate([rng.permutation(size) for _ in range(len(picks) // size + 1)])
    out[picks] = offsets[c] + order[: len(picks)]
  return out


def check(config: Any, data: DataConfig) -> None:
  """Reads and validates every corpus of `data` (those that exist already: the world stage writes
  its own later); `config` is unused, as checks share one signature."""
  del config
  for source, _ in data.corpus_sources():
    loaders.load_corpus([source])


def packed_stream(
  data: DataConfig, tokenizer: Any, seq_length: int, steps: int, batch_size: int, seed: int
) -> tuple[np.ndarray, batching.Stream, list[int]]:
  """The packed sequences of every corpus, a stream of `steps` batches mixing them by weight, and
  each corpus's number of sequences.

  Args:
    data: the `data` section (its `corpora` and their weights).
    tokenizer: turns documents into tokens.
    seq_length: tokens per packed sequence.
    steps, batch_size: the stream's shape.
    seed: the mixture's seed.
  """
  packed, weights = [], []
  for source, weight in data.corpus_sources():
    packed.append(pack_corpus(loaders.load_corpus([source]), tokenizer, seq_length))
    weights.append(weight)
  rows = mixture_rows([len(p) for p in packed], weights, steps * batch_size, seed)
  plan = [
    batching.PlannedBatch(r, seq_length, 1, 1, np.arange(k * len(r), (k + 1) * len(r)))
    for k, r in enumerate(rows.reshape(steps, batch_size))
  ]
  return np.concatenate(packed), batching.Stream(plan, []), [len(p) for p in packed]
