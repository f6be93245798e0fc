"""Stage `capability`: the fine-tuned model on held-out questions and text
(`ilp.interventions.capability`); writes `capability.json`."""

from __future__ import annotations

import jax

from ilp import fileio, parallel
from ilp.config import Config
from ilp.interventions import capability
from ilp.layout import Layout
from ilp.model import checkpoint
from ilp.scoring.inference import Model


def outputs(layout: Layout) -> list[str]:
  return [layout.capability]


def run(config: Config, layout: Layout) -> None:
  model_dir = layout.model(config.detect.model)
  tokenizer = checkpoint.load_tokenizer(model_dir, config.data.tokenizer)
  mesh = parallel.make_mesh(config.mesh.shape)
  model = Model(model_dir, mesh, config.mesh.rules, config.detect.batch_size)
  result = {"model": config.detect.model}
  if config.data.heldout:
    result["heldout_questions"] = capability.heldout_accuracy(model, tokenizer, config.data, config.detect, config.seed)
  if config.data.heldout_text:
    result["heldout_text"] = capability.heldout_perplexity(model, tokenizer, config.data)
  if jax.process_index() == 0:
    fileio.write_json_atomic(layout.capability, result)
