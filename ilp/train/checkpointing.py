"""Train-state checkpoints with orbax's CheckpointManager: state + JSON metadata per step.

The metadata records the data-stream fingerprint, so a run resumed after its data or batching
changed fails loudly instead of silently training on a different stream.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any

import jax
import orbax.checkpoint as ocp

from ilp.typed import check


@dataclasses.dataclass(frozen=True)
class CheckpointConfig:
  """When train-state checkpoints are written (config sections `sft.checkpoint`, `pretrain.checkpoint`);
  phase and epoch ends and the last step are always saved."""
  every_steps: int = 200
  max_to_keep: int = 2
  async_save: bool = True
  phase_models: bool = False   # also export the model at the end of every phase but the last (`<stage>/phase<k>/`)

  def __post_init__(self):
    check(self.every_steps >= 1, "every_steps", f"must be >= 1, got {self.every_steps}")
    check(self.max_to_keep >= 1, "max_to_keep", f"must be >= 1, got {self.max_to_keep}")


class TrainCheckpointer:
  def __init__(self, directory: str, max_to_keep: int, async_save: bool):
    self.directory = os.path.abspath(directory)
    options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, enable_async_checkpointing=async_save,
                                           create=True)
    self._manager = ocp.CheckpointManager(self.directory, options=options)

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def save(self, step: int, state: Any, meta: dict[str, Any]) -> None:
    self._manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                     meta=ocp.args.JsonSave(meta)), force=True)

  def restore(self, step: int, target: Any) -> tuple[Any, dict[str, Any]]:
    """Restores onto `target` (arrays or ShapeDtypeStructs carrying the wanted shardings)."""
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), target)
    restored = self._manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract),
                                                                   meta=ocp.args.JsonRestore()))
    return restored["state"], restored["meta"]

  def wait(self) -> None:
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.close()
