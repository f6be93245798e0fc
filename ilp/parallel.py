"""Device mesh, logical-axis rules and sharding of parameters and activations.

Every parameter and key activation carries *logical* axis names (`batch`, `embed`, `heads`, ...);
one rule list (from the config) maps them to the physical mesh axes `(data, fsdp, tensor)`, as in
T5X's partitioning and MaxText's `logical_axis_rules`. Changing the parallelism of a run is then a
config change, never a model change.
"""
from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import logging
import os
import shutil
from typing import Any, Iterator, Sequence

import jax
import numpy as np
from flax import nnx
from jax.experimental import multihost_utils
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

from ilp import fileio
from ilp.typed import check

log = logging.getLogger(__name__)

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

# Metadata key under which parameters carry their logical axes. Kept apart from Flax's own
# `out_sharding` so that Flax's eager sharding never sees unresolved logical names.
AXES_KEY = "axes"

_RULES: contextvars.ContextVar[tuple | None] = contextvars.ContextVar("ilp_rules", default=None)


class MeshError(ValueError):
  """The configured mesh does not fit the available devices."""


@dataclasses.dataclass(frozen=True)
class MeshConfig:
  """The device mesh (config section `mesh`): `shape` over MESH_AXES, one entry may be -1 (the
  remaining devices); `rules` map logical axis names to mesh axes."""
  shape: tuple[int, int, int] = (1, -1, 1)
  rules: tuple = DEFAULT_RULES

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
  enabled: bool = False
  coordinator_address: str | None = None
  num_processes: int | None = None
  process_id: int | None = None
  initialization_timeout_seconds: int = 300   # how long processes wait for each other at start
  heartbeat_timeout_seconds: int = 100
  shutdown_timeout_seconds: int = 300

  def __post_init__(self):
    for name in ("initialization_timeout_seconds", "heartbeat_timeout_seconds", "shutdown_timeout_seconds"):
      check(getattr(self, name) >= 1, name, f"must be >= 1, got {getattr(self, name)}")
    check(self.num_processes is None or self.num_processes >= 1, "num_processes",
          f"must be >= 1, got {self.num_processes}")
    check(self.process_id is None or 0 <= self.process_id < (self.num_processes or self.process_id + 1),
          "process_id", f"must lie in [0, num_processes={self.num_processes}), got {self.process_id}")


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
  known = int(np.prod([s for s in shape if s != -1]))
  if num_devices % known:
    raise MeshError(f"mesh shape {shape} does not divide the {num_devices} available devices")
  shape = tuple(num_devices // known if s == -1 else s for s in shape)
  if int(np.prod(shape)) != num_devices:
    raise MeshError(f"mesh shape {shape} uses {int(np.prod(shape))} devices, but {num_devices} are available")
  return shape


def make_mesh(shape: Sequence[int] = (1, -1, 1), devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A (data, fsdp, tensor) mesh with Auto axis types (so sharding constraints may be used)."""
  devices = list(jax.devices() if devices is None else devices)
  shape = resolve_mesh_shape(shape, len(devices))
  device_grid = np.asarray(devices, dtype=object).reshape(shape)
  return Mesh(device_grid, MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES))


def _rule_lookup(rules: Sequence[tuple[str, Any]], name: str | None) -> tuple[str, ...]:
  if name is None:
    return ()
  for logical, physical in rules:
    if logical == name:
      if physical is None:
        return ()
      return (physical,) if isinstance(physical, str) else tuple(physical)
  raise KeyError(f"logical axis '{name}' has no entry in the sharding rules")


def logical_to_spec(axes: Sequence[str | None], shape: Sequence[int], mesh: Mesh,
                    rules: Sequence[tuple[str, Any]]) -> PartitionSpec:
  """Resolves logical axes to a PartitionSpec valid for `shape` on `mesh`.

  A mesh axis is used at most once per array (the first dimension that asks gets it), and a
  dimension that the mesh axes do not divide evenly falls back to fewer axes, down to replicated:
  tiny test models must run on any mesh, and real models divide anyway.
  """
  if len(axes) != len(shape):
    raise ValueError(f"logical axes {tuple(axes)} do not match shape {tuple(shape)}")
  used: set[str] = set()
  spec = []
  for name, size in zip(axes, shape):
    mesh_axes = [a for a in _rule_lookup(rules, name) if a not in used and mesh.shape[a] > 1]
    while mesh_axes and size % int(np.prod([mesh.shape[a] for a in mesh_axes])):
      mesh_axes.pop()
    used.update(mesh_axes)
    spec.append(None if not mesh_axes else mesh_axes[0] if len(mesh_axes) == 1 else tuple(mesh_axes))
  return PartitionSpec(*spec)


def variable_axes(variable: nnx.Variable) -> tuple[str | None, ...]:
  axes = variable.get_metadata().get(AXES_KEY)
  if axes is None:
    raise ValueError(f"variable of shape {variable.shape} has no '{AXES_KEY}' metadata")
  return tuple(axes)


def state_shardings(abstract_state: nnx.State, mesh: Mesh, rules: Sequence[tuple[str, Any]]) -> nnx.State:
  """A NamedSharding for every variable of an (abstract) NNX state, same tree structure."""
  def one(v: nnx.Variable):
    return v.replace(NamedSharding(mesh, logical_to_spec(variable_axes(v), v.shape, mesh, rules)))
  return jax.tree.map(one, abstract_state, is_leaf=lambda x: isinstance(x, nnx.Variable))


@contextlib.contextmanager
def sharding_context(mesh: Mesh, rules: Sequence[tuple[str, Any]] = DEFAULT_RULES) -> Iterator[None]:
  """Activates `mesh` and `rules` for activation constraints traced inside the block."""
  token = _RULES.set(tuple(rules))
  try:
    with jax.set_mesh(mesh):
      yield
  finally:
    _RULES.reset(token)


def constrain(x: jax.Array, axes: Sequence[str | None]) -> jax.Array:
  """Annotates an activation with logical axes; a no-op outside `sharding_context`."""
  rules = _RULES.get()
  mesh = jax.sharding.get_abstract_mesh()
  if rules is None or mesh.empty:
    return x
  return jax.lax.with_sharding_constraint(x, logical_to_spec(axes, x.shape, mesh, rules))


def batch_sharding(mesh: Mesh, shape: Sequence[int],
                   rules: Sequence[tuple[str, Any]] = DEFAULT_RULES) -> NamedSharding:
  """Sharding for a [batch, ...] input of `shape`: batch over its mesh axes, the rest replicated."""
  axes = ("batch",) + (None,) * (len(shape) - 1)
  return NamedSharding(mesh, logical_to_spec(axes, shape, mesh, rules))


def local_rows(sharding: NamedSharding, shape: Sequence[int]) -> slice:
  """The contiguous block of global batch rows whose data this process must provide."""
  index_map = sharding.addressable_devices_indices_map(tuple(shape))
  starts = [idx[0].start or 0 for idx in index_map.values()]
  stops = [shape[0] if idx[0].stop is None else idx[0].stop for idx in index_map.values()]
  return slice(min(starts), max(stops))


def global_batch(host: dict[str, np.ndarray], sharding: NamedSharding, rows: slice) -> dict[str, jax.Array]:
  """Global arrays from full host arrays, of which this process contributes only `rows`."""
  return {k: jax.make_array_from_process_local_data(sharding, v[rows], v.shape) for k, v in host.items()}


def to_host(tree: Any) -> Any:
  """Fetches (possibly sharded) arrays to every process's host memory as numpy."""
  if jax.process_count() > 1:
    return multihost_utils.process_allgather(tree, tiled=True)
  return jax.device_get(tree)


def agree(value: bool) -> bool:
  """Process 0's `value`, on every process (e.g. whether it took the work-directory lock)."""
  if jax.process_count() > 1:
    return bool(multihost_utils.broadcast_one_to_all(np.asarray(value)))
  return value


def sync(name: str) -> None:
  """Waits for every process (a no-op in a single-process run), e.g. until process 0 wrote a file."""
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(name)


@contextlib.contextmanager
def shared_directory(final: str) -> Iterator[str]:
  """`fileio.atomic_directory` for a directory that every process writes into (an orbax checkpoint,
  whose shards each process saves itself); every process must enter it.

  All processes get one temporary path (a private one per process would leave each with only its
  own shards), which process 0 renames to `final` once every process is done. One launch holds a
  work directory (`ilp.lock`), so a fixed name is unique; one left by a killed run is replaced.
  """
  if jax.process_count() == 1:
    with fileio.atomic_directory(final) as tmp:
      yield tmp
    return
  final = os.path.abspath(final)
  tmp = os.path.join(os.path.dirname(final), f".tmp-{os.path.basename(final)}-shared")
  writer = jax.process_index() == 0
  if writer:
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
  sync(f"created {tmp}")
  try:
    yield tmp
  except BaseException:
    if writer:
      shutil.rmtree(tmp, ignore_errors=True)
    raise
  sync(f"written {tmp}")
  if writer:
    if os.path.exists(final):
      shutil.rmtree(final)
    os.replace(tmp, final)
  sync(f"renamed {final}")


def initialize_distributed(distributed: DistributedConfig) -> None:
  """Starts JAX's multi-host runtime for a job that spans several processes.

  Fields left as None are auto-detected by JAX (TPU pods, SLURM, Open MPI); a single-process
  run leaves `enabled` off and pays nothing. JAX's preemption service is turned off: it takes over
  SIGTERM to let a training loop checkpoint at an agreed step, which this loop does not poll, so
  a `kill` or a scheduler's stop would be swallowed and the run go on until SIGKILL. Without it
  SIGTERM ends a process as in a single-process run; the others stop within the heartbeat timeout
  and a re-run resumes from the last checkpoint.
  """
  if not distributed.enabled:
    return
  jax.config.update("jax_enable_preemption_service", False)
  jax.distributed.initialize(coordinator_address=distributed.coordinator_address,
                             num_processes=distributed.num_processes, process_id=distributed.process_id,
                             initialization_timeout=distributed.initialization_timeout_seconds,
                             heartbeat_timeout_seconds=distributed.heartbeat_timeout_seconds,
                             shutdown_timeout_seconds=distributed.shutdown_timeout_seconds)
  log.info("JAX distributed: process %d of %d, %d local / %d global devices", jax.process_index(),
           jax.process_count(), jax.local_device_count(), jax.device_count())
