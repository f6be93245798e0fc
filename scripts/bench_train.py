"""Training-step benchmark: our jitted step vs a Hugging Face PyTorch step, in one process.

Prints tokens/s, achieved FLOP/s as a share of a large float32 matmul timed here (the machine's
practical ceiling), the cost of the per-example statistics (step with vs without them), and the
speed ratio against `transformers`' LlamaForCausalLM doing forward + backward + AdamW on the same
architecture and batch (float32). Needs the test environment (torch):

  .venv/bin/python scripts/bench_train.py [--steps=5] [--layers=8] [--d_model=512]
"""
from __future__ import annotations

import time

from absl import app, flags


import jax
import numpy as np

from ilp import parallel
from ilp.model.config import ModelConfig
from ilp.train import metrics
from ilp.train.step import make_train_step
from train_setup import train_setup

FLAGS = flags.FLAGS
flags.DEFINE_integer("steps", 5, "Timed steps per variant (after 2 warm-up steps).")
flags.DEFINE_integer("layers", 8, "Decoder layers.")
flags.DEFINE_integer("d_model", 512, "Hidden size.")
flags.DEFINE_integer("seq", 256, "Sequence length.")
flags.DEFINE_integer("batch", 16, "Sequences per step.")
flags.DEFINE_integer("vocab", 8192, "Vocabulary size.")

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


def bench_ours(cfg: ModelConfig, batch: dict[str, np.ndarray], with_stats: bool) -> float:
  setup = train_setup(cfg, FLAGS.batch)
  state = [setup.state]
  device_batch = {k: jax.device_put(v, setup.batch_sharding) for k, v in batch.items()}
  with parallel.sharding_context(setup.mesh):
    step = jax.jit(make_train_step(setup.graphdef, setup.optimizer, setup.schedule, with_stats=with_stats),
                   in_shardings=(setup.shardings, setup.batch_sharding), donate_argnums=0)

    def run():
      state[0], out, stats = step(state[0], device_batch)
      jax.block_until_ready((out, stats))

    return _timed(run, FLAGS.steps)


def bench_torch(cfg: ModelConfig, batch: dict[str, np.ndarray]) -> float:
  import torch
  import transformers
  torch.manual_seed(0)
  model = transformers.LlamaForCausalLM(transformers.LlamaConfig(
      vocab_size=cfg.vocab_size, hidden_size=cfg.hidden_size, intermediate_size=cfg.intermediate_size,
      num_hidden_layers=cfg.num_layers, num_attention_heads=cfg.num_heads, num_key_value_heads=cfg.num_kv_heads,
      max_position_embeddings=FLAGS.seq, attn_implementation="sdpa")).float().train()
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
  cfg = ModelConfig(family="llama", vocab_size=FLAGS.vocab, hidden_size=FLAGS.d_model,
                    intermediate_size=int(FLAGS.d_model * 2.75) // 16 * 16, num_layers=FLAGS.layers,
                    num_heads=heads, num_kv_heads=heads, head_dim=64, max_position_embeddings=FLAGS.seq)
  batch = _batch(cfg, np.random.default_rng(0))
  tokens = FLAGS.batch * FLAGS.seq
  step_flops = metrics.training_flops_per_token(cfg, FLAGS.seq) * tokens
  import torch
  print(f"devices: {jax.device_count()} x {jax.devices()[0].platform}; torch threads: {torch.get_num_threads()}")
  print(f"model: d_model {cfg.hidden_size}, {cfg.num_layers} layers, vocab {cfg.vocab_size}, seq {FLAGS.seq}, "
        f"batch {FLAGS.batch}, float32; {step_flops / 1e9:.0f} GFLOP per training step")
  peak = metrics.matmul_peak_flops()
  print(f"float32 matmul ceiling (2048^3, jax): {peak / 1e9:.1f} GFLOP/s")
  ours = bench_ours(cfg, batch, with_stats=True)
  bare = bench_ours(cfg, batch, with_stats=False)
  reference = bench_torch(cfg, batch)
  print(f"ilp step, with per-example stats:    {ours:.3f} s  {tokens / ours:8.0f} tok/s  "
        f"{step_flops / ours / 1e9:6.1f} GFLOP/s = {100 * step_flops / ours / peak:.0f}% of the matmul ceiling")
  print(f"ilp step, without per-example stats: {bare:.3f} s  {tokens / bare:8.0f} tok/s")
  print(f"per-example statistics overhead:     {100 * (ours / bare - 1):+.1f}%")
  print(f"transformers (torch) step:           {reference:.3f} s  {tokens / reference:8.0f} tok/s")
  print(f"speed-up vs transformers:            {reference / ours:.2f}x")


if __name__ == "__main__":
  app.run(main)
