"""Functional KV cache shared by prefill and decode.

All rows of a batch write to the same slots (`index` is one scalar): the sampler left-pads
prompts, so rows stay aligned in time and one `dynamic_update_slice` serves the whole batch.
`valid` marks slots holding real (non-padding) tokens; attention and positions are derived from
it. Writes past `max_length` are clamped by XLA, so callers must bound `index + length` (the
sampler reports such rows as truncated).
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from ilp.model.config import ModelConfig


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class KVCache:
  keys: tuple[jax.Array, ...]    # per layer [batch, kv_heads, head_dim, max_length]
  values: tuple[jax.Array, ...]  # per layer [batch, kv_heads, max_length, head_dim]
  valid: jax.Array               # [batch, max_length] bool: slot holds a real token
  index: jax.Array               # [] int32: next slot to write

  @classmethod
  def init(cls, cfg: ModelConfig, batch: int, max_length: int) -> "KVCache":
    key_shape = (batch, cfg.num_kv_heads, cfg.head_dim, max_length)
    value_shape = (batch, cfg.num_kv_heads, max_length, cfg.head_dim)
    return cls(keys=tuple(jnp.zeros(key_shape, cfg.jnp_dtype) for _ in range(cfg.num_layers)),
               values=tuple(jnp.zeros(value_shape, cfg.jnp_dtype) for _ in range(cfg.num_layers)),
               valid=jnp.zeros((batch, max_length), bool), index=jnp.zeros((), jnp.int32))

  @property
  def max_length(self) -> int:
    return self.valid.shape[1]

  def tokens_seen(self) -> jax.Array:
    """Real tokens already cached per row [batch]: the position of the next real token."""
    return jnp.sum(self.valid, axis=1, dtype=jnp.int32)

  def tile(self, n: int) -> "KVCache":
    """Repeats every row n times (row b -> rows b*n .. b*n+n-1), to decode n samples per prompt."""
    rep = lambda x: jnp.repeat(x, n, axis=0)
    return KVCache(keys=tuple(map(rep, self.keys)), values=tuple(map(rep, self.values)),
                   valid=rep(self.valid), index=self.index)
