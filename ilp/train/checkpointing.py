"""Train-state checkpoints with orbax's CheckpointManager: state + JSON metadata per step.

The metadata records the data-stream fingerprint, so a run resumed after its data or batching
changed fails loudly instead of silently training on a different stream. Every step is sealed
with a checksum manifest once orbax has finalised it (`ilp.checksums`); a resume takes the newest
step that matches its manifest, restores and holds finite values, and moves any newer, bad one
to `<checkpoints>-corrupt/` with a warning naming it, as orbax's own `latest_step` would hand it
back (and a save of that step number again would collide with it).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from typing import Any, Callable

import jax
import orbax.checkpoint as ocp

from ilp import checksums, fileio, parallel
from ilp.layout import TrainingPaths
from ilp.model.checkpoint import CorruptModelError, check_finite, unrestorable, verify
from ilp.train import convergence, dynamics
from ilp.train.convergence import ExtendConfig

log = logging.getLogger(__name__)


META = os.path.join("meta", "metadata")  # a step's JSON metadata, inside its directory (orbax's JsonSave)


class _KeptSteps(ocp.checkpoint_managers.PreservationPolicy):
  """Steps preserved whatever their age (`TrainCheckpointer.keep`); the set grows during a run."""

  def __init__(self):
    self.steps: set[int] = set()

  def should_preserve(self, checkpoints, *, context):
    del context
    return [c.step in self.steps for c in checkpoints]


class TrainCheckpointer:
  def __init__(self, directory: str, max_to_keep: int, async_save: bool):
    self.directory = os.path.abspath(directory)
    self._kept = _KeptSteps()
    policy = ocp.checkpoint_managers.AnyPreservationPolicy([ocp.checkpoint_managers.LatestN(n=max_to_keep), self._kept])
    options = ocp.CheckpointManagerOptions(
      preservation_policy=policy, enable_async_checkpointing=async_save, create=True
    )
    self._manager = ocp.CheckpointManager(self.directory, options=options)

  def keep(self, step: int) -> None:
    """Keeps `step` beyond `max_to_keep` (the last phase's plateau: runs extend from it)."""
    self._kept.steps.add(step)

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def _step_dir(self, step: int) -> str:
    return str(self._manager.directory / str(step))

  def _seal(self) -> None:
    """Seals every finalised step that has no manifest yet (process 0; the files are shared)."""
    if jax.process_index() == 0:
      for step in self._manager.all_steps():
        if not checksums.sealed(self._step_dir(step)):
          checksums.seal(self._step_dir(step))
    parallel.sync("checkpoint sealed")

  def save(self, step: int, state: Any, meta: dict[str, Any]) -> None:
    self.wait()  # the previous asynchronous save is final (orbax would wait for it anyway), then sealed
    self._manager.save(
      step, args=ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)), force=True
    )

  def _restore(self, step: int, target: Any) -> tuple[Any, dict[str, Any]]:
    directory = self._step_dir(step)
    if not checksums.sealed(directory):
      log.warning("checkpoint %s has no checksums (the run stopped before sealing it): restored unverified", directory)
    verify(directory)
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), target)
    try:
      restored = self._manager.restore(
        step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore())
      )
    except Exception as e:  # orbax/tensorstore errors name no file
      raise unrestorable(directory, e) from e
    check_finite(restored["state"], directory)
    return restored["state"], restored["meta"]

  def restore_latest(self, target: Any) -> tuple[int, Any, dict[str, Any]] | None:
    """The newest good step restored onto `target` (arrays or ShapeDtypeStructs carrying the wanted
    shardings) as (step, state, meta), or None when there is no step. Bad newer steps are set aside."""
    steps = sorted(self._manager.all_steps(), reverse=True)
    failures = []
    for step in steps:
      try:
        state, meta = self._restore(step, target)
      except CorruptModelError as e:
        log.warning("checkpoint step %d is corrupt and set aside: %s", step, e)
        failures.append(f"step {step}: {e}")
        continue
      self._set_aside([s for s in steps if s > step])
      if failures:
        log.warning("resuming from step %d, the newest good checkpoint in %s", step, self.directory)
      return step, state, meta
    if failures:
      raise fileio.ResumeError(
        f"{self.directory}: no checkpoint can be restored:\n  "
        + "\n  ".join(failures)
        + f"\nDelete {self.directory} to train from the start."
      )
    return None

  def _set_aside(self, steps: list[int]) -> None:
    if steps and jax.process_index() == 0:
      aside = self.directory + "-corrupt"
      os.makedirs(aside, exist_ok=True)
      for step in steps:
        target = os.path.join(aside, str(step))
        if os.path.exists(target):
          shutil.rmtree(target)
        os.replace(self._step_dir(step), target)
    parallel.sync("checkpoint set aside")
    if steps:
      self._manager.reload()

  def wait(self) -> None:
    self._manager.wait_until_finished()
    self._seal()

  def close(self) -> None:
    self._manager.close()


def start_from(source: str, directory: str, edit: Callable[[dict[str, Any]], dict[str, Any]]) -> int:
  """Creates `directory` (a run's checkpoints, absent) holding a copy of the verified checkpoint
  step directory `source` (another run's) with its metadata rewritten by `edit` and sealed anew, so
  that the run resumes from it; returns its step. The directory appears whole (a kill midway leaves
  none, and the next start copies again). Process 0 writes; the files are shared."""
  verify(source)
  step = int(os.path.basename(os.path.normpath(source)))
  if jax.process_index() == 0:
    partial = directory + ".tmp-start"
    shutil.rmtree(partial, ignore_errors=True)
    target = os.path.join(partial, str(step))
    shutil.copytree(source, target)
    with open(os.path.join(target, META)) as f:
      meta = edit(json.load(f))
    fileio.write_json_atomic(os.path.join(target, META), meta)
    os.remove(os.path.join(target, checksums.MANIFEST))
    checksums.seal(target)
    os.replace(partial, directory)
  parallel.sync("checkpoint copied")
  return step


def extend(settings: ExtendConfig, cooldown: int, last_phase: int, paths: TrainingPaths) -> None:
  """Starts a fresh run (`paths`) from a converged run's plateau checkpoint, its last phase decided
  anew (`sft.extend`, `convergence.extended`), with that run's dynamics log up to there. The log is
  copied first: the checkpoint directory, which appears whole, marks the start as done."""
  source = os.path.abspath(settings.checkpoint)
  step = int(os.path.basename(os.path.normpath(source)))
  if jax.process_index() == 0:
    dynamics.copy_until(os.path.join(os.path.dirname(os.path.dirname(source)), "dynamics"), paths.dynamics, step)
  try:
    edit = lambda meta: convergence.extended(meta, last_phase, settings.epochs, cooldown, source)
    start_from(source, paths.checkpoints, edit)
  except ValueError as e:
    raise fileio.ResumeError(f"sft.extend: {e}") from None
  log.info("sft: extends %s (step %d): its last phase now %d epochs", source, step, settings.epochs)
