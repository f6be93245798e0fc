"""Jitted batched sampling with a KV cache: N samples per prompt for the price of one prefill.

Each left-padded prompt batch is prefilled once; the cache is then tiled to B·N rows and a single
`lax.while_loop` decodes every row until all have emitted a stop token or `max_new_tokens` is
reached (T5X's `temperature_sample(num_decodes=N)` design). The sampling configuration is a
frozen dataclass passed as a static argument, so batches of one bucket shape share one compiled
program. Every row reports whether it stopped or ran out of budget (`truncated`), so nothing is
cut silently.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh

from ilp import parallel
from ilp.model import build
from ilp.model.config import ModelConfig
from ilp.model.kv_cache import KVCache


@dataclasses.dataclass(frozen=True)
class SamplingConfig:
  """How to sample; hashable, so it is a static jit argument."""

  num_samples: int = 1
  max_new_tokens: int = 32
  temperature: float = 1.0  # 0: greedy (argmax)
  top_k: int = 0  # 0: no top-k filter
  top_p: float = 1.0  # 1: no nucleus filter
  stop_tokens: tuple[int, ...] = ()
  confidence_temperature: float = 1.0  # the temperature of the log-probs returned (a sample's confidence)

  @property
  def greedy(self) -> bool:
    return self.temperature == 0.0


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class Samples:
  tokens: jax.Array  # [batch, num_samples, max_new_tokens] int32; 0 after a row has stopped
  logprobs: jax.Array  # same shape, float32: log p(token) at `confidence_temperature`, unfiltered
  lengths: jax.Array  # [batch, num_samples] generated tokens, the stop token included
  stopped: jax.Array  # [batch, num_samples] bool: ended on a stop token

  @property
  def truncated(self) -> jax.Array:
    return ~self.stopped

  @property
  def mean_logprob(self) -> jax.Array:
    """Length-normalised sequence log-probability: the model's own confidence in a sample."""
    return self.logprobs.sum(-1) / jnp.maximum(self.lengths, 1)


def filter_logits(logits: jax.Array, sampling: SamplingConfig) -> jax.Array:
  """Temperature, then top-k, then top-p (the smallest set of tokens with mass >= top_p)."""
  logits = logits.astype(jnp.float32) / sampling.temperature
  if sampling.top_k:
    kth = jax.lax.top_k(logits, sampling.top_k)[0][..., -1:]
    logits = jnp.where(logits < kth, -jnp.inf, logits)
  if sampling.top_p < 1.0:
    ordered = jnp.sort(logits, axis=-1)[..., ::-1]
    probs = jax.nn.softmax(ordered, axis=-1)
    kept = (jnp.cumsum(probs, axis=-1) - probs) < sampling.top_p
    threshold = jnp.min(jnp.where(kept, ordered, jnp.inf), axis=-1, keepdims=True)
    logits = jnp.where(logits < threshold, -jnp.inf, logits)
  return logits


_CDF_BLOCK = 128


