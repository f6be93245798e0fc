"""The config sections about the hardware a run uses rather than the experiment it runs: the
device mesh (`mesh`), JAX's multi-process runtime (`distributed`), and the knobs that tune a run
for its machine (`machine`).

JAX-free, so a config is built and checked without starting JAX (`ilp.config`); `ilp.parallel`
builds the mesh and starts the runtime from these sections, `ilp.train.loop` reads the knobs.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Sequence

from ilp.typed import check

MESH_AXES = ("data", "fsdp", "tensor")

# Logical name -> mesh axis (or tuple of axes, or None = replicated). First match wins.
DEFAULT_RULES: tuple[tuple[str, Any], ...] = (
  ("batch", ("data", "fsdp")),
  ("embed", "fsdp"),
  ("vocab", "tensor"),
  ("heads", "tensor"),
  ("kv_heads", "tensor"),
  ("mlp", "tensor"),
  ("head_dim", None),
  ("length", None),
  ("cache_length", None),
  ("act_embed", None),
  ("norm", None),
  ("layers", None),
)


class MeshError(ValueError):
  """The configured mesh does not fit the available devices."""


@dataclasses.dataclass(frozen=True)
class MeshConfig:
  """The device mesh (config section `mesh`): `shape` over MESH_AXES, one entry may be -1 (the
  remaining devices); `rules` map logical axis names to mesh axes."""

  shape: tuple[int, int, int] = (1, -1, 1)  # devices along (data, fsdp, tensor); one -1: the remaining devices
  rules: tuple = DEFAULT_RULES  # (logical axis, mesh axis or axes or None) pairs, the first match wins

  def __post_init__(self):
    try:
      _check_shape(self.shape)
    except MeshError as e:
      check(False, "shape", str(e))
    names = [r[0] if isinstance(r, tuple) and len(r) == 2 else None for r in self.rules]
    check(all(isinstance(n, str) for n in names), "rules", "every rule is a (logical name, mesh axes) pair")

  def check_devices(self, num_devices: int) -> None:
    """Raises ConfigError('shape') unless the mesh fits `num_devices`. Not part of `__post_init__`:
    counting devices starts JAX's backend, after which the multi-process runtime can no longer
    start, and config files (with their defaults) are built before `launch.py` starts it."""
    try:
      resolve_mesh_shape(self.shape, num_devices)
    except MeshError as e:
      check(False, "shape", str(e))


@dataclasses.dataclass(frozen=True)
class DistributedConfig:
  """JAX's multi-process runtime (config section `distributed`); unset fields are auto-detected.

  The timeouts bound how long a job outlives a failure: a process that stops sending heartbeats
  (killed, or its host gone) for `heartbeat_timeout_seconds` makes every other process exit with
  JAX's "another task died" error, and a process that ends while others still run waits at most
  `shutdown_timeout_seconds` for them. JAX's defaults (100 s, 300 s) suit clusters; a quick local
  check may lower them.
  """

  enabled: bool = False  # start the runtime (launch.py, before the pipeline)
  coordinator_address: str | None = None  # host:port of process 0's coordination service (None: detected)
  num_processes: int | None = None  # processes in the job (None: detected)
  process_id: int | None = None  # this process's index, 0 being the coordinator (None: detected)
  initialization_timeout_seconds: int = 300  # how long processes wait for each other at start
  heartbeat_timeout_seconds: int = 100  # how long without a process's heartbeats before the others exit
  shutdown_timeout_seconds: int = 300  # how long a finished process waits at exit for the others

  def __post_init__(self):
    for name in ("initialization_timeout_seconds", "heartbeat_timeout_seconds", "shutdown_timeout_seconds"):
      check(getattr(self, name) >= 1, name, f"must be >= 1, got {getattr(self, name)}")
    check(
      self.num_processes is None or self.num_processes >= 1, "num_processes", f"must be >= 1, got {self.num_processes}"
    )
    check(
      self.process_id is None or 0 <= self.process_id < (self.num_processes or self.process_id + 1),
      "process_id",
      f"must lie in [0, num_processes={self.num_processes}), got {self.process_id}",
    )


@dataclasses.dataclass(frozen=True)
class MachineConfig:
  """Knobs that tune a run for the machine it runs on, not the experiment (config section
  `machine`). No stage's provenance records them, so a resumed run may change them."""

  ynnpack_dots: bool = False  # XLA:CPU's YNNPACK dots in the training step (off: Eigen dots, ~1.2x faster on CPUs)
  peak_flops: float = 0.0  # peak FLOP/s of all devices for the MFU (0: data sheet of known devices, else timed)
  # XLA's persistent compilation cache ({workdir}: the run's work directory; empty: off): stages,
  # arms and re-runs that compile a program compiled before read it instead (one sub-directory
  # per process of a multi-process run)
  compilation_cache: str = ""

  def __post_init__(self):
    check(self.peak_flops >= 0, "peak_flops", f"must be >= 0, got {self.peak_flops}")


def _check_shape(shape: Sequence[int]) -> tuple[int, ...]:
  """The shape's own rules (whatever the devices): one entry per mesh axis, at most one -1."""
  shape = tuple(int(s) for s in shape)
  if len(shape) != len(MESH_AXES):
    raise MeshError(f"mesh shape {shape} must have {len(MESH_AXES)} entries {MESH_AXES}")
  if shape.count(-1) > 1:
    raise MeshError(f"mesh shape {shape}: at most one axis may be -1")
  if any(s == 0 or s < -1 for s in shape):
    raise MeshError(f"mesh shape {shape}: entries must be positive or -1")
  return shape


def resolve_mesh_shape(shape: Sequence[int], num_devices: int) -> tuple[int, ...]:
  """Replaces a single -1 by the number of devices left over."""
  shape = _check_shape(shape)
  known = math.prod(s for s in shape if s != -1)
  if num_devices % known:
    raise MeshError(f"mesh shape {shape} does not divide the {num_devices} available devices")
  shape = tuple(num_devices // known if s == -1 else s for s in shape)
  if math.prod(shape) != num_devices:
    raise MeshError(f"mesh shape {shape} uses {math.prod(shape)} devices, but {num_devices} are available")
  return shape
