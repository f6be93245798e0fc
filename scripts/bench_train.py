"""Training-step benchmark: our jitted step vs a Hugging Face PyTorch step, in one process.

Prints tokens/s, achieved FLOP/s as a share of the ceiling (on a CPU a large float32 matmul timed
here, the machine's practical ceiling; on a known accelerator its data-sheet peak, i.e. MFU), the
cost of the per-example statistics (step with vs without them, timed interleaved), and the speed
ratio against `transformers`' LlamaForCausalLM doing forward + backward + AdamW on the same
architecture and batch (skipped where torch cannot use the device). Needs the test environment
(torch). Runs unchanged on a GPU or TPU, in bfloat16 there by default:

  .venv/bin/python scripts/bench_train.py [--steps=5] [--layers=8] [--d_model=512] [--dtype=auto]
      [--peak_flops=0] [--ynnpack_dots]
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from ilp import parallel
from ilp.model import flops
from ilp.model.build import resolve_compute_dtype
from ilp.model.config import ModelConfig
from ilp.train import metrics
from ilp.train.benchmark import train_setup
from ilp.train.step import compiler_options, make_train_step

FLAGS = flags.FLAGS
flags.DEFINE_integer("steps", 5, "Timed steps per variant (after 2 warm-up steps).")
flags.DEFINE_integer("layers", 8, "Decoder layers.")
flags.DEFINE_integer("d_model", 512, "Hidden size.")
flags.DEFINE_integer("seq", 256, "Sequence length.")
flags.DEFINE_integer("batch", 16, "Sequences per step.")
flags.DEFINE_integer("vocab", 8192, "Vocabulary size.")
flags.DEFINE_enum("dtype", "auto", ["auto", "float32", "bfloat16"], "Compute dtype (auto: bf16 on accelerators).")
flags.DEFINE_float(
  "peak_flops",
  0.0,
  "Peak FLOP/s of one device (0: data sheet for known accelerators, else "
  "timed); a run's `machine.peak_flops` is all devices' together.",
)
flags.DEFINE_bool(
  "ynnpack_dots",
  False,
  "Also time the step with XLA:CPU's YNNPACK dot fusions (the XLA default; a run's `machine.ynnpack_dots`).",
)


def _timed(fn, steps: int) -> float:
  """Median seconds per call after two warm-up calls."""
  fn(), fn()
  times = []
  for _ in range(steps):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return float(np.median(times))


def _batch(cfg: ModelConfig, rng: np.random.Generator) -> dict[str, np.ndarray]:
  tokens = rng.integers(0, cfg.vocab_size, (FLAGS.batch, FLAGS.seq)).astype(np.int32)
  loss_mask = np.ones_like(tokens)
  loss_mask[:, : FLAGS.seq // 4] = 0  # a prompt quarter, as in SFT
  loss_mask[:, -1] = 0
  targets = np.concatenate([tokens[:, 1:], tokens[:, :1]], axis=1)
  return {"tokens": tokens, "mask": np.ones_like(tokens), "targets": targets, "loss_mask": loss_mask}


def bench_ours(cfg: ModelConfig, batch: dict[str, np.ndarray], variants: dict[str, dict]) -> dict[str, float]:
  """Median step time of each variant (make_train_step keyword arguments plus `ynnpack_dots`),
  compiled up front and timed round-robin so that machine drift hits all alike."""
  setup = train_setup(cfg, FLAGS.batch)
  device_batch = {k: jax.device_put(v, setup.batch_sharding) for k, v in batch.items()}
  steps, states = {}, {}
  with parallel.sharding_context(setup.mesh):
    for name, options in variants.items():
      options = dict(options)
      ynnpack = options.pop("ynnpack_dots", False)
      steps[name] = jax.jit(
        make_train_step(setup.graphdef, setup.optimizer, setup.schedule, ynnpack_dots=ynnpack, **options),
        in_shardings=(setup.shardings, setup.batch_sharding),
        donate_argnums=0,
        compiler_options=compiler_options(ynnpack),
      )
      states[name] = jax.tree.map(jnp.copy, setup.state)  # each its own, donated and replaced every step
    times: dict[str, list[float]] = {name: [] for name in variants}
    for round_ in range(FLAGS.steps + 2):
      for name, step in steps.items():
        start = time.perf_counter()
        states[name], *out = step(states[name], device_batch)
        jax.block_until_ready(out)
        if round_ >= 2:  # two warm-up rounds (the first compiles)
          times[name].append(time.perf_counter() - start)
  return {name: float(np.median(t)) for name, t in times.items()}


def bench_torch(cfg: ModelConfig, batch: dict[str, np.ndarray]) -> float:
  import torch
  import transformers

  torch.manual_seed(0)
  model = (
    transformers.LlamaForCausalLM(
      transformers.LlamaConfig(
        vocab_size=cfg.vocab_size,
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        num_key_value_heads=cfg.num_kv_heads,
        max_position_embeddings=FLAGS.seq,
        attn_implementation="sdpa",
      )
    )
    .float()
    .train()
  )
  optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), weight_decay=0.0)
  tokens = torch.as_tensor(batch["tokens"], dtype=torch.long)
  labels = tokens.clone()
  labels[torch.as_tensor(batch["loss_mask"] == 0)] = -100

  def run():
    optimizer.zero_grad(set_to_none=True)
    loss = model(input_ids=tokens, labels=labels).loss
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()

  return _timed(run, FLAGS.steps)


def main(argv: list[str]) -> None:
  del argv
  heads = FLAGS.d_model // 64
  dtype = resolve_compute_dtype(FLAGS.dtype)
  cfg = ModelConfig(
    family="llama",
    vocab_size=FLAGS.vocab,
    hidden_size=FLAGS.d_model,
    intermediate_size=int(FLAGS.d_model * 2.75) // 16 * 16,
    num_layers=FLAGS.layers,
    num_heads=heads,
    num_kv_heads=heads,
    head_dim=64,
    max_position_embeddings=FLAGS.seq,
    dtype=dtype,
  )
  batch = _batch(cfg, np.random.default_rng(0))
  tokens = FLAGS.batch * FLAGS.seq
  step_flops = flops.training_flops_per_token(cfg, FLAGS.seq) * tokens
  import torch

  device = jax.devices()[0]
  print(
    f"devices: {jax.device_count()} x {device.device_kind} ({device.platform}); "
    f"torch threads: {torch.get_num_threads()}"
  )
  print(
    f"model: d_model {cfg.hidden_size}, {cfg.num_layers} layers, vocab {cfg.vocab_size}, seq {FLAGS.seq}, "
    f"batch {FLAGS.batch}, {dtype} compute; {step_flops / 1e9:.0f} GFLOP per training step"
  )
  peak = (FLAGS.peak_flops or metrics.device_peak_flops(dtype)) * jax.device_count()
  ceiling = "matmul ceiling" if device.platform == "cpu" and not FLAGS.peak_flops else "peak (MFU)"
  print(f"{ceiling}: {peak / 1e9:.1f} GFLOP/s")
  variants = {"stats": {"with_stats": True}, "bare": {"with_stats": False}}
  if FLAGS.ynnpack_dots:
    variants["ynnpack"] = {"with_stats": True, "ynnpack_dots": True}
  ours = bench_ours(cfg, batch, variants)
  step = ours["stats"]
  print(
    f"ilp step, with per-example stats:    {step:.3f} s  {tokens / step:8.0f} tok/s  "
    f"{step_flops / step / 1e9:8.1f} GFLOP/s = {100 * step_flops / step / peak:.0f}% of the {ceiling}"
  )
  print(f"ilp step, without per-example stats: {ours['bare']:.3f} s  {tokens / ours['bare']:8.0f} tok/s")
  print(f"per-example statistics overhead:     {100 * (step / ours['bare'] - 1):+.1f}%")
  if "ynnpack" in ours:
    print(
      f"ilp step with YNNPACK dots:          {ours['ynnpack']:.3f} s  "
      f"({ours['ynnpack'] / step:.2f}x the default's time)"
    )
  if device.platform != "cpu":
    print("transformers (torch) step:           skipped (this benchmark's torch reference runs on the CPU)")
    return
  reference = bench_torch(cfg, batch)
  print(
    f"transformers (torch) step:           {reference:.3f} s  {tokens / reference:8.0f} tok/s  "
    f"{step_flops / reference / 1e9:8.1f} GFLOP/s = {100 * step_flops / reference / peak:.0f}% of the {ceiling}"
  )
  print(f"speed-up vs transformers:            {reference / step:.2f}x")


if __name__ == "__main__":
  app.run(main)