def categorical(key: jax.Array, logits: jax.Array) -> jax.Array:
  """One draw per row by inverting the CDF: a single uniform per row.

  `jax.random.categorical` draws a Gumbel variate per vocabulary entry, which on CPU costs more
  than the rest of a decode step. The CDF is inverted in two levels, over blocks of `_CDF_BLOCK`
  entries and then inside the chosen block: a vocabulary-long cumulative sum is XLA:CPU's slowest
  decode op (a reduce-window), the two short ones are not. Same distribution; zero-probability
  (filtered) tokens are never drawn.
  """
  rows, vocab = logits.shape
  probs = jax.nn.softmax(logits, axis=-1)
  padded = -(-vocab // _CDF_BLOCK) * _CDF_BLOCK
  blocks = jnp.pad(probs, ((0, 0), (0, padded - vocab))).reshape(rows, -1, _CDF_BLOCK)
  block_mass = blocks.sum(-1)
  block_cdf = jnp.cumsum(block_mass, axis=-1)
  u = jax.random.uniform(key, (rows, 1), jnp.float32) * block_cdf[:, -1:]
  block = jnp.minimum(jnp.sum(block_cdf < u, axis=-1), block_cdf.shape[1] - 1)
  inside = jnp.take_along_axis(blocks, block[:, None, None], axis=1)[:, 0]
  below = jnp.take_along_axis(block_cdf - block_mass, block[:, None], axis=1)
  cdf = jnp.cumsum(inside, axis=-1)
  offset = jnp.sum(cdf < u - below, axis=-1)
  # Rounding can put u past the block's own total: stay on its last token that can be drawn.
  last = _CDF_BLOCK - 1 - jnp.argmax((inside > 0)[:, ::-1], axis=-1)
  return (block * _CDF_BLOCK + jnp.minimum(offset, last)).astype(jnp.int32)


def generate(
  graphdef: nnx.GraphDef,
  cfg: ModelConfig,
  params: nnx.State,
  prompts: jax.Array,
  prompt_mask: jax.Array,
  rng: jax.Array,
  sampling: SamplingConfig,
) -> Samples:
  """Samples `sampling.num_samples` continuations of every left-padded prompt [batch, length].

  Args:
    graphdef, cfg: the model's structure and config (static).
    params: its parameters.
    prompts, prompt_mask: [batch, length] left-padded prompt tokens and their validity.
    rng: the key every sampled token derives from.
    sampling: how to decode (static: one program per prompt shape and setting).
  """
  batch, prompt_len = prompts.shape
  n, steps = sampling.num_samples, sampling.max_new_tokens
  cache = KVCache.init(cfg, batch, prompt_len + steps)
  logits, cache = build.forward(graphdef, params, prompts, mask=prompt_mask, cache=cache, last_only=True)
  last = jnp.repeat(logits[:, -1], n, axis=0)
  cache = cache.tile(n)
  rows = batch * n
  stops = jnp.asarray(sampling.stop_tokens or (-1,), jnp.int32)

  def cond(carry):
    i, _, _, _, _, _, done, _ = carry
    return (i < steps) & ~jnp.all(done)

  def body(carry):
    i, cache, last, tokens, logprobs, lengths, done, stopped = carry
    log_probs = jax.nn.log_softmax(last.astype(jnp.float32) / sampling.confidence_temperature, axis=-1)
    if sampling.greedy:
      token = jnp.argmax(last, axis=-1).astype(jnp.int32)
    else:
      token = categorical(jax.random.fold_in(rng, i), filter_logits(last, sampling))
    token = jnp.where(done, 0, token)
    logprob = jnp.where(done, 0.0, jnp.take_along_axis(log_probs, token[:, None], axis=-1)[:, 0])
    tokens = jax.lax.dynamic_update_slice(tokens, token[:, None], (0, i))
    logprobs = jax.lax.dynamic_update_slice(logprobs, logprob[:, None], (0, i))
    lengths = lengths + (~done).astype(jnp.int32)
    hit = jnp.isin(token, stops) & ~done
    logits, cache = build.forward(graphdef, params, token[:, None], cache=cache)
    return i + 1, cache, logits[:, -1], tokens, logprobs, lengths, done | hit, stopped | hit

  init = (
    jnp.zeros((), jnp.int32),
    cache,
    last,
    jnp.zeros((rows, steps), jnp.int32),
    jnp.zeros((rows, steps), jnp.float32),
    jnp.zeros((rows,), jnp.int32),
    jnp.zeros((rows,), bool),
    jnp.zeros((rows,), bool),
  )
  _, _, _, tokens, logprobs, lengths, _, stopped = jax.lax.while_loop(cond, body, init)
  shape = (batch, n)
  return Samples(
    tokens.reshape(*shape, steps), logprobs.reshape(*shape, steps), lengths.reshape(shape), stopped.reshape(shape)
  )


class Sampler:
  """Samples from one model on a mesh; prompts are sharded over the batch (data) axes."""

  def __init__(
    self,
    graphdef: nnx.GraphDef,
    cfg: ModelConfig,
    mesh: Mesh,
    rules: Sequence[tuple[str, Any]] = parallel.DEFAULT_RULES,
  ):
    self.cfg, self.mesh, self.rules = cfg, mesh, rules
    self._fn = jax.jit(functools.partial(generate, graphdef, cfg), static_argnames="sampling")

  @property
  def compilations(self) -> int:
    """Programs compiled so far: one per (prompt shape, sampling config)."""
    return self._fn._cache_size()

  def __call__(
    self, params: nnx.State, prompts: np.ndarray, prompt_mask: np.ndarray, seed: int, sampling: SamplingConfig
  ) -> Samples:
    sharding = parallel.batch_sharding(self.mesh, prompts.shape, self.rules)
    inputs = parallel.global_batch(
      {"prompts": prompts, "mask": prompt_mask}, sharding, parallel.local_rows(sharding, prompts.shape)
    )
    with parallel.sharding_context(self.mesh, self.rules):
      out = self._fn(params, inputs["prompts"], inputs["mask"], jax.random.key(seed), sampling=sampling)
    return parallel.to_host(out)


def left_pad(sequences: Sequence[np.ndarray], length: int, pad_id: int) -> tuple[np.ndarray, np.ndarray]:
  """Left-pads token sequences to `length` (prompts end where generation starts)."""
  tokens = np.full((len(sequences), length), pad_id, np.int32)
  mask = np.zeros((len(sequences), length), np.int32)
  for r, seq in enumerate(sequences):
    if len(seq):
      tokens[r, -len(seq) :] = seq
      mask[r, -len(seq) :] = 1
  return tokens, mask
