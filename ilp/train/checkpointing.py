"""Train-state checkpoints with orbax's CheckpointManager: state + JSON metadata per step.

The metadata records the data-stream fingerprint, so a run resumed after its data or batching
changed fails loudly instead of silently training on a different stream. Every step is sealed
with a checksum manifest once orbax has finalised it (`ilp.checksums`); a resume takes the newest
step that matches its manifest, restores and holds finite values, and moves any newer, bad one
to `<checkpoints>-corrupt/` with a warning naming it, as orbax's own `latest_step` would hand it
back (and a save of that step number again would collide with it).
"""

from __future__ import annotations

import logging
import os
import shutil
from typing import Any

import jax
import orbax.checkpoint as ocp

from ilp import checksums, fileio, parallel
from ilp.model.checkpoint import CorruptModelError, check_finite, unrestorable, verify

log = logging.getLogger(__name__)


class TrainCheckpointer:
  def __init__(self, directory: str, max_to_keep: int, async_save: bool):
    self.directory = os.path.abspath(directory)
    options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, enable_async_checkpointing=async_save, create=True)
    self._manager = ocp.CheckpointManager(self.directory, options=options)

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
