"""Stage `init_model`: the starting model of a run, imported from HF or randomly initialised.

Writes `model_init/` (an orbax params checkpoint + model_config.json + the tokenizer of the HF
directory, or of `data.tokenizer` for a random init) and `model_init.json`: size, mesh, and the
smoke test (`ilp.model.smoke`) on this mesh. `model.scan_layers` and `model.remat` (how the layers
run) apply to an imported model too; the checkpoint keeps them for every later stage.
"""

from __future__ import annotations

import logging
import time

import jax

from ilp import fileio, parallel
from ilp.config import Config
from ilp.layout import Layout
from ilp.model import build, checkpoint, hf, smoke

log = logging.getLogger(__name__)


def outputs(layout: Layout) -> list[str]:
  return [layout.model_init, layout.model_init_summary]


def run(config: Config, layout: Layout) -> None:
  mesh = parallel.make_mesh(config.mesh.shape)
  rules = config.mesh.rules
  start = time.time()
  if config.init.hf_dir:
    cfg, graphdef, state = hf.load_hf(
      config.init.hf_dir,
      mesh,
      rules,
      param_dtype=config.init.param_dtype,
      dtype=config.init.dtype,
      scan_layers=config.model.scan_layers,
      remat=config.model.remat,
    )
    checkpoint.check_finite(state, config.init.hf_dir)
    source = config.init.hf_dir
    tokenizer = hf.find_tokenizer(config.init.hf_dir)
  else:
    tokenizer = hf.load_tokenizer(config.data.tokenizer) if config.data.tokenizer else None
    cfg = config.model.for_tokenizer(tokenizer)
    graphdef, state = build.init_params(cfg, mesh, rules, seed=config.seed)
    source = f"random init (seed {config.seed})"
  built = time.time() - start
  gap = smoke.cached_decode_gap(cfg, graphdef, state, mesh, rules, config.seed)
  checkpoint.save_params(layout.model_init, cfg, state, tokenizer=tokenizer)
  summary = {
    "source": source,
    "family": cfg.family,
    "parameters": build.param_count(state),
    "mesh": dict(mesh.shape),
    "devices": jax.device_count(),
    "build_seconds": round(built, 2),
    "cached_decode_max_abs_logit_gap": gap,
  }
  if jax.process_index() == 0:
    fileio.write_json_atomic(layout.model_init_summary, summary)
  log.info(
    "model %s, %.2fM parameters on mesh %s; cached decode vs full forward: max gap %.2e",
    cfg.family,
    summary["parameters"] / 1e6,
    summary["mesh"],
    gap,
  )
