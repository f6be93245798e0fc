"""One Flax NNX decoder for the Llama, Qwen2 and OLMo2 families.

Weights keep heads as their own axis (q kernel [embed, heads, head_dim], o kernel
[heads, head_dim, embed]) so tensor parallelism shards whole heads; every parameter carries
logical axis names (see `ilp.parallel`). Parameters live in `param_dtype`, the computation runs
in `dtype`, normalisation, softmax and logits in float32. With `scan_layers` the decoder layers
are one DecoderLayer whose weights are stacked on a leading `layers` axis, run by one scan: XLA
compiles the layer once instead of once per layer, so compile time no longer grows with depth.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from ilp import parallel
from ilp.model import rope
from ilp.model.config import ModelConfig
from ilp.model.kv_cache import KVCache

_MASK_VALUE = float(jnp.finfo(jnp.float32).min)
# A scanned model's stacked weights get a leading `layers` logical axis (NNX's vmap adds it on creation).
_LAYERS_METADATA = {nnx.PARTITION_NAME: "layers", parallel.AXES_KEY: "layers"}
_REMAT_POLICIES = {
  "full": jax.checkpoint_policies.nothing_saveable,
  "dots_saveable": jax.checkpoint_policies.dots_saveable,
}


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


def _dense(x: jax.Array, kernel: jax.Array, in_dims: int = 1, out_dtype=None) -> jax.Array:
  """`x`'s trailing `in_dims` axes contracted with `kernel`'s leading ones, as one 2-D matmul.

  Flattening the batch and length axes first means the weight gradient contracts one axis, not
  two: with [batch, length, ...] operands XLA:CPU's dot decomposition adds physical transposes of
  the activations in the backward pass (measured: the SwiGLU block's forward + backward 1.45x
  slower, d 512, batch 16 x 256).
  """
  lead, contract, out = x.shape[: x.ndim - in_dims], kernel.shape[:in_dims], kernel.shape[in_dims:]
  flat = jnp.matmul(
    x.reshape(-1, math.prod(contract)),
    kernel.reshape(math.prod(contract), -1).astype(x.dtype),
    preferred_element_type=out_dtype,
  )
  return flat.reshape(*lead, *out)


def _write_cache(
  cache: tuple[jax.Array, jax.Array], k: jax.Array, v: jax.Array, index: jax.Array, layer: jax.Array | None
) -> tuple[jax.Array, jax.Array, tuple[jax.Array, jax.Array]]:
  """Writes new keys and values at slot `index` of a cache; returns the layer's keys and values to
  attend over and the updated cache.

  `cache` is one layer's (keys, values), or with `layer` every layer's, stacked (a scanned model,
  which carries the whole cache through its scan): the new slots are written in place at slice
  `layer`, so a decode step copies one layer's cache at a time, not the whole cache.
  """
  keys, values = cache
  if layer is None:
    keys = jax.lax.dynamic_update_slice(keys, k.astype(keys.dtype), (0, 0, 0, index))
    values = jax.lax.dynamic_update_slice(values, v.astype(values.dtype), (0, 0, index, 0))
    return keys, values, (keys, values)
  keys = jax.lax.dynamic_update_slice(keys, k[None].astype(keys.dtype), (layer, 0, 0, 0, index))
  values = jax.lax.dynamic_update_slice(values, v[None].astype(values.dtype), (layer, 0, 0, index, 0))
  return (
    jax.lax.dynamic_index_in_dim(keys, layer, keepdims=False),
    jax.lax.dynamic_index_in_dim(values, layer, keepdims=False),
    (keys, values),
  )


class Attention(nnx.Module):
  """Grouped-query attention with optional biases, q/k norms and a KV cache."""

  def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
    e, h, kv, d, param_dtype = (
      cfg.hidden_size,
      cfg.num_heads,
      cfg.num_kv_heads,
      cfg.head_dim,
      jnp.dtype(cfg.param_dtype),
    )
    self.cfg = cfg
    self.q = _param(rngs, (e, h, d), ("embed", "heads", "head_dim"), param_dtype, "normal")
    self.k = _param(rngs, (e, kv, d), ("embed", "kv_heads", "head_dim"), param_dtype, "normal")
    self.v = _param(rngs, (e, kv, d), ("embed", "kv_heads", "head_dim"), param_dtype, "normal")
    self.o = _param(rngs, (h, d, e), ("heads", "head_dim", "embed"), param_dtype, "normal")
    if cfg.qkv_bias:
      self.q_bias = _param(rngs, (h, d), ("heads", "head_dim"), param_dtype, "zeros")
      self.k_bias = _param(rngs, (kv, d), ("kv_heads", "head_dim"), param_dtype, "zeros")
      self.v_bias = _param(rngs, (kv, d), ("kv_heads", "head_dim"), param_dtype, "zeros")
    if cfg.o_bias:
      self.o_bias = _param(rngs, (e,), ("norm",), param_dtype, "zeros")
    if cfg.qk_norm:
      self.q_norm = RMSNorm((h, d), ("heads", "head_dim"), cfg.rms_norm_eps, param_dtype, rngs)
      self.k_norm = RMSNorm((kv, d), ("kv_heads", "head_dim"), cfg.rms_norm_eps, param_dtype, rngs)

  def _project(self, x: jax.Array, name: str) -> jax.Array:
    dt = jnp.dtype(self.cfg.dtype)
    out = _dense(x, getattr(self, name)[...].astype(dt))
    if self.cfg.qkv_bias:
      out = out + getattr(self, f"{name}_bias")[...].astype(dt)
    return out

  def __call__(
    self,
    x: jax.Array,
    cos: jax.Array,
    sin: jax.Array,
    mask: jax.Array,
    cache: tuple[jax.Array, jax.Array] | None,
    index: jax.Array | None,
    layer: jax.Array | None,
  ) -> tuple[jax.Array, tuple[jax.Array, jax.Array] | None]:
    """Output and updated cache; `cache`, `index` and `layer` are `_write_cache`'s."""
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
      k, v, cache = _write_cache(cache, k, v, index, layer)
    b, t = q.shape[:2]
    group = cfg.num_heads // cfg.num_kv_heads
    q = q.reshape(b, t, cfg.num_kv_heads, group, cfg.head_dim)
    scores = jnp.einsum("btkgd,bkds->bkgts", q, k.astype(q.dtype)).astype(jnp.float32)
    scores = scores * (cfg.head_dim**-0.5)
    scores = jnp.where(mask[:, None, None, :, :], scores, _MASK_VALUE)
    probs = jax.nn.softmax(scores, axis=-1).astype(jnp.dtype(cfg.dtype))
    out = jnp.einsum("bkgts,bksd->btkgd", probs, v.astype(probs.dtype))
    out = out.reshape(b, t, cfg.num_heads, cfg.head_dim)
    out = parallel.constrain(out, ("batch", "length", "heads", "head_dim"))
    out = _dense(out, self.o[...].astype(jnp.dtype(cfg.dtype)), in_dims=2)
    if cfg.o_bias:
      out = out + self.o_bias[...].astype(jnp.dtype(cfg.dtype))
    return out, cache


