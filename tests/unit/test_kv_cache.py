"""Prefill + token-by-token decode through the KV cache reproduces the full forward's logits."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ilp import parallel
from ilp.model import build
from ilp.model.config import ModelConfig, RopeConfig
from ilp.model.kv_cache import KVCache
from tests import hf_models

CONFIGS = {
  "llama": ModelConfig(
    family="llama",
    vocab_size=64,
    hidden_size=48,
    intermediate_size=80,
    num_layers=2,
    num_heads=6,
    num_kv_heads=2,
    head_dim=8,
    rope=RopeConfig(type="llama3", factor=4.0, original_max_position_embeddings=8),
  ),
  "qwen2": ModelConfig(
    family="qwen2",
    vocab_size=64,
    hidden_size=48,
    intermediate_size=80,
    num_layers=2,
    num_heads=4,
    num_kv_heads=4,
    head_dim=12,
    qkv_bias=True,
    tie_embeddings=True,
  ),
  "olmo2": ModelConfig(
    family="olmo2",
    vocab_size=64,
    hidden_size=48,
    intermediate_size=80,
    num_layers=2,
    num_heads=4,
    num_kv_heads=1,
    head_dim=12,
    rms_norm_eps=1e-5,
  ),
}


@pytest.mark.parametrize("family", sorted(CONFIGS))
def test_prefill_then_decode_matches_full_forward(family):
  cfg = CONFIGS[family]
  mesh = parallel.make_mesh((1, 1, 1), jax.devices()[:1])
  graphdef, state = build.init_params(cfg, mesh, seed=3)
  prompt_len, steps = 7, 5
  # Left-padded prompts of different lengths, then `steps` more real tokens per row.
  tokens, mask = hf_models.padded_batch([7, 4, 1], prompt_len, cfg.vocab_size, left=True)
  extra = np.random.default_rng(1).integers(0, cfg.vocab_size, size=(3, steps)).astype(np.int32)
  full_tokens = np.concatenate([tokens, extra], axis=1)
  full_mask = np.concatenate([mask, np.ones_like(extra)], axis=1)
  fwd = jax.jit(build.forward)
  full, _ = fwd(graphdef, state, full_tokens, mask=full_mask)

  cache = KVCache.init(cfg, batch=3, max_length=prompt_len + steps + 3)
  prefill, cache = fwd(graphdef, state, tokens, mask=mask, cache=cache)
  decoded = [prefill]
  for i in range(steps):
    step_logits, cache = fwd(graphdef, state, extra[:, i : i + 1], cache=cache)
    decoded.append(step_logits)
  decoded = jnp.concatenate(decoded, axis=1)
  real = full_mask.astype(bool)
  np.testing.assert_allclose(np.asarray(decoded)[real], np.asarray(full)[real], atol=2e-5, rtol=1e-5)
  assert int(cache.index) == prompt_len + steps
  np.testing.assert_array_equal(np.asarray(cache.tokens_seen()), full_mask.sum(axis=1))


def test_tiled_cache_decodes_each_copy_like_its_prompt():
  """Tiling a prefilled cache to N rows per prompt gives each copy its prompt's next-token logits."""
  cfg = CONFIGS["llama"]
  mesh = parallel.make_mesh((1, 1, 1), jax.devices()[:1])
  graphdef, state = build.init_params(cfg, mesh, seed=0)
  tokens, mask = hf_models.padded_batch([5, 3], 5, cfg.vocab_size, left=True)
  fwd = jax.jit(build.forward)
  _, cache = fwd(graphdef, state, tokens, mask=mask, cache=KVCache.init(cfg, 2, 8))
  nxt = np.array([[9], [11]], np.int32)
  ref, _ = fwd(graphdef, state, nxt, cache=cache)
  tiled, _ = fwd(graphdef, state, np.repeat(nxt, 3, axis=0), cache=cache.tile(3))
  np.testing.assert_allclose(np.asarray(tiled), np.repeat(np.asarray(ref), 3, axis=0), atol=1e-6)
