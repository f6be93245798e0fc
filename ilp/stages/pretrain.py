"""Stage `pretrain`: (continual) pre-training with the LM loss on every token of raw text.

Corpora from `data.corpora` are packed into `pretrain.seq_length` sequences and mixed by their
`weight` (e.g. 0.8 general + 0.2 injected knowledge): every row of every batch draws its corpus
with those probabilities, and walks that corpus's sequences in a seeded order, cycling when it
runs out. Writes `workdir/pretrain/` like the `sft` stage, without the dynamics log.
"""
from __future__ import annotations

import logging
import os

import ml_collections
import numpy as np

from ilp.data import batches as batching
from ilp.data import loaders
from ilp.data.tokenize import pack_corpus
from ilp.stages import training_inputs
from ilp.train import loop

log = logging.getLogger(__name__)
NAME = "pretrain"


def outputs(workdir: str) -> list[str]:
  return training_inputs.outputs(workdir, NAME)


def corpus_sources(config: ml_collections.ConfigDict, required: bool = True) -> list[tuple[dict, float]]:
  if required and not config.data.corpora:
    raise ValueError("config field 'data.corpora': the pretrain stage needs at least one corpus")
  out = []
  for k, source in enumerate(config.data.corpora):
    source = dict(source)
    weight = float(source.pop("weight", 1.0))
    if weight <= 0:
      raise ValueError(f"config field 'data.corpora[{k}].weight' must be positive, got {weight}")
    out.append((source, weight))
  return out


def validate(config: ml_collections.ConfigDict) -> None:
  """Reads every corpus that exists already (the world stage writes its own later)."""
  for source, _ in corpus_sources(config, required=False):
    loaders.load_corpus([source])


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
    out[picks] = offsets[c] + order[:len(picks)]
  return out


def run(config: ml_collections.ConfigDict, workdir: str) -> None:
  section = config.pretrain
  init = training_inputs.init_dir(section, workdir, "pretrain")
  if section.init_from == "pretrain":
    raise ValueError("config field 'pretrain.init_from' cannot be the pretrain stage itself")
  tokenizer = training_inputs.tokenizer(config, init)
  packed, weights = [], []
  for source, weight in corpus_sources(config):
    packed.append(pack_corpus(loaders.load_corpus([source]), tokenizer, section.seq_length))
    weights.append(weight)
  sequences = np.concatenate(packed)
  rows = mixture_rows([len(p) for p in packed], weights, section.steps * section.batch_size, config.seed)
  plan = [batching.PlannedBatch(r, section.seq_length, 1, 1, np.arange(k * len(r), (k + 1) * len(r)))
          for k, r in enumerate(rows.reshape(section.steps, section.batch_size))]
  log.info("pretrain: %d corpora, %d packed sequences of %d tokens, %d steps", len(packed), len(sequences),
           section.seq_length, section.steps)
  data = loop.TrainData(stream=batching.Stream(plan, []), batch_size=section.batch_size,
                        arrays=lambda r, length: batching.lm_batch(sequences[r]))
  loop.train(section, config.mesh, os.path.join(workdir, NAME), init, data, tokenizer)