class MLP(nnx.Module):
  """SwiGLU feed-forward block."""

  def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
    e, m, param_dtype = cfg.hidden_size, cfg.intermediate_size, jnp.dtype(cfg.param_dtype)
    self.dtype = jnp.dtype(cfg.dtype)
    self.gate = _param(rngs, (e, m), ("embed", "mlp"), param_dtype, "normal")
    self.up = _param(rngs, (e, m), ("embed", "mlp"), param_dtype, "normal")
    self.down = _param(rngs, (m, e), ("mlp", "embed"), param_dtype, "normal")

  def __call__(self, x: jax.Array) -> jax.Array:
    gate = _dense(x, self.gate[...].astype(self.dtype))
    up = _dense(x, self.up[...].astype(self.dtype))
    hidden = parallel.constrain(jax.nn.silu(gate) * up, ("batch", "length", "mlp"))
    return _dense(hidden, self.down[...].astype(self.dtype))


class DecoderLayer(nnx.Module):
  """Pre-norm residual block (Llama, Qwen2) or post-sublayer-norm block (OLMo2)."""

  def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
    norm = lambda: RMSNorm((cfg.hidden_size,), ("norm",), cfg.rms_norm_eps, jnp.dtype(cfg.param_dtype), rngs)
    self.post_norm = cfg.post_norm
    self.attn = Attention(cfg, rngs)
    self.mlp = MLP(cfg, rngs)
    # Pre-norm families normalise sublayer inputs; OLMo2 normalises sublayer outputs.
    self.attn_norm = norm()
    self.mlp_norm = norm()

  def __call__(self, x, cos, sin, mask, cache, index, layer=None):
    if self.post_norm:
      attn_out, cache = self.attn(x, cos, sin, mask, cache, index, layer)
      x = x + self.attn_norm(attn_out)
      x = x + self.mlp_norm(self.mlp(x))
    else:
      attn_out, cache = self.attn(self.attn_norm(x), cos, sin, mask, cache, index, layer)
      x = x + attn_out
      x = x + self.mlp(self.mlp_norm(x))
    return parallel.constrain(x, ("batch", "length", "act_embed")), cache


