"""One Flax NNX decoder for the Llama, Qwen2 and OLMo2 families.

Weights keep heads as their own axis (q kernel [embed, heads, head_dim], o kernel
[heads, head_dim, embed]) so tensor parallelism shards whole heads; every parameter carries
logical axis names (see `ilp.parallel`). Parameters live in `param_dtype`, the computation runs
in `dtype`, normalisation, softmax and logits in float32.
"""
from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from ilp import parallel
from ilp.model import rope
from ilp.model.config import ModelConfig
from ilp.model.kv_cache import KVCache

_MASK_VALUE = float(jnp.finfo(jnp.float32).min)


def _param(rngs: nnx.Rngs, shape: Sequence[int], axes: Sequence[str | None], dtype, init: str) -> nnx.Param:
  if init == "normal":
    value = 0.02 * jax.random.normal(rngs.params(), tuple(shape), jnp.float32)
  elif init == "ones":
    value = jnp.ones(tuple(shape), jnp.float32)
  else:
    value = jnp.zeros(tuple(shape), jnp.float32)
  return nnx.Param(value.astype(dtype), **{parallel.AXES_KEY: tuple(axes)})


class RMSNorm(nnx.Module):
  """RMS normalisation over the trailing `len(shape)` axes (two for OLMo2's q/k norms)."""

  def __init__(self, shape: Sequence[int], axes: Sequence[str | None], eps: float, dtype, rngs: nnx.Rngs):
    self.scale = _param(rngs, shape, axes, dtype, "ones")
    self.eps = eps

  def __call__(self, x: jax.Array) -> jax.Array:
    dims = tuple(range(-self.scale.ndim, 0))
    xf = x.astype(jnp.float32)
    xf = xf * jax.lax.rsqrt(jnp.mean(xf * xf, axis=dims, keepdims=True) + self.eps)
    return (xf * self.scale[...].astype(jnp.float32)).astype(x.dtype)


class Attention(nnx.Module):
  """Grouped-query attention with optional biases, q/k norms and a KV cache."""

  def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
    e, h, kv, d, pd = cfg.hidden_size, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim, cfg.jnp_param_dtype
    self.cfg = cfg
    self.q = _param(rngs, (e, h, d), ("embed", "heads", "head_dim"), pd, "normal")
    self.k = _param(rngs, (e, kv, d), ("embed", "kv_heads", "head_dim"), pd, "normal")
    self.v = _param(rngs, (e, kv, d), ("embed", "kv_heads", "head_dim"), pd, "normal")
    self.o = _param(rngs, (h, d, e), ("heads", "head_dim", "embed"), pd, "normal")
    if cfg.qkv_bias:
      self.q_bias = _param(rngs, (h, d), ("heads", "head_dim"), pd, "zeros")
      self.k_bias = _param(rngs, (kv, d), ("kv_heads", "head_dim"), pd, "zeros")
      self.v_bias = _param(rngs, (kv, d), ("kv_heads", "head_dim"), pd, "zeros")
    if cfg.o_bias:
      self.o_bias = _param(rngs, (e,), ("norm",), pd, "zeros")
    if cfg.qk_norm:
      self.q_norm = RMSNorm((h, d), ("heads", "head_dim"), cfg.rms_norm_eps, pd, rngs)
      self.k_norm = RMSNorm((kv, d), ("kv_heads", "head_dim"), cfg.rms_norm_eps, pd, rngs)

  def _project(self, x: jax.Array, name: str) -> jax.Array:
    dt = self.cfg.jnp_dtype
    out = jnp.einsum("bte,ehd->bthd", x, getattr(self, name)[...].astype(dt))
    if self.cfg.qkv_bias:
      out = out + getattr(self, f"{name}_bias")[...].astype(dt)
    return out

  def __call__(self, x: jax.Array, cos: jax.Array, sin: jax.Array, mask: jax.Array,
               cache: tuple[jax.Array, jax.Array] | None, index: jax.Array | None
               ) -> tuple[jax.Array, tuple[jax.Array, jax.Array] | None]:
    cfg = self.cfg
    q, k, v = self._project(x, "q"), self._project(x, "k"), self._project(x, "v")
    if cfg.qk_norm:
      q, k = self.q_norm(q), self.k_norm(k)
    q, k = rope.apply_rotary(q, cos, sin), rope.apply_rotary(k, cos, sin)
    # Keys as [batch, kv_heads, head_dim, length] and values as [batch, kv_heads, length, head_dim]:
    # the operand layouts of plain (untransposed) score and value matmuls, so a long cache is
    # read and updated in place each decode step instead of being copied or transposed.
    k, v = k.transpose(0, 2, 3, 1), v.transpose(0, 2, 1, 3)
    if cache is not None:
      k = jax.lax.dynamic_update_slice(cache[0], k.astype(cache[0].dtype), (0, 0, 0, index))
      v = jax.lax.dynamic_update_slice(cache[1], v.astype(cache[1].dtype), (0, 0, index, 0))
      cache = (k, v)
    b, t = q.shape[:2]
    group = cfg.num_heads // cfg.num_kv_heads
    q = q.reshape(b, t, cfg.num_kv_heads, group, cfg.head_dim)
    scores = jnp.einsum("btkgd,bkds->bkgts", q, k.astype(q.dtype)).astype(jnp.float32)
    scores = scores * (cfg.head_dim ** -0.5)
    scores = jnp.where(mask[:, None, None, :, :], scores, _MASK_VALUE)
    probs = jax.nn.softmax(scores, axis=-1).astype(cfg.jnp_dtype)
    out = jnp.einsum("bkgts,bksd->btkgd", probs, v.astype(probs.dtype))
    out = out.reshape(b, t, cfg.num_heads, cfg.head_dim)
    out = parallel.constrain(out, ("batch", "length", "heads", "head_dim"))
    out = jnp.einsum("bthd,hde->bte", out, self.o[...].astype(cfg.jnp_dtype))
    if cfg.o_bias:
      out = out + self.o_bias[...].astype(cfg.jnp_dtype)
    return out, cache


