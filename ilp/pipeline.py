"""Runs the configured stages in order; each reads and writes the work directory (`Layout`).

A stage writes its outputs atomically, so "all outputs exist" means "finished": re-running a
pipeline skips finished stages and redoes only what was interrupted or never run; once a stage
runs, every later stage runs again from scratch (its inputs changed; the arms and compare stages,
which have no outputs, run every time, and so does what follows them). Before
anything is written, the config is built and checked (`ilp.config.load`), the work directory is
locked (`ilp.lock`), its provenance is checked (`ilp.provenance`: a stage recorded with other
settings is refused unless forced) and the input files of every stage still to run are
validated, so a bad field, bad data or a changed setting fails with nothing written.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import shutil
import time
from typing import Callable, Iterator, Sequence

import jax
import ml_collections

from ilp import checksums, fileio, lock, parallel, provenance
from ilp import config as config_lib
from ilp.config import Config
from ilp.data import examples, mixture
from ilp.data.config import SOURCES, WORKDIR, DataConfig
from ilp.data.records import DataError
from ilp.interventions import arms
from ilp.layout import Layout
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
  # What a re-run from scratch removes first: the outputs and any partial work it would resume.
  work: Callable[[Layout], list[str]] = lambda layout: []
  # No device work (files and tables only): process 0 alone runs it, the others wait for its files.
  host_only: bool = False


STAGES = {
  stage.name: stage
  for stage in (
    Stage("world", world.outputs, world.run, work=lambda layout: [layout.world], host_only=True),
    Stage(
      "init_model",
      init_model.outputs,
      init_model.run,
      work=lambda layout: [layout.model_init, layout.model_init_summary],
    ),
    Stage(
      "pretrain", pretrain.outputs, pretrain.run, (mixture.check,), work=lambda layout: [layout.training("pretrain")]
    ),
    Stage(
      "sft",
      sft.outputs,
      sft.run,
      (examples.check, examples.check_sources),
      work=lambda layout: [layout.training("sft"), layout.examples],
    ),
    Stage("detect", detect.outputs, detect.run, (examples.check,), work=lambda layout: [layout.detect]),
    Stage("diagnose", diagnose.outputs, diagnose.run, work=lambda layout: [layout.diagnosis], host_only=True),
    Stage(
      "capability",
      capability.outputs,
      capability.run,
      (examples.check_sources,),
      work=lambda layout: [layout.capability],
    ),
    # The arms and their comparison always run: each arm's pipeline skips its finished stages,
    # and the comparison is recomputed from the tables (seconds), so arms added later count.
    Stage(
      "arms",
      lambda layout: [],
      lambda config, layout: arms.run(config, layout, run),
      (examples.check_sources,),
      work=lambda layout: [layout.path("arms")],
    ),
    Stage("compare", lambda layout: [], compare.run, work=lambda layout: [layout.compare], host_only=True),
    Stage("report", report.outputs, report.run, work=lambda layout: [layout.report], host_only=True),
  )
}


def _finished(stage: Stage, layout: Layout) -> bool:
  """All outputs exist, and every sealed one (a model checkpoint) still matches its checksums: a
  corrupt model makes its stage run again, which resumes from the stage's last good checkpoint."""
  outputs = stage.outputs(layout)
  if not (outputs and all(os.path.exists(p) for p in outputs)):
    return False
  for path in outputs:
    bad = checksums.problems(path) if os.path.isdir(path) and checksums.sealed(path) else []
    if bad:
      log.warning("stage %s: output %s is corrupt (%s); the stage runs again", stage.name, path, bad[0])
      return False
  return True


def run(config: ml_collections.ConfigDict | Config, workdir: str, force: Sequence[str] = ()) -> None:
  """Checks `config`, the work directory's provenance and the pending stages' inputs, then runs
  every pending stage into `workdir`; the stages in `force`, and every later one, run from scratch."""
  config = config_lib.load(config)
  unknown = [name for name in config.stages if name not in STAGES]
  if unknown:
    raise ConfigError("stages", f"unknown stage(s) {', '.join(unknown)} (available: {', '.join(STAGES)})")
  unknown = [name for name in force if name not in config.stages]
  if unknown:
    raise ConfigError("force_rerun", f"stage(s) {', '.join(unknown)} not in stages {config.stages}")
  layout = Layout(workdir)
  with _locked(layout.root):
    _run(config, layout, set(force))


@contextlib.contextmanager
def _locked(root: str) -> Iterator[None]:
  """Process 0 holds the work-directory lock (and removes what killed runs left half-written);
  every process learns whether it got it, so a refused multi-process launch stops everywhere at
  once instead of leaving the others waiting."""
  refused = None
  with contextlib.ExitStack() as stack:
    if jax.process_index() == 0:
      try:
        stack.enter_context(lock.workdir_lock(root))
        orphans = fileio.remove_orphans(root)  # a killed job's temporaries: no write is in progress
        if orphans:
          log.warning("removed %d temporary file(s) a killed run left, e.g. %s", len(orphans), orphans[0])
      except lock.LockError as e:
        refused = e
    if not parallel.agree(refused is None):
      raise refused or lock.LockError(f"{root}: process 0 could not lock the work directory (see its error)")
    yield