def _layer_fn(graphdef: nnx.GraphDef, remat: str, prevent_cse: bool) -> Callable:
  """`fn(state, *args)` = the layer `(graphdef, state)` applied to args, as a pure function, whose
  activations the backward pass recomputes under `remat` (ModelConfig.REMATS) instead of keeping.

  Pure JAX (split state in, merge inside) rather than NNX's lifted transforms: the forward also runs
  inside plain JAX loops (the sampler's while_loop, gradient accumulation's scan), where lifted
  transforms refuse modules built from an outer trace's arrays.
  """

  def fn(state: nnx.State, *args):
    return nnx.merge(graphdef, state)(*args)

  if remat == "none":
    return fn
  return jax.checkpoint(fn, policy=_REMAT_POLICIES[remat], prevent_cse=prevent_cse)


def _stacked_layers(cfg: ModelConfig, rngs: nnx.Rngs) -> DecoderLayer:
  """All layers as one DecoderLayer with weights stacked on a leading `layers` axis, each layer
  drawn from its own split of the random streams."""

  @nnx.split_rngs(splits=cfg.num_layers)
  @nnx.vmap(in_axes=(0,), out_axes=0, transform_metadata=_LAYERS_METADATA)
  def create(rngs: nnx.Rngs) -> DecoderLayer:
    return DecoderLayer(cfg, rngs)

  return create(rngs)


# A KVCache's (keys, values): per-layer tuples (unrolled) or arrays stacked on the layers axis (scanned).
LayerCaches = tuple[tuple[jax.Array, ...] | jax.Array, tuple[jax.Array, ...] | jax.Array]


