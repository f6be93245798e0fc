"""Stage `sft`: supervised fine-tuning over all configured stages, with the dynamics log.

Writes `workdir/sft/`: `checkpoints/` (resumable train state), `dynamics/` (per-example Parquet
log), `tensorboard/`, `final/` (params + tokenizer, the input of detection) and `summary.json`.
"""
from __future__ import annotations

import json
import logging
import os

import ml_collections
import numpy as np
import pandas as pd

from ilp.data import batches as batching
from ilp.data import loaders
from ilp.data.records import SFTRecord
from ilp.data.tokenize import TemplateConfig, tokenize_sft
from ilp.stages import training_inputs
from ilp.train import loop

log = logging.getLogger(__name__)
NAME = "sft"


def outputs(workdir: str) -> list[str]:
  return training_inputs.outputs(workdir, NAME)


def validate(config: ml_collections.ConfigDict) -> None:
  """Reads and checks every SFT record (of the sources that exist already) before anything is written."""
  records = loaders.load_sft(config.data.sft)
  if records:
    plan_stages(config, records, np.arange(0))


def plan_stages(config: ml_collections.ConfigDict, records: list[SFTRecord], example_records: np.ndarray
                ) -> list[batching.StageSpec]:
  """Stage specs over example indices: from `sft.stages` (entries select by `datasets` and/or the
  records' `data_stage`), or, when it is empty, one stage per value of the records' `stage` field."""
  if not records:
    raise ValueError("config field 'data.sft': no SFT records (list at least one source)")
  datasets = np.asarray([records[r].dataset for r in example_records], dtype=object)
  data_stages = np.asarray([records[r].stage for r in example_records], dtype=np.int64)
  if not config.sft.stages:
    return [batching.StageSpec(f"stage{s}", np.flatnonzero(data_stages == s), config.sft.epochs)
            for s in sorted({r.stage for r in records})]
  known = {r.dataset for r in records}
  specs = []
  for k, stage in enumerate(config.sft.stages):
    members = np.ones(len(example_records), bool)
    if "datasets" in stage:
      missing = sorted(set(stage["datasets"]) - known)
      if missing:
        raise ValueError(f"config field 'sft.stages[{k}].datasets': unknown dataset(s) {', '.join(missing)} "
                         f"(the data has: {', '.join(sorted(known))})")
      members &= np.isin(datasets, list(stage["datasets"]))
    if "data_stage" in stage:
      members &= data_stages == int(stage["data_stage"])
    specs.append(batching.StageSpec(stage.get("name", f"stage{k + 1}"), np.flatnonzero(members), int(stage["epochs"])))
  return specs


def example_table(records: list[SFTRecord], example_records: np.ndarray) -> pd.DataFrame:
  return pd.DataFrame({
      "id": [records[r].id for r in example_records],
      "dataset": [records[r].dataset for r in example_records],
      "data_stage": [records[r].stage for r in example_records],
      "meta": [json.dumps(records[r].meta, sort_keys=True) for r in example_records]})


def load_examples(config: ml_collections.ConfigDict, tokenizer) -> tuple[list[SFTRecord], list, dict[str, int]]:
  """The SFT records and their tokenisation, exactly as training sees them (detection reuses it)."""
  records = loaders.load_sft(config.data.sft)
  examples, report = tokenize_sft(records, tokenizer, max(config.data.buckets), TemplateConfig(**config.data.template),
                                  config.data.overlong)
  return records, examples, report


def run(config: ml_collections.ConfigDict, workdir: str) -> None:
  section = config.sft
  if section.batch_size % section.grad_accum_steps:
    raise ValueError(f"config field 'sft.batch_size' ({section.batch_size}) must be divisible by "
                     f"'sft.grad_accum_steps' ({section.grad_accum_steps})")
  init = training_inputs.init_dir(section, workdir, "sft")
  tokenizer = training_inputs.tokenizer(config, init)
  records, examples, report = load_examples(config, tokenizer)
  buckets = tuple(sorted(config.data.buckets))
  example_records = np.asarray([e.record for e in examples])
  lengths = np.asarray([e.length for e in examples])
  stream = batching.build_stream(lengths, plan_stages(config, records, example_records), buckets,
                                 section.batch_size, config.seed, section.eval_every_steps)
  log.info("sft: %d records -> %d examples (%d truncated, %d dropped), %d stages, %d steps", len(records),
           report["examples"], report["truncated"], report["dropped"], len({b.stage for b in stream.batches}),
           len(stream.batches))
  pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
  data = loop.TrainData(stream=stream, batch_size=section.batch_size,
                        arrays=lambda rows, length: batching.assemble(examples, rows, length, pad),
                        lengths=lengths, buckets=buckets, table=example_table(records, example_records))
  loop.train(section, config.mesh, os.path.join(workdir, NAME), init, data, tokenizer,
             notes={"tokenization": report})
