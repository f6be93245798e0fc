"""Runs the configured stages in order; each reads and writes the work directory (`Layout`).

A stage writes its outputs atomically, and once it finishes the provenance seals them (size and
SHA-256 of every file a later stage reads, `ilp.provenance`): re-running a pipeline skips the
stages whose seals verify and redoes only what was interrupted, never run, or damaged since (a
damaged stage resumes when only what a resume rewrites is hurt, else starts over, and the warning
names the file). Once a stage runs, every later stage runs again from scratch (its inputs changed);
the arms stage runs every time (each arm's pipeline resumes itself) and makes what follows run
again only when its index of the arms changed. Before anything is written, the config is built and
checked (`ilp.config.load`), the work directory is locked (`ilp.lock`), its provenance is checked
(a stage recorded with other settings or data files is refused unless forced; outputs the record
does not vouch for are refused unless adopted) and the input files of every stage still to run are
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
from ilp.online import warning
from ilp.stages import capability, compare, detect, diagnose, init_model, pretrain, report, sft, world
from ilp.train import dynamics
from ilp.typed import ConfigError
from ilp.world import files as world_files

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
  # What the seal covers, when not just the outputs (what later stages read).
  sealed_paths: Callable[[Layout], list[str]] | None = None
  # Outputs a resumed run writes anew in full: damage confined to them resumes the stage instead of
  # redoing it from scratch (a damaged final model is exported again from the last checkpoint).
  rewrites: Callable[[Layout], list[str]] = lambda layout: []
  # Damage in the partial work a resume would build on (`[]`: none): such a stage is redone instead.
  resume_problems: Callable[[Layout], list[str]] = lambda layout: []
  # Runs every time, its own work resuming and verifying itself (the arms: each arm's pipeline);
  # what follows is rebuilt only when its sealed outputs changed.
  always: bool = False

  def sealed(self, layout: Layout) -> list[str]:
    return (self.sealed_paths or self.outputs)(layout)


def _sft_sealed(layout: Layout) -> list[str]:
  """Also the dynamics log and the phase models, which diagnosis and the evaluations read."""
  return [*sft.outputs(layout), layout.dynamics("sft"), *layout.phase_models("sft")]


def _world_sealed(layout: Layout) -> list[str]:
  """Every world file but the ground truth, which no stage may open (the evaluations read it)."""
  return [os.path.join(layout.world, f) for f in sorted(os.listdir(layout.world)) if f != world_files.GROUND_TRUTH]


STAGES = {
  stage.name: stage
  for stage in (
    Stage(
      "world", world.outputs, world.run, work=lambda layout: [layout.world], host_only=True, sealed_paths=_world_sealed
    ),
    Stage(
      "init_model",
      init_model.outputs,
      init_model.run,
      work=lambda layout: [layout.model_init, layout.model_init_summary],
    ),
    Stage(
      "pretrain",
      pretrain.outputs,
      pretrain.run,
      (mixture.check,),
      work=lambda layout: [layout.training("pretrain")],
      rewrites=pretrain.outputs,
    ),
    Stage(
      "sft",
      sft.outputs,
      sft.run,
      (examples.check, examples.check_sources, warning.check),
      work=lambda layout: [layout.training("sft"), layout.examples],
      sealed_paths=_sft_sealed,
      rewrites=sft.outputs,
      resume_problems=lambda layout: dynamics.problems(layout.dynamics("sft")),
    ),
    Stage(
      "detect",
      detect.outputs,
      detect.run,
      (examples.check,),
      work=lambda layout: [layout.detect],
      rewrites=detect.outputs,
    ),
    Stage("diagnose", diagnose.outputs, diagnose.run, work=lambda layout: [layout.diagnosis], host_only=True),
    Stage(
      "capability",
      capability.outputs,
      capability.run,
      (examples.check_sources,),
      work=lambda layout: [layout.capability],
    ),
    # Each arm's pipeline skips its finished stages and verifies its own seals; the index names
    # every arm run with its provenance, so the comparison is redone exactly when an arm changed.
    Stage(
      "arms",
      lambda layout: [layout.arms_index],
      lambda config, layout: arms.run(config, layout, run),
      (examples.check_sources,),
      work=lambda layout: [layout.path("arms")],
      rewrites=lambda layout: [layout.arms_index],
      always=True,
    ),
    Stage("compare", compare.outputs, compare.run, work=lambda layout: [layout.compare], host_only=True),
    Stage("report", report.outputs, report.run, work=lambda layout: [layout.report], host_only=True),
  )
}


def run(
  config: ml_collections.ConfigDict | Config, workdir: str, force: Sequence[str] = (), adopt: bool = False
) -> None:
  """Checks `config`, the work directory's provenance and the pending stages' inputs, then runs
  every pending stage into `workdir`; the stages in `force`, and every later one, run from scratch.
  `adopt`: outputs the provenance does not vouch for are accepted as made with `config`'s settings."""
  config = config_lib.load(config)
  unknown = [name for name in config.stages if name not in STAGES]
  if unknown:
    raise ConfigError("stages", f"unknown stage(s) {', '.join(unknown)} (available: {', '.join(STAGES)})")
  unknown = [name for name in force if name not in config.stages]
  if unknown:
    raise ConfigError("force_rerun", f"stage(s) {', '.join(unknown)} not in stages {config.stages}")
  layout = Layout(workdir)
  with _locked(layout.root):
    _run(config, layout, set(force), adopt)


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


