"""Runs the configured stages in order; each reads and writes the work directory.

A stage writes its outputs atomically, so "all outputs exist" means "finished": re-running a
pipeline skips finished stages and redoes only what was interrupted or never run. The input
files of every stage still to run are validated first, so bad data fails before anything is
written to the work directory.
"""
from __future__ import annotations

import copy
import dataclasses
import logging
import os
import time
from typing import Callable

import jax
import ml_collections

from ilp import fileio
from ilp.stages import detect, diagnose, init_model, pretrain, report, sft, world

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Stage:
  name: str
  outputs: Callable[[str], list[str]]  # workdir -> paths that exist once the stage is done
  run: Callable[[ml_collections.ConfigDict, str], None]
  # Checks of the stage's own inputs (not earlier stages' outputs), run before anything is written;
  # a check shared by several pending stages (e.g. reading the SFT records) runs once.
  checks: tuple[Callable[[ml_collections.ConfigDict], None], ...] = ()


STAGES = {stage.name: stage for stage in (
    Stage("world", world.outputs, world.run, (world.validate,)),
    Stage("init_model", init_model.outputs, init_model.run),
    Stage("pretrain", pretrain.outputs, pretrain.run, (pretrain.validate,)),
    Stage("sft", sft.outputs, sft.run, (sft.validate,)),
    Stage("detect", detect.outputs, detect.run, (sft.validate, detect.validate)),
    Stage("diagnose", diagnose.outputs, diagnose.run, (sft.validate, diagnose.validate)),
    Stage("report", report.outputs, report.run),
)}


class PipelineError(ValueError):
  """The config asks for a stage that does not exist."""


WORKDIR = "{workdir}"


def with_workdir(config: ml_collections.ConfigDict, workdir: str) -> ml_collections.ConfigDict:
  """A copy whose data paths have `{workdir}` replaced: inputs an earlier stage writes."""
  resolved = copy.deepcopy(config)
  with resolved.unlocked():
    for field in ("sft", "corpora"):
      resolved.data[field] = tuple({**dict(src), "path": str(src["path"]).replace(WORKDIR, workdir)}
                                   for src in config.data[field])
    resolved.data.tokenizer = config.data.tokenizer.replace(WORKDIR, workdir)
  return resolved


def without_workdir_inputs(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """A copy without the sources under `{workdir}`: they do not exist before their stage runs."""
  filtered = copy.deepcopy(config)
  with filtered.unlocked():
    for field in ("sft", "corpora"):
      filtered.data[field] = tuple(src for src in config.data[field] if WORKDIR not in str(src["path"]))
  return filtered


def run(config: ml_collections.ConfigDict, workdir: str) -> None:
  workdir = os.path.abspath(workdir)
  unknown = [name for name in config.stages if name not in STAGES]
  if unknown:
    raise PipelineError(f"config field 'stages': unknown stage(s) {', '.join(unknown)} "
                        f"(available: {', '.join(STAGES)})")
  pending = [STAGES[name] for name in config.stages
             if not all(os.path.exists(p) for p in STAGES[name].outputs(workdir))]
  checked = without_workdir_inputs(config)
  for check in dict.fromkeys(check for stage in pending for check in stage.checks):
    check(checked)
  config = with_workdir(config, workdir)
  if jax.process_index() == 0:
    fileio.write_json_atomic(os.path.join(workdir, "config.json"), config.to_dict())
  for name in config.stages:
    stage = STAGES[name]
    if all(os.path.exists(p) for p in stage.outputs(workdir)):
      log.info("stage %s: outputs exist, skipped", name)
      continue
    log.info("stage %s: running", name)
    start = time.time()
    stage.run(config, workdir)
    log.info("stage %s: done in %.1fs", name, time.time() - start)
