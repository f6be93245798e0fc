"""The model smoke test: cached decoding must reproduce the full forward pass on this mesh.

Run on every new starting model (the init_model stage), it catches a wrong cache layout, RoPE
offset or sharding before hours of training and sampling depend on them.
"""

from __future__ import annotations

import functools
from typing import Any, Sequence

import jax
import numpy as np
from flax import nnx
from jax.sharding import Mesh

from ilp import parallel
from ilp.model import build
from ilp.model.config import ModelConfig
from ilp.model.kv_cache import KVCache


def cached_decode_gap(
  cfg: ModelConfig,
  graphdef: nnx.GraphDef,
  state: nnx.State,
  mesh: Mesh,
  rules: Sequence[tuple[str, Any]],
  seed: int,
  batch: int = 4,
  prompt: int = 12,
  steps: int = 4,
) -> float:
  """Max |logit| difference between prefill + step-by-step decode and one full forward pass.

  Args:
    cfg, graphdef, state: the model.
    mesh, rules: where it runs.
    seed: draws the random tokens.
    batch, prompt, steps: rows (with decreasing real lengths, left-padded), prefilled tokens and
      decoded tokens.
  """
  rng = np.random.default_rng(seed)
  tokens = rng.integers(0, cfg.vocab_size, size=(batch, prompt + steps)).astype(np.int32)
  lengths = np.linspace(prompt + steps, steps + 1, batch).astype(int)
  mask = (np.arange(prompt + steps)[None, :] >= (prompt + steps - lengths)[:, None]).astype(np.int32)
  with parallel.sharding_context(mesh, rules):
    fwd = jax.jit(functools.partial(build.forward, graphdef))
    full, _ = fwd(state, tokens, mask=mask)
    logits, cache = fwd(
      state, tokens[:, :prompt], mask=mask[:, :prompt], cache=KVCache.init(cfg, batch, prompt + steps)
    )
    pieces = [logits]
    for i in range(prompt, prompt + steps):
      logits, cache = fwd(state, tokens[:, i : i + 1], cache=cache)
      pieces.append(logits)
  decoded = np.concatenate([np.asarray(p) for p in pieces], axis=1)
  real = mask.astype(bool)
  return float(np.abs(decoded[real] - np.asarray(full)[real]).max())