def _plan(config: Config, layout: Layout, record: provenance.Record, force: set[str]) -> list[tuple[Stage, str]]:
  """("skip" | "run" | "redo", per stage). A stage runs when unfinished; it is redone from scratch
  when forced or when an earlier stage with outputs runs (its inputs change). A finished or
  started stage recorded with other settings is refused, naming every changed field."""
  plan, stale, problems = [], False, []
  for name in config.stages:
    stage = STAGES[name]
    stale = stale or name in force
    before = record.stages.get(name)
    now, defaults = provenance.settings(config, name), provenance.settings(Config(), name)
    changed = provenance.changes(before["settings"], now, defaults) if before else []
    if changed and not stale:
      problems.append((name, changed))
    if stale:
      plan.append((stage, "redo"))
    elif _finished(stage, layout):
      plan.append((stage, "skip"))
    else:
      plan.append((stage, "run"))
      # Later outputs were built on this stage's old ones. A stage without outputs (arms, compare)
      # runs every time and may change what follows (an arm added, a killed re-run resumed), so
      # what follows it is rebuilt every time: the report never lags the comparison.
      stale = True
  if problems:
    listed = "".join(f"\n  {name}: {change}" for name, changed in problems for change in changed)
    raise fileio.ResumeError(
      f"{layout.root} holds outputs made with other settings:{listed}\nUse a new work "
      f"directory, or re-run with --force_rerun={problems[0][0]} (it re-runs that stage "
      "and every later one from scratch)."
    )
  return plan


def _check_workdir_sources(config: Config, layout: Layout, pending: list[Stage]) -> None:
  """A `{workdir}` source (or tokenizer) must exist already or lie in what a pending stage writes
  (the world stage's files); otherwise the run would stop only at the stage that reads it, after
  the earlier stages' work."""
  produced = [path.rstrip("/") for stage in pending for path in stage.outputs(layout)]
  written = lambda path: any(path == p or path.startswith(p + "/") for p in produced)
  resolved = config.data.resolved(layout.root)
  fields = [("data.tokenizer", config.data.tokenizer, resolved.tokenizer)]
  for name in SOURCES:
    fields += [
      (f"data.{name}[{k}].path", str(raw.get("path", "")), str(source.get("path", "")))
      for k, (raw, source) in enumerate(zip(getattr(config.data, name), getattr(resolved, name)))
    ]
  for field, raw, path in fields:
    if WORKDIR in raw and not os.path.exists(path) and not written(path):
      raise DataError(
        f"{field}: {path} does not exist, and no stage of this run writes it "
        f"(stages to run: {', '.join(stage.name for stage in pending) or 'none'})"
      )


def _run(config: Config, layout: Layout, force: set[str]) -> None:
  writer = jax.process_index() == 0
  record = provenance.Record(layout.provenance, writer)
  plan = _plan(config, layout, record, force)
  pending = [stage for stage, action in plan if action != "skip"]
  config_lib.check_paths(config)
  _check_workdir_sources(config, layout, pending)
  existing = config.data.existing()
  for check in dict.fromkeys(check for stage in pending for check in stage.checks):
    check(config, existing)
  unresolved = config
  config = dataclasses.replace(
    config,
    data=config.data.resolved(layout.root),
    machine=dataclasses.replace(
      config.machine, compilation_cache=config.machine.compilation_cache.replace(WORKDIR, layout.root)
    ),
  )
  if config.machine.compilation_cache:  # arms inherit the resolved directory: they share the baseline's cache
    parallel.use_compilation_cache(config.machine.compilation_cache)
  if jax.process_index() == 0:
    fileio.write_json_atomic(layout.config, dataclasses.asdict(config))
  for stage, action in plan:
    if action == "skip":
      log.info("stage %s: outputs exist, skipped", stage.name)
      continue
    cleared = [p for p in stage.work(layout) if os.path.exists(p)] if action == "redo" else []
    if writer:
      for path in cleared:
        if os.path.isdir(path):
          shutil.rmtree(path)
        else:
          os.remove(path)
    parallel.sync(f"clear {stage.name}")
    values = provenance.settings(unresolved, stage.name)
    record.mark(stage.name, values, finished=False)
    log.info("stage %s: running%s", stage.name, f" from scratch (removed {', '.join(cleared)})" if cleared else "")
    start = time.time()
    if writer or not stage.host_only:
      stage.run(config, layout)
    record.mark(stage.name, values, finished=True)
    log.info("stage %s: done in %.1fs", stage.name, time.time() - start)
