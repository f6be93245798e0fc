"""Stage `init_model`: the starting model of a run, imported from HF or randomly initialised.

Writes `workdir/model_init/` (an orbax params checkpoint + model_config.json + the tokenizer of
the HF directory, or of `data.tokenizer` for a random init) and
`workdir/model_init.json`: size, mesh, and a self-check that cached decoding reproduces the
full forward pass on this mesh (the model smoke test).
"""
from __future__ import annotations

import functools
import os
import time

import jax
import ml_collections
import numpy as np
import logging

from ilp import fileio, parallel
from ilp.model import build, checkpoint, hf
from ilp.model.config import ModelConfig
from ilp.model.kv_cache import KVCache

log = logging.getLogger(__name__)

OUTPUT_DIR = "model_init"
SUMMARY = "model_init.json"


def outputs(workdir: str) -> list[str]:
  return [os.path.join(workdir, OUTPUT_DIR), os.path.join(workdir, SUMMARY)]


def cached_decode_gap(cfg: ModelConfig, graphdef, state, mesh, rules, seed: int, batch: int = 4,
                      prompt: int = 12, steps: int = 4) -> float:
  """Max |logit| difference between prefill + step-by-step decode and one full forward pass."""
  rng = np.random.default_rng(seed)
  tokens = rng.integers(0, cfg.vocab_size, size=(batch, prompt + steps)).astype(np.int32)
  lengths = np.linspace(prompt + steps, steps + 1, batch).astype(int)
  mask = (np.arange(prompt + steps)[None, :] >= (prompt + steps - lengths)[:, None]).astype(np.int32)
  with parallel.sharding_context(mesh, rules):
    fwd = jax.jit(functools.partial(build.forward, graphdef))
    full, _ = fwd(state, tokens, mask=mask)
    logits, cache = fwd(state, tokens[:, :prompt], mask=mask[:, :prompt],
                        cache=KVCache.init(cfg, batch, prompt + steps))
    pieces = [logits]
    for i in range(prompt, prompt + steps):
      logits, cache = fwd(state, tokens[:, i:i + 1], cache=cache)
      pieces.append(logits)
  decoded = np.concatenate([np.asarray(p) for p in pieces], axis=1)
  real = mask.astype(bool)
  return float(np.abs(decoded[real] - np.asarray(full)[real]).max())


def run(config: ml_collections.ConfigDict, workdir: str) -> None:
  mesh = parallel.make_mesh(config.mesh.shape)
  rules = config.mesh.rules
  start = time.time()
  if config.init.hf_dir:
    cfg, graphdef, state = hf.load_hf(config.init.hf_dir, mesh, rules, param_dtype=config.init.param_dtype,
                                      dtype=config.init.dtype)
    source = config.init.hf_dir
    tokenizer = hf.find_tokenizer(config.init.hf_dir)
  else:
    tokenizer = hf.load_tokenizer(config.data.tokenizer) if config.data.tokenizer else None
    fields = config.model.to_dict()
    if not fields["vocab_size"]:  # 0: size the embedding to the tokenizer
      if tokenizer is None:
        raise ValueError("config field 'model.vocab_size' is 0 (from the tokenizer) but 'data.tokenizer' is empty")
      fields["vocab_size"] = len(tokenizer)
    if fields["eos_token_ids"] == () and tokenizer is not None:
      fields.update(eos_token_ids=(tokenizer.eos_token_id,), bos_token_id=tokenizer.bos_token_id,
                    pad_token_id=tokenizer.pad_token_id)
    cfg = ModelConfig.from_dict(fields)
    graphdef, state = build.init_params(cfg, mesh, rules, seed=config.seed)
    source = f"random init (seed {config.seed})"
  built = time.time() - start
  gap = cached_decode_gap(cfg, graphdef, state, mesh, rules, config.seed)
  checkpoint.save_params(os.path.join(workdir, OUTPUT_DIR), cfg, state, tokenizer=tokenizer)
  summary = {"source": source, "family": cfg.family, "parameters": build.param_count(state),
             "mesh": dict(mesh.shape), "devices": jax.device_count(), "build_seconds": round(built, 2),
             "cached_decode_max_abs_logit_gap": gap}
  if jax.process_index() == 0:
    fileio.write_json_atomic(os.path.join(workdir, SUMMARY), summary)
  log.info("model %s, %.2fM parameters on mesh %s; cached decode vs full forward: max gap %.2e",
               cfg.family, summary["parameters"] / 1e6, summary["mesh"], gap)