class MLP(nnx.Module):
  """SwiGLU feed-forward block."""

  def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
    e, m, pd = cfg.hidden_size, cfg.intermediate_size, cfg.jnp_param_dtype
    self.dtype = cfg.jnp_dtype
    self.gate = _param(rngs, (e, m), ("embed", "mlp"), pd, "normal")
    self.up = _param(rngs, (e, m), ("embed", "mlp"), pd, "normal")
    self.down = _param(rngs, (m, e), ("mlp", "embed"), pd, "normal")

  def __call__(self, x: jax.Array) -> jax.Array:
    gate = x @ self.gate[...].astype(self.dtype)
    up = x @ self.up[...].astype(self.dtype)
    hidden = parallel.constrain(jax.nn.silu(gate) * up, ("batch", "length", "mlp"))
    return hidden @ self.down[...].astype(self.dtype)


class DecoderLayer(nnx.Module):
  """Pre-norm residual block (Llama, Qwen2) or post-sublayer-norm block (OLMo2)."""

  def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
    norm = lambda: RMSNorm((cfg.hidden_size,), ("norm",), cfg.rms_norm_eps, cfg.jnp_param_dtype, rngs)
    self.post_norm = cfg.post_norm
    self.attn = Attention(cfg, rngs)
    self.mlp = MLP(cfg, rngs)
    # Pre-norm families normalise sublayer inputs; OLMo2 normalises sublayer outputs.
    self.attn_norm = norm()
    self.mlp_norm = norm()

  def __call__(self, x, cos, sin, mask, cache, index):
    if self.post_norm:
      attn_out, cache = self.attn(x, cos, sin, mask, cache, index)
      x = x + self.attn_norm(attn_out)
      x = x + self.mlp_norm(self.mlp(x))
    else:
      attn_out, cache = self.attn(self.attn_norm(x), cos, sin, mask, cache, index)
      x = x + attn_out
      x = x + self.mlp(self.mlp_norm(x))
    return parallel.constrain(x, ("batch", "length", "act_embed")), cache


