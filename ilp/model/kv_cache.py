"""Functional KV cache shared by prefill and decode.

All rows of a batch write to the same slots (`index` is one scalar): the sampler left-pads
prompts, so rows stay aligned in time and one `dynamic_update_slice` serves the whole batch.
`valid` marks slots holding real (non-padding) tokens; attention and positions are derived from
it. Writes past `max_length` are clamped by XLA, so callers must bound `index + length` (the
sampler reports such rows as truncated). A scanned model (`scan_layers`) keeps its layers' caches
stacked on a leading layers axis, the layout its scan reads and writes.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from ilp.model.config import ModelConfig


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class KVCache:
  # Per layer (or stacked [layers, ...] for a scanned model): keys [batch, kv_heads, head_dim,
  # max_length], values [batch, kv_heads, max_length, head_dim].
  keys: tuple[jax.Array, ...] | jax.Array
  values: tuple[jax.Array, ...] | jax.Array
  valid: jax.Array  # [batch, max_length] bool: slot holds a real token
  index: jax.Array  # [] int32: next slot to write

  @classmethod
  def init(cls, cfg: ModelConfig, batch: int, max_length: int) -> "KVCache":
    def per_layer(shape: tuple[int, ...]) -> tuple[jax.Array, ...] | jax.Array:
      if cfg.scan_layers:
        return jnp.zeros((cfg.num_layers, *shape), jnp.dtype(cfg.dtype))
      return tuple(jnp.zeros(shape, jnp.dtype(cfg.dtype)) for _ in range(cfg.num_layers))

    return cls(
      keys=per_layer((batch, cfg.num_kv_heads, cfg.head_dim, max_length)),
      values=per_layer((batch, cfg.num_kv_heads, max_length, cfg.head_dim)),
      valid=jnp.zeros((batch, max_length), bool),
      index=jnp.zeros((), jnp.int32),
    )

  @property
  def max_length(self) -> int:
    return self.valid.shape[1]

  def tokens_seen(self) -> jax.Array:
    """Real tokens already cached per row [batch]: the position of the next real token."""
    return jnp.sum(self.valid, axis=1, dtype=jnp.int32)

  def tile(self, n: int) -> "KVCache":
    """Repeats every row n times (row b -> rows b*n .. b*n+n-1), to decode n samples per prompt."""
    batch_axis = 0 if isinstance(self.keys, tuple) else 1  # stacked caches lead with the layers axis
    layers = lambda x: jnp.repeat(x, n, axis=batch_axis)
    return KVCache(
      keys=jax.tree.map(layers, self.keys),
      values=jax.tree.map(layers, self.values),
      valid=jnp.repeat(self.valid, n, axis=0),
      index=self.index,
    )
