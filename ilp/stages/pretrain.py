"""Stage `pretrain`: (continual) pre-training with the LM loss on every token of `data.corpora`,
mixed by weight (`ilp.data.mixture`). Writes `pretrain/` like the `sft` stage, without the
dynamics log."""

from __future__ import annotations

import logging

from ilp.config import Config
from ilp.data import batches as batching
from ilp.data import mixture
from ilp.layout import Layout
from ilp.model import checkpoint
from ilp.train import loop

log = logging.getLogger(__name__)
NAME = "pretrain"


def outputs(layout: Layout) -> list[str]:
  return [layout.final(NAME), layout.summary(NAME)]


def run(config: Config, layout: Layout) -> None:
  section = config.pretrain
  init = layout.model(section.init_from)
  tokenizer = checkpoint.load_tokenizer(init, config.data.tokenizer)
  sequences, stream, sizes = mixture.packed_stream(
    config.data, tokenizer, section.seq_length, section.steps, section.batch_size, config.seed
  )
  log.info(
    "pretrain: %d corpora, %d packed sequences of %d tokens, %d steps",
    len(sizes),
    len(sequences),
    section.seq_length,
    section.steps,
  )
  data = loop.TrainData(
    stream=stream, batch_size=section.batch_size, arrays=lambda rows, length: batching.lm_batch(sequences[rows])
  )
  loop.train(section, config.mesh, config.machine, layout.training_paths(NAME), init, data, tokenizer)
