"""Model-only orbax checkpoints: parameters plus the ModelConfig that built them.

A directory holds `params/` (orbax, restored straight onto the target shardings of any mesh),
`model_config.json` and, when there is one, the model's `tokenizer/`: a checkpoint is
self-describing, re-shardable on load, and later stages need nothing else to use it.
"""

from __future__ import annotations

import json
import os
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp
from flax import nnx
from jax.sharding import Mesh

from ilp import checksums, parallel
from ilp.model import build, hf
from ilp.model.config import CONFIG_FILE, ModelConfig, read_model_config

PARAMS_DIR = "params"
TOKENIZER_DIR = "tokenizer"


def save_params(directory: str, cfg: ModelConfig, state: nnx.State, tokenizer: Any = None) -> None:
  """Writes the checkpoint atomically: a reader sees all of it or nothing. Every process calls it:
  each saves its own shards into one shared directory, and process 0 alone writes the other files
  (two writers of one file could leave it, or the manifest sealing it, half-written)."""
  writer = jax.process_index() == 0
  with parallel.shared_directory(directory) as tmp:
    if tokenizer is not None and writer:
      tokenizer.save_pretrained(os.path.join(tmp, TOKENIZER_DIR))
    with ocp.StandardCheckpointer() as checkpointer:
      checkpointer.save(os.path.join(tmp, PARAMS_DIR), state)
      checkpointer.wait_until_finished()
    if writer:
      with open(os.path.join(tmp, CONFIG_FILE), "w") as f:
        json.dump(cfg.to_dict(), f, indent=2)
      checksums.seal(tmp)


def load_params(
  directory: str, mesh: Mesh, rules: Sequence[tuple[str, Any]] = parallel.DEFAULT_RULES, **overrides: Any
) -> tuple[ModelConfig, nnx.GraphDef, nnx.State]:
  """Restores parameters directly into their shardings on `mesh` (any mesh, not only the saving one).

  `overrides` change config fields that do not alter shapes, e.g. `dtype="bfloat16"`.
  """
  directory = os.path.abspath(directory)
  verify(directory)
  cfg = read_model_config(directory, **overrides)
  graphdef, abstract = build.abstract_model(cfg)
  shardings = parallel.state_shardings(abstract, mesh, rules)
  target = jax.tree.map(
    lambda v, s: jax.ShapeDtypeStruct(v.shape, jnp.dtype(cfg.param_dtype), sharding=s), abstract, shardings
  )
  with ocp.StandardCheckpointer() as checkpointer:
    try:
      state = checkpointer.restore(os.path.join(directory, PARAMS_DIR), target)
    except Exception as e:  # orbax/tensorstore name no file: say which checkpoint failed
      raise unrestorable(directory, e) from e
  check_finite(state, directory)
  return cfg, graphdef, state


class CorruptModelError(ValueError):
  """A model's files differ from their checksums, cannot be restored, or hold NaN or infinite values."""


def unrestorable(directory: str, error: Exception) -> CorruptModelError:
  """An orbax or tensorstore restore error, which names no file, as the checkpoint that failed."""
  first = str(error).splitlines()[0] if str(error) else ""
  return CorruptModelError(f"{directory}: cannot be restored ({type(error).__name__}: {first})")


def verify(directory: str) -> None:
  """Compares a sealed checkpoint with its manifest (unsealed ones, e.g. written elsewhere, pass)."""
  if checksums.sealed(directory):
    bad = checksums.problems(directory)
    if bad:
      raise CorruptModelError(
        f"{directory}: the checkpoint is corrupt: {bad[0]}{f' (and {len(bad) - 1} more)' if len(bad) > 1 else ''}"
      )


@jax.jit
def _all_finite(leaves: list[jax.Array]) -> list[jax.Array]:
  return [jax.numpy.isfinite(x).all() for x in leaves]


def check_finite(params: Any, source: str) -> None:
  """Refuses parameters with a NaN or infinite value (a corrupt or diverged checkpoint), naming
  the source and the first bad parameter; one jitted program, reductions on device."""
  paths = [jax.tree_util.keystr(path) for path, _ in jax.tree_util.tree_flatten_with_path(params)[0]]
  finite = jax.device_get(_all_finite(jax.tree.leaves(params)))
  bad = [path for path, ok in zip(paths, finite) if not ok]
  if bad:
    raise CorruptModelError(
      f"{source}: parameters hold NaN or infinite values ({bad[0]}"
      f"{f' and {len(bad) - 1} more' if len(bad) > 1 else ''}); the checkpoint is corrupt"
    )


def tokenizer_dir(directory: str) -> str:
  return os.path.join(directory, TOKENIZER_DIR)


def load_tokenizer(directory: str, override: str = ""):
  """The tokenizer directory `override` when set (`data.tokenizer`), else the checkpoint's own."""
  return hf.load_tokenizer(override or tokenizer_dir(directory))


def load_any(
  directory: str, mesh: Mesh, rules: Sequence[tuple[str, Any]] = parallel.DEFAULT_RULES
) -> tuple[ModelConfig, nnx.GraphDef, nnx.State]:
  """An ilp checkpoint (`model_config.json` + orbax params) or, failing that, a local HF directory
  (`config.json` + safetensors), e.g. an instruct model used as a reference."""
  if os.path.exists(os.path.join(directory, CONFIG_FILE)):
    return load_params(directory, mesh, rules)
  cfg, graphdef, params = hf.load_hf(directory, mesh, rules)
  check_finite(params, directory)
  return cfg, graphdef, params