class Decoder(nnx.Module):
  """Token embedding, decoder layers, final norm and (tied or untied) output head."""

  def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
    self.cfg = cfg
    param_dtype = jnp.dtype(cfg.param_dtype)
    self.embed = _param(rngs, (cfg.vocab_size, cfg.hidden_size), ("vocab", "embed"), param_dtype, "normal")
    if cfg.scan_layers:
      self.layers = _stacked_layers(cfg, rngs)
    else:
      self.layers = nnx.List([DecoderLayer(cfg, rngs) for _ in range(cfg.num_layers)])
    self.final_norm = RMSNorm((cfg.hidden_size,), ("norm",), cfg.rms_norm_eps, param_dtype, rngs)
    if not cfg.tie_embeddings:
      self.lm_head = _param(rngs, (cfg.hidden_size, cfg.vocab_size), ("embed", "vocab"), param_dtype, "normal")
    self.inv_freq = tuple(rope.inverse_frequencies(cfg.rope, cfg.head_dim).tolist())

  def __call__(
    self,
    tokens: jax.Array,
    positions: jax.Array | None = None,
    mask: jax.Array | None = None,
    cache: KVCache | None = None,
    last_only: bool = False,
  ) -> tuple[jax.Array, KVCache | None]:
    """Logits [batch, length, vocab] (float32) and the updated cache.

    mask [batch, length] marks real tokens (False = padding, left or right). Positions default
    to the count of real tokens before each one (also across the cache), which is what HF's
    generate uses for left-padded prompts. `last_only` computes the logits of the last position
    alone ([batch, 1, vocab]): a sampler's prefill needs no others, and the head is its largest matmul.
    """
    x, cache = self.hidden_states(tokens, positions, mask, cache)
    return self.head(x[:, -1:] if last_only else x), cache

  def head(self, x: jax.Array, block: int = 0) -> jax.Array:
    """Logits [batch, length, vocab] (float32) of final hidden states `x`.

    `block` > 0 computes them in vocabulary column blocks of about that width, one matmul each:
    XLA:CPU's Eigen GEMMs run a wide product ([4096, 512] x [512, 8192]) at ~65 GFLOP/s and
    1024-wide ones at ~105, forward and in the weight gradient (its YNNPACK dots prefer the
    whole product). The values are the same either way.
    """
    head = (self.embed[...].T if self.cfg.tie_embeddings else self.lm_head[...]).astype(jnp.dtype(self.cfg.dtype))
    vocab = head.shape[1]
    if block <= 0 or vocab <= block:
      logits = _dense(x, head, out_dtype=jnp.float32)
    else:
      width = -(-vocab // -(-vocab // block))  # near-equal blocks of at most `block` columns
      logits = jnp.concatenate(
        [_dense(x, head[:, i : i + width], out_dtype=jnp.float32) for i in range(0, vocab, width)], axis=-1
      )
    return parallel.constrain(logits, ("batch", "length", "vocab"))

  def hidden_states(
    self,
    tokens: jax.Array,
    positions: jax.Array | None = None,
    mask: jax.Array | None = None,
    cache: KVCache | None = None,
  ) -> tuple[jax.Array, KVCache | None]:
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
    table = parallel.constrain(self.embed[...].astype(jnp.dtype(cfg.dtype)), (None, None))
    x = jnp.take(table, tokens, axis=0)
    x = parallel.constrain(x, ("batch", "length", "act_embed"))
    run = self._scanned if cfg.scan_layers else self._unrolled
    x, layer_cache = run(x, cos, sin, attn_mask, None if cache is None else (cache.keys, cache.values), index)
    x = self.final_norm(x)
    if cache is not None:
      cache = KVCache(keys=layer_cache[0], values=layer_cache[1], valid=key_valid, index=index + t)
    return x, cache

  def _unrolled(
    self,
    x: jax.Array,
    cos: jax.Array,
    sin: jax.Array,
    mask: jax.Array,
    cache: LayerCaches | None,
    index: jax.Array | None,
  ) -> tuple[jax.Array, LayerCaches | None]:
    """The layers one after another, each traced (and compiled) on its own."""
    keys, values = [], []
    for i, layer in enumerate(self.layers):
      graphdef, state = nnx.split(layer)
      fn = _layer_fn(graphdef, self.cfg.remat, prevent_cse=True)
      x, layer_cache = fn(state, x, cos, sin, mask, None if cache is None else (cache[0][i], cache[1][i]), index)
      if cache is not None:
        keys.append(layer_cache[0])
        values.append(layer_cache[1])
    return x, None if cache is None else (tuple(keys), tuple(values))

  def _scanned(
    self,
    x: jax.Array,
    cos: jax.Array,
    sin: jax.Array,
    mask: jax.Array,
    cache: LayerCaches | None,
    index: jax.Array | None,
  ) -> tuple[jax.Array, LayerCaches | None]:
    """One scan over the stacked layers: one layer traced and compiled.

    The stacked cache rides in the scan's carry, each layer writing its slice in place: scanned
    as input and output instead, it would be copied whole at every decode step (measured: sampling
    at half the speed).
    """
    graphdef, stacked = nnx.split(self.layers)
    fn = _layer_fn(graphdef, self.cfg.remat, prevent_cse=False)  # the scan already keeps recomputation apart
    if cache is None:
      return jax.lax.scan(lambda x, state: fn(state, x, cos, sin, mask, None, index), x, stacked)

    def step(carry: tuple[jax.Array, LayerCaches], layer: tuple[nnx.State, jax.Array]):
      x, cache = carry
      state, i = layer
      return fn(state, x, cos, sin, mask, cache, index, i), None

    (x, cache), _ = jax.lax.scan(step, (x, cache), (stacked, jnp.arange(self.cfg.num_layers)))
    return x, cache
