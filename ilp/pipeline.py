"""Runs the configured stages in order; each reads and writes the work directory (`Layout`).

A stage writes its outputs atomically, so "all outputs exist" means "finished": re-running a
pipeline skips finished stages and redoes only what was interrupted or never run. Before anything
is written, the config is built and checked (`ilp.config.load`) and the input files of every
stage still to run are validated, so a bad field or bad data fails with nothing written.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import time
from typing import Callable

import jax
import ml_collections

from ilp import config as config_lib
from ilp import fileio, lock
from ilp.config import Config
from ilp.data import examples, mixture
from ilp.data.config import DataConfig
from ilp.layout import Layout
from ilp.interventions import arms
from ilp.stages import capability, compare, detect, diagnose, init_model, pretrain, report, sft, world
from ilp.typed import ConfigError

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Stage:
  name: str
  outputs: Callable[[Layout], list[str]]  # paths that exist once the stage is done
  run: Callable[[Config, Layout], None]
  # Checks of the stage's own inputs (not earlier stages' outputs), run before anything is written
  # on (config, the data sources that exist already); a check shared by several pending stages
  # (e.g. reading the SFT records) runs once.
  checks: tuple[Callable[[Config, DataConfig], None], ...] = ()


STAGES = {stage.name: stage for stage in (
    Stage("world", world.outputs, world.run),
    Stage("init_model", init_model.outputs, init_model.run),
    Stage("pretrain", pretrain.outputs, pretrain.run, (mixture.check,)),
    Stage("sft", sft.outputs, sft.run, (examples.check, examples.check_sources)),
    Stage("detect", detect.outputs, detect.run, (examples.check,)),
    Stage("diagnose", diagnose.outputs, diagnose.run),
    Stage("capability", capability.outputs, capability.run, (examples.check_sources,)),
    # The arms and their comparison always run: each arm's pipeline skips its finished stages,
    # and the comparison is recomputed from the tables (seconds), so arms added later count.
    Stage("arms", lambda layout: [], lambda config, layout: arms.run(config, layout, run), (examples.check_sources,)),
    Stage("compare", lambda layout: [], compare.run),
    Stage("report", report.outputs, report.run),
)}


def _finished(stage: Stage, layout: Layout) -> bool:
  outputs = stage.outputs(layout)
  return bool(outputs) and all(os.path.exists(p) for p in outputs)


def run(config: ml_collections.ConfigDict | Config, workdir: str) -> None:
  """Checks `config` and the pending stages' inputs, then runs every pending stage into `workdir`."""
  config = config_lib.load(config)
  unknown = [name for name in config.stages if name not in STAGES]
  if unknown:
    raise ConfigError("stages", f"unknown stage(s) {', '.join(unknown)} (available: {', '.join(STAGES)})")
  layout = Layout(workdir)
  with lock.workdir_lock(layout.root, enabled=jax.process_index() == 0):
    _run(config, layout)


def _run(config: Config, layout: Layout) -> None:
  pending = [STAGES[name] for name in config.stages if not _finished(STAGES[name], layout)]
  existing = config.data.existing()
  for check in dict.fromkeys(check for stage in pending for check in stage.checks):
    check(config, existing)
  config = dataclasses.replace(config, data=config.data.resolved(layout.root))
  if jax.process_index() == 0:
    fileio.write_json_atomic(layout.config, dataclasses.asdict(config))
  for name in config.stages:
    stage = STAGES[name]
    if _finished(stage, layout):
      log.info("stage %s: outputs exist, skipped", name)
      continue
    log.info("stage %s: running", name)
    start = time.time()
    stage.run(config, layout)
    log.info("stage %s: done in %.1fs", name, time.time() - start)
