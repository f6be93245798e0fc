"""Compile-time benchmark: scanned vs unrolled decoder layers (and remat) in the training step.

Real checkpoints have 16–28 layers and the training step is compiled once per bucket, so how the
compile time grows with depth matters. For each depth and variant this builds a Llama-shaped model
and reports the time to trace and lower the jitted training step (AdamW, per-example statistics),
XLA's compile time (wall, and CPU time, which other processes on a shared machine disturb less),
the compiled program's temporary memory (mostly the activations kept for the backward pass, which
remat trades for recomputation) and the median step time. Float32, all devices on the fsdp axis:

  .venv/bin/python scripts/bench_compile.py [--layers=4,16,28] [--remat=none,full] [--steps=3] [--repeats=1]
"""

from __future__ import annotations

import time

import jax
import numpy as np
from absl import app, flags

from ilp import parallel
from ilp.model.config import REMATS, ModelConfig
from ilp.train.benchmark import train_setup
from ilp.train.step import make_train_step

FLAGS = flags.FLAGS
flags.DEFINE_list("layers", ["4", "16", "28"], "Depths to measure.")
flags.DEFINE_list("remat", ["none"], f"Remat policies to measure, each scanned and unrolled ({', '.join(REMATS)}).")
flags.DEFINE_integer("d_model", 256, "Hidden size (head_dim 64).")
flags.DEFINE_integer("seq", 128, "Sequence length.")
flags.DEFINE_integer("batch", 8, "Sequences per step.")
flags.DEFINE_integer("vocab", 1024, "Vocabulary size.")
flags.DEFINE_integer("steps", 3, "Timed steps per variant, after one warm-up step.")
flags.DEFINE_integer(
  "repeats",
  1,
  "Measurements per variant, each traced and compiled afresh; every figure is "
  "the fastest (the least disturbed on a shared machine).",
)


def _batch(cfg: ModelConfig) -> dict[str, np.ndarray]:
  tokens = np.random.default_rng(0).integers(0, cfg.vocab_size, (FLAGS.batch, FLAGS.seq)).astype(np.int32)
  loss_mask = np.ones_like(tokens)
  loss_mask[:, -1] = 0
  return {
    "tokens": tokens,
    "mask": np.ones_like(tokens),
    "targets": np.roll(tokens, -1, axis=1),
    "loss_mask": loss_mask,
  }


def measure(cfg: ModelConfig) -> dict[str, float]:
  """Seconds to trace + lower and to compile the training step (wall and this process's CPU time),
  its temporary MiB, and the median seconds per step."""
  setup = train_setup(cfg, FLAGS.batch)
  state = setup.state
  batch = {k: jax.device_put(v, setup.batch_sharding) for k, v in _batch(cfg).items()}
  with parallel.sharding_context(setup.mesh):
    step = jax.jit(
      make_train_step(setup.graphdef, setup.optimizer, setup.schedule),
      in_shardings=(setup.shardings, setup.batch_sharding),
      donate_argnums=0,
    )
    start = time.perf_counter()
    lowered = step.lower(state, batch)
    lowered_at, cpu_at = time.perf_counter(), time.process_time()
    compiled = lowered.compile()
    compiled_at, cpu = time.perf_counter(), time.process_time() - cpu_at
  times = []
  for _ in range(FLAGS.steps + 1):
    begin = time.perf_counter()
    state, metrics, _ = compiled(state, batch)
    jax.block_until_ready(metrics)
    times.append(time.perf_counter() - begin)
  return {
    "lower": lowered_at - start,
    "compile": compiled_at - lowered_at,
    "compile_cpu": cpu,
    "temp_mib": compiled.memory_analysis().temp_size_in_bytes / 2**20,
    "step": float(np.median(times[1:])),
  }


def main(argv: list[str]) -> None:
  del argv
  base = ModelConfig(
    family="llama",
    vocab_size=FLAGS.vocab,
    hidden_size=FLAGS.d_model,
    intermediate_size=int(FLAGS.d_model * 2.75) // 16 * 16,
    num_layers=1,
    num_heads=FLAGS.d_model // 64,
    num_kv_heads=FLAGS.d_model // 64,
    head_dim=64,
    max_position_embeddings=FLAGS.seq,
  )
  print(
    f"devices: {jax.device_count()} x {jax.devices()[0].platform}; Llama d_model {base.hidden_size}, "
    f"vocab {base.vocab_size}, seq {FLAGS.seq}, batch {FLAGS.batch}, float32, AdamW, per-example stats"
  )
  measure(base)  # the process's first compile also initialises XLA: keep it out of the table
  print(
    "| layers | layers run | remat | trace + lower (s) | XLA compile (s) | XLA compile, CPU (s) | temp memory (MiB) "
    "| step (s) |"
  )
  print("|---|---|---|---|---|---|---|---|")
  for layers in map(int, FLAGS.layers):
    for remat in FLAGS.remat:
      for scan in (False, True):
        cfg = base.replace(num_layers=layers, scan_layers=scan, remat=remat)
        runs = [measure(cfg) for _ in range(FLAGS.repeats)]
        r = {key: min(run[key] for run in runs) for key in runs[0]}
        print(
          f"| {layers} | {'scanned' if scan else 'unrolled'} | {remat} | {r['lower']:.2f} | {r['compile']:.2f} "
          f"| {r['compile_cpu']:.2f} | {r['temp_mib']:.0f} | {r['step']:.3f} |",
          flush=True,
        )


if __name__ == "__main__":
  app.run(main)
