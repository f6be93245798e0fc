"""Device mesh, logical-axis rules and sharding of parameters and activations.

Every parameter and key activation carries *logical* axis names (`batch`, `embed`, `heads`, ...);
one rule list (from the config) maps them to the physical mesh axes `(data, fsdp, tensor)`, as in
T5X's partitioning and MaxText's `logical_axis_rules`. Changing the parallelism of a run is then a
config change, never a model change. The config sections and the default rules are in `ilp.machine`.
"""

from __future__ import annotations

import contextlib
import contextvars
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
from ilp.machine import DEFAULT_RULES, MESH_AXES, DistributedConfig, resolve_mesh_shape

log = logging.getLogger(__name__)

# Metadata key under which parameters carry their logical axes. Kept apart from Flax's own
# `out_sharding` so that Flax's eager sharding never sees unresolved logical names.
AXES_KEY = "axes"

_RULES: contextvars.ContextVar[tuple | None] = contextvars.ContextVar("ilp_rules", default=None)


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


def logical_to_spec(
  axes: Sequence[str | None], shape: Sequence[int], mesh: Mesh, rules: Sequence[tuple[str, Any]]
) -> PartitionSpec:
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


def batch_sharding(mesh: Mesh, shape: Sequence[int], rules: Sequence[tuple[str, Any]] = DEFAULT_RULES) -> NamedSharding:
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
  tmp = os.path.join(os.path.dirname(final), f"{fileio.TMP_PREFIX}{os.path.basename(final)}-shared")
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


def use_compilation_cache(directory: str) -> None:
  """Turns on XLA's persistent compilation cache in `directory` (every program, however small or
  quick to compile: the world's are both). Each process of a multi-process run gets its own
  sub-directory: processes writing one cache concurrently were seen to deadlock (tests/conftest.py)."""
  if jax.process_count() > 1:
    directory = os.path.join(directory, f"process{jax.process_index()}")
  jax.config.update("jax_compilation_cache_dir", directory)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


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
  jax.distributed.initialize(
    coordinator_address=distributed.coordinator_address,
    num_processes=distributed.num_processes,
    process_id=distributed.process_id,
    initialization_timeout=distributed.initialization_timeout_seconds,
    heartbeat_timeout_seconds=distributed.heartbeat_timeout_seconds,
    shutdown_timeout_seconds=distributed.shutdown_timeout_seconds,
  )
  log.info(
    "JAX distributed: process %d of %d, %d local / %d global devices",
    jax.process_index(),
    jax.process_count(),
    jax.local_device_count(),
    jax.device_count(),
  )
