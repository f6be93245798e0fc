"""Stage `sft`: supervised fine-tuning over every phase, with the per-example dynamics log.

Writes `examples.parquet` (the SFT examples as tokenised for training, without the dev split
that resampling and early stopping watch; read by later stages) and
`sft/`: `checkpoints/` (resumable train state), `dynamics/` (per-example Parquet log),
`tensorboard/`, `final/` (params + tokenizer) and `summary.json`.
"""

from __future__ import annotations

import logging
import os

import jax

from ilp.config import Config
from ilp.data import batches as batching
from ilp.data import examples, plan
from ilp.layout import Layout
from ilp.model import checkpoint
from ilp.online import control
from ilp.train import checkpointing, convergence, loop
from ilp.train import controls as controls_lib

log = logging.getLogger(__name__)
NAME = "sft"


def outputs(layout: Layout) -> list[str]:
  return [layout.examples, layout.final(NAME), layout.summary(NAME)]


def run(config: Config, layout: Layout) -> None:
  section = config.sft
  init = layout.model(section.init_from)
  tokenizer = checkpoint.load_tokenizer(init, config.data.tokenizer)
  frame, report, dev_frame = examples.build_with_dev(config.data, tokenizer)
  if jax.process_index() == 0:
    examples.write(frame, layout.examples)
  buckets = tuple(sorted(config.data.buckets))
  replayed = examples.build(config.data, tokenizer, config.data.replay)[0] if section.replay.every_steps else None
  replay = None if replayed is None else (len(replayed), batching.bucket_length(int(replayed["length"].max()), buckets))
  stream, plan_info = plan.sft_stream(frame, section, buckets, config.seed, replay=replay)
  dev_examples = 0 if dev_frame is None else len(dev_frame)
  log.info("sft: %d examples (%s, %d dev), %d steps", len(frame), report, dev_examples, len(stream.batches))
  pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
  arrays = lambda table: lambda rows, length, t=examples.tokenized(table): batching.assemble(t, rows, length, pad)
  lengths, datasets = frame["length"].to_numpy(), frame["dataset"].to_numpy(object)
  # a global order interleaves every phase into one (its rounds are the epochs)
  phases = plan.sft_phases(frame, section)
  phase_names = ("global",) if section.order == "global" else tuple(p.name for p in phases)
  monitor = convergence.Monitor(section.convergence)
  controls, until_converged = [], None
  if section.convergence.max_epochs:  # first: the other controls replay their decisions onto its replanned stream

    def replan(decisions: dict[int, dict]) -> None:
      fresh, _ = plan.sft_stream(
        frame, section, buckets, config.seed, {p: d["epochs"] for p, d in decisions.items()}, replay
      )
      stream.batches[:], stream.eval_points[:] = fresh.batches, fresh.eval_points

    until_converged = convergence.Control(monitor, [p.epochs for p in phases], replan)
    controls.append(until_converged)
  if section.resample.every_steps:
    controls.append(controls_lib.Resampler(section.resample, datasets, lengths, config.seed))
  if section.progressive.enabled:
    controls.append(controls_lib.EarlyStop(section.progressive, plan.last_phase_epoch_ends(stream)))
  watched = None
  if controls and dev_frame is not None and len(dev_frame):
    watched = loop.DevData(arrays(dev_frame), dev_frame["length"].to_numpy(), dev_frame["dataset"].to_numpy(object))
  online, act = control.build(frame, config, layout.dynamics(NAME), stream, lengths)
  controls += [act] if act else []
  data = loop.TrainData(
    stream=stream,
    batch_size=section.batch_size,
    arrays=arrays(frame),
    lengths=lengths,
    buckets=buckets,
    table=frame[list(examples.ID_COLUMNS)],
    dev=watched,
    controls=tuple(controls),
    monitor=monitor,
    convergence=until_converged,
    phase_names=phase_names,
    replay_arrays=None if replayed is None else arrays(replayed),
    online=online,
  )
  paths = layout.training_paths(NAME)
  if section.extend.checkpoint and not os.path.isdir(paths.checkpoints):  # a fresh start: from that run's plateau
    checkpointing.extend(section.extend, section.convergence.cooldown_epochs, len(phases), paths)
  loop.train(
    section,
    config.mesh,
    config.machine,
    paths,
    init,
    data,
    tokenizer,
    notes={"tokenization": report, "plan": plan_info, "dev_examples": 0 if watched is None else len(dev_frame)},
  )