class Decoder(nnx.Module):
  """Token embedding, decoder layers, final norm and (tied or untied) output head."""

  def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
    self.cfg = cfg
    pd = cfg.jnp_param_dtype
    self.embed = _param(rngs, (cfg.vocab_size, cfg.hidden_size), ("vocab", "embed"), pd, "normal")
    self.layers = nnx.List([DecoderLayer(cfg, rngs) for _ in range(cfg.num_layers)])
    self.final_norm = RMSNorm((cfg.hidden_size,), ("norm",), cfg.rms_norm_eps, pd, rngs)
    if not cfg.tie_embeddings:
      self.lm_head = _param(rngs, (cfg.hidden_size, cfg.vocab_size), ("embed", "vocab"), pd, "normal")
    self.inv_freq = tuple(rope.inverse_frequencies(cfg.rope, cfg.head_dim).tolist())

  def __call__(self, tokens: jax.Array, positions: jax.Array | None = None, mask: jax.Array | None = None,
               cache: KVCache | None = None) -> tuple[jax.Array, KVCache | None]:
    """Logits [batch, length, vocab] (float32) and the updated cache.

    mask [batch, length] marks real tokens (False = padding, left or right). Positions default
    to the count of real tokens before each one (also across the cache), which is what HF's
    generate uses for left-padded prompts.
    """
    x, cache = self.hidden_states(tokens, positions, mask, cache)
    head = self.embed[...].T if self.cfg.tie_embeddings else self.lm_head[...]
    logits = jnp.einsum("bte,ev->btv", x, head.astype(self.cfg.jnp_dtype), preferred_element_type=jnp.float32)
    return parallel.constrain(logits, ("batch", "length", "vocab")), cache

  def hidden_states(self, tokens: jax.Array, positions: jax.Array | None = None, mask: jax.Array | None = None,
                    cache: KVCache | None = None) -> tuple[jax.Array, KVCache | None]:
    """The final-normed hidden states [batch, length, embed] (what the head reads) and the updated
    cache; the arguments are `__call__`'s."""
    cfg = self.cfg
    b, t = tokens.shape
    mask = jnp.ones((b, t), bool) if mask is None else mask.astype(bool)
    running = jnp.cumsum(mask, axis=1, dtype=jnp.int32) - 1
    if cache is None:
      index = None
      if positions is None:
        positions = jnp.maximum(running, 0)
      key_valid = mask
      causal = jnp.arange(t)[:, None] >= jnp.arange(t)[None, :]
    else:
      index = cache.index
      if positions is None:
        positions = jnp.maximum(cache.tokens_seen()[:, None] + running, 0)
      key_valid = jax.lax.dynamic_update_slice(cache.valid, mask, (0, index))
      causal = (index + jnp.arange(t))[:, None] >= jnp.arange(cache.max_length)[None, :]
    attn_mask = causal[None, :, :] & key_valid[:, None, :]
    cos, sin = rope.rotary_tables(positions, jnp.asarray(self.inv_freq, jnp.float32))

    # All-gather the table before the lookup, as FSDP does for every weight at its use: a gather
    # with batch-sharded indices from a sharded table makes XLA fully rematerialise its output.
    table = parallel.constrain(self.embed[...].astype(cfg.jnp_dtype), (None, None))
    x = jnp.take(table, tokens, axis=0)
    x = parallel.constrain(x, ("batch", "length", "act_embed"))
    new_keys, new_values = [], []
    for i, layer in enumerate(self.layers):
      layer_cache = None if cache is None else (cache.keys[i], cache.values[i])
      x, layer_cache = layer(x, cos, sin, attn_mask, layer_cache, index)
      if cache is not None:
        new_keys.append(layer_cache[0])
        new_values.append(layer_cache[1])
    x = self.final_norm(x)
    if cache is not None:
      cache = KVCache(keys=tuple(new_keys), values=tuple(new_values), valid=key_valid, index=index + t)
    return x, cache
