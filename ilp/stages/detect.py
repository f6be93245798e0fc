"""Stage `detect`: which training examples did SFT fail to teach? (`ilp.detection.probes`)

With `detect.require_converged` it first refuses a model whose SFT's last phase did not converge
(`ilp.detection.converged`). Reads the examples table (building it from `data.sft` for a model
trained elsewhere), probes the model and the base model chunk by chunk (each chunk a Parquet part,
so a killed run resumes after its last one), and writes `detect/`: `detection.parquet` (one row
per example), `summary.json`, `parts/`, `tensorboard/`.
"""

from __future__ import annotations

import logging
import os
import time

import jax

from ilp import fileio, parallel
from ilp.config import Config
from ilp.data import examples
from ilp.detection import columns as col
from ilp.detection import converged, probes
from ilp.detection.config import settings_hash
from ilp.detection.inputs import Inputs, Models
from ilp.detection.summary import finish
from ilp.layout import Layout
from ilp.model import checkpoint
from ilp.parts import Parts
from ilp.scoring.inference import Model
from ilp.train.metrics import MetricWriter

log = logging.getLogger(__name__)


def outputs(layout: Layout) -> list[str]:
  return [layout.detection, layout.detection_summary]


def run(config: Config, layout: Layout) -> None:
  detect = config.detect
  if detect.require_converged:  # before any work: the config check made detect.model "sft"
    converged.require(layout.summary("sft"))
  writer = jax.process_index() == 0
  model_dir = layout.model(detect.model)
  tokenizer = checkpoint.load_tokenizer(model_dir, config.data.tokenizer)
  if not os.path.exists(layout.examples) and writer:
    examples.write(examples.build(config.data, tokenizer)[0], layout.examples)
  parallel.sync("examples table")
  frame = examples.read(layout.examples)
  inputs = Inputs.from_examples(frame, detect, config.data, tokenizer)
  parts = Parts(layout.detection_parts, settings_hash(detect, config.data, config.seed, layout.root), writer)
  mesh = parallel.make_mesh(config.mesh.shape)
  load = lambda name: Model(layout.model(name), mesh, config.mesh.rules, detect.batch_size) if name else None
  models = Models(load(detect.model), load(detect.base), load(detect.reference))
  chunks = probes.chunks(inputs, models, detect, tokenizer, tuple(sorted(config.data.buckets)), config.seed)
  start = time.time()
  for k, chunk in enumerate(chunks):
    if not parts.done(k, len(chunk.rows)):
      parts.write(k, probes.table(chunk))
      log.info(
        "detect: chunk %d/%d (%d examples), %.0fs elapsed", k + 1, len(chunks), len(chunk.rows), time.time() - start
      )
  if not writer:
    return
  detection, summary = finish(parts.read([len(chunk.rows) for chunk in chunks]), detect)
  metrics = MetricWriter(layout.tensorboard("detect"))
  for protocol in detect.protocols:
    s = summary[protocol]
    metrics.scalars(
      0,
      {
        f"detect/{protocol}/unlearned_rate": s["unlearned_rate"],
        **{f"detect/{protocol}/unlearned_rate_by_dataset/{k}": v for k, v in s["unlearned_rate_by_dataset"].items()},
      },
    )
    if s["kappa_between_runs"] is not None:
      metrics.scalars(0, {f"detect/{protocol}/kappa_between_runs": s["kappa_between_runs"]})
    metrics.histogram(0, f"detect/{protocol}/pass_at_n", detection[col.of(protocol, col.PASS_AT_N)].to_numpy())
    log.info(
      "detect, %s protocol: %d of %d examples unlearned (%.1f%%); kappa between runs %s",
      protocol,
      s["unlearned"],
      summary["examples"],
      100 * s["unlearned_rate"],
      s["kappa_between_runs"],
    )
  if "kappa_between_protocols" in summary:
    metrics.scalars(0, {"detect/kappa_between_protocols": summary["kappa_between_protocols"]})
  metrics.close()
  fileio.write_parquet_atomic(detection, layout.detection)
  fileio.write_json_atomic(layout.detection_summary, summary)
