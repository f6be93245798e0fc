"""Stage `sft`: supervised fine-tuning over every phase, with the per-example dynamics log.

Writes `examples.parquet` (the SFT examples as tokenised for training, read by later stages) and
`sft/`: `checkpoints/` (resumable train state), `dynamics/` (per-example Parquet log),
`tensorboard/`, `final/` (params + tokenizer) and `summary.json`.
"""
from __future__ import annotations

import logging

import jax

from ilp.config import Config
from ilp.data import batches as batching
from ilp.data import examples
from ilp.layout import Layout
from ilp.model import checkpoint
from ilp.train import loop

log = logging.getLogger(__name__)
NAME = "sft"


def outputs(layout: Layout) -> list[str]:
  return [layout.examples, layout.final(NAME), layout.summary(NAME)]


def run(config: Config, layout: Layout) -> None:
  section = config.sft
  init = layout.model(section.init_from)
  tokenizer = checkpoint.load_tokenizer(init, config.data.tokenizer)
  frame, report = examples.build(config.data, tokenizer)
  if jax.process_index() == 0:
    examples.write(frame, layout.examples)
  buckets = tuple(sorted(config.data.buckets))
  lengths = frame["length"].to_numpy()
  phases = batching.plan_phases(frame["dataset"].to_numpy(object), frame["phase"].to_numpy(), section.phases,
                                section.epochs)
  stream = batching.build_stream(lengths, phases, buckets, section.batch_size, config.seed, section.eval_every_steps)
  log.info("sft: %d examples (%d truncated, %d dropped), %d phases, %d steps", report["examples"],
           report["truncated"], report["dropped"], len({b.phase for b in stream.batches}), len(stream.batches))
  tokenized = examples.tokenized(frame)
  pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
  data = loop.TrainData(stream=stream, batch_size=section.batch_size,
                        arrays=lambda rows, length: batching.assemble(tokenized, rows, length, pad),
                        lengths=lengths, buckets=buckets, table=frame[list(examples.ID_COLUMNS)])
  loop.train(section, config.mesh, layout, NAME, init, data, tokenizer, notes={"tokenization": report})
