"""Creating decoder parameters directly sharded, and the pure forward function.

The model is kept as NNX (graphdef, state): the state is an ordinary pytree that jit, orbax and
the HF converter handle, and `forward` merges it back into a module inside traced code.
"""

from __future__ import annotations

from typing import Any, Iterator, Sequence

import jax
import numpy as np
from flax import nnx
from jax.sharding import Mesh

from ilp import parallel
from ilp.model.config import ModelConfig
from ilp.model.kv_cache import KVCache
from ilp.model.transformer import Decoder

Path = tuple[Any, ...]


def resolve_compute_dtype(name: str) -> str:
  """ "auto" is bfloat16 on accelerators (their matmul units run it at full rate) and float32 on
  CPUs (where bf16 matmuls are emulated and slower); any other name is itself."""
  if name != "auto":
    return name
  return "float32" if jax.default_backend() == "cpu" else "bfloat16"


def abstract_model(cfg: ModelConfig) -> tuple[nnx.GraphDef, nnx.State]:
  """Graph definition and shape-only state: no memory is allocated."""
  return nnx.split(nnx.eval_shape(lambda: Decoder(cfg, rngs=nnx.Rngs(0))))


def init_params(
  cfg: ModelConfig, mesh: Mesh, rules: Sequence[tuple[str, Any]] = parallel.DEFAULT_RULES, seed: int = 0
) -> tuple[nnx.GraphDef, nnx.State]:
  """Random parameters, each created on its devices with its target sharding (never gathered)."""
  graphdef, abstract = abstract_model(cfg)
  shardings = parallel.state_shardings(abstract, mesh, rules)
  create = jax.jit(lambda: nnx.split(Decoder(cfg, rngs=nnx.Rngs(seed)))[1], out_shardings=shardings)
  return graphdef, create()


def forward(
  graphdef: nnx.GraphDef,
  state: nnx.State,
  tokens: jax.Array,
  positions: jax.Array | None = None,
  mask: jax.Array | None = None,
  cache: KVCache | None = None,
  last_only: bool = False,
) -> tuple[jax.Array, KVCache | None]:
  """Logits and updated cache; pure, so callers wrap it in jax.jit with their shardings.

  Args:
    graphdef, state: the model's structure and parameters.
    tokens: [batch, length] token ids.
    positions: [batch, length] RoPE positions (default: real tokens before each one).
    mask: [batch, length] 1 for real tokens (default: all real).
    cache: a KV cache to attend over and extend (None: no cache).
    last_only: return the last position's logits only ([batch, 1, vocab]).
  """
  return nnx.merge(graphdef, state)(tokens, positions=positions, mask=mask, cache=cache, last_only=last_only)


def flat_variables(state: nnx.State) -> Iterator[tuple[Path, nnx.Variable]]:
  """(path, variable) pairs, e.g. (('layers', 0, 'attn', 'q'), Param)."""
  yield from nnx.to_flat_state(state)


def param_count(state: nnx.State) -> int:
  return sum(int(np.prod(v.shape)) for _, v in flat_variables(state))