def _state(stage: Stage, layout: Layout, record: provenance.Record) -> str:
  """What the work directory holds of `stage`: "done" (sealed and intact), "resume", "redo"
  (damaged beyond resuming), or "unknown" (outputs or work the provenance does not vouch for)."""
  seal, entry = record.seal(stage.name), record.stages.get(stage.name)
  if seal is None:
    present = [p for p in stage.work(layout) + stage.outputs(layout) if os.path.exists(p)]
    if present and (entry is None or entry.get("finished")):  # no record, or one from before seals
      return "unknown"
    bad = stage.resume_problems(layout) if present else []
    if bad:
      log.warning("stage %s: %s; the stage is redone from scratch", stage.name, bad[0])
    return "redo" if bad else "resume"
  missing = [p for p in stage.outputs(layout) if not os.path.exists(p)]
  bad = [f"{p}: missing" for p in missing] or checksums.differences(layout.root, seal, stage.sealed(layout))
  if not bad:
    return "done"
  rewritten = [p.rstrip("/") for p in stage.rewrites(layout)]
  inside = lambda problem: any(problem == p or problem.startswith((p + ":", p + "/")) for p in rewritten)
  resumable = all(inside(problem) for problem in bad) and not stage.resume_problems(layout)
  log.warning(
    "stage %s: output %s (%d problem(s)); the stage %s",
    stage.name,
    bad[0],
    len(bad),
    "resumes and writes it again" if resumable else "is redone from scratch",
  )
  return "resume" if resumable else "redo"


def _plan(
  config: Config, layout: Layout, record: provenance.Record, force: set[str], adopt: bool
) -> list[tuple[Stage, str]]:
  """("skip" | "run" | "redo" | "adopt", per stage). A stage runs when unfinished (resuming its
  partial work) and is redone from scratch when forced, damaged beyond resuming, or when an earlier
  stage runs (its inputs change; an `always` stage changes them only if its sealed outputs change,
  known once it has run). A finished or started stage recorded with other settings is refused,
  naming every changed field; so are outputs no record vouches for, unless `adopt`."""
  plan, stale, problems, unknown = [], False, [], []
  for name in config.stages:
    stage = STAGES[name]
    stale = stale or name in force
    before = record.stages.get(name)
    now, defaults = provenance.settings(config, name), provenance.settings(Config(), name)
    changed = provenance.changes(before["settings"], now, defaults) if before else []
    if changed and not stale:
      problems.append((name, changed))
    state = "redo" if stale else _state(stage, layout, record)
    if state == "unknown":
      unknown.append(name)
      complete = all(os.path.exists(p) for p in stage.outputs(layout))
      state = "adopt" if complete and not stage.always else "resume"
    action = {"done": "run" if stage.always else "skip", "resume": "run"}.get(state, state)
    plan.append((stage, action))
    stale = stale or (action in ("run", "redo") and not stage.always)
  if unknown and not adopt:
    why = "is missing" if not record.found else "has no sealed record of them"
    raise fileio.ResumeError(
      f"{layout.root} holds outputs of {', '.join(unknown)} whose settings are unknown ({layout.provenance} "
      f"{why}). Re-run with --force_rerun={unknown[0]} to redo them (with every later stage), or with "
      "--adopt to accept them as made with this config's settings."
    )
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


def _run(config: Config, layout: Layout, force: set[str], adopt: bool) -> None:
  writer = jax.process_index() == 0
  record = provenance.Record(layout.provenance, writer)
  plan = _plan(config, layout, record, force, adopt)
  pending = [stage for stage, action in plan if action not in ("skip", "adopt")]
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
  changed = False  # an `always` stage's sealed outputs changed: what follows is rebuilt
  for stage, action in plan:
    values = provenance.settings(unresolved, stage.name)
    if action == "adopt":
      log.warning("stage %s: outputs adopted as made with this config's settings", stage.name)
      record.mark(stage.name, values, True, _seal(stage, layout, writer))
      continue
    if action == "skip" and changed:
      action = "redo"
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
    before = record.seal(stage.name)
    record.mark(stage.name, values, finished=False)
    log.info("stage %s: running%s", stage.name, f" from scratch (removed {', '.join(cleared)})" if cleared else "")
    start = time.time()
    if writer or not stage.host_only:
      stage.run(config, layout)
    parallel.sync(f"{stage.name} done")  # the others wait for process 0's files
    seal = _seal(stage, layout, writer or stage.always)
    record.mark(stage.name, values, True, seal)
    changed = changed or (stage.always and seal != before)
    log.info("stage %s: done in %.1fs", stage.name, time.time() - start)


def _seal(stage: Stage, layout: Layout, compute: bool) -> dict | None:
  """The manifest of `stage`'s outputs (None where this process does not compute it: only process 0
  writes the record, and every process knows an `always` stage's, which decides what follows)."""
  return checksums.manifest(layout.root, stage.sealed(layout)) if compute else None
