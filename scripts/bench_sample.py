"""Sampling benchmark: our jitted KV-cache sampler vs Hugging Face generate(), same weights, one process.

For N = 1, 5, 10 samples per prompt, prints generated tokens/s of both (KV cache on, every row
generating the full budget), the share of the ceiling our sampler reaches (decode FLOPs only,
over the whole call; the ceiling is a float32 matmul timed here on a CPU, the data-sheet peak on
a known accelerator, i.e. MFU), and the time of a 1-token generation for each N, which is
dominated by the prefill: our sampler prefills each prompt once whatever N is. Needs the test
environment (torch). Runs unchanged on a GPU or TPU (bfloat16 there by default; transformers'
side is then skipped, its torch being a CPU build):

  .venv/bin/python scripts/bench_sample.py [--batch=16] [--new_tokens=32] [--dtype=auto] [--peak_flops=0]
"""

from __future__ import annotations

import tempfile
import time

import jax
import numpy as np
from absl import app, flags

from ilp import parallel
from ilp.model import flops, hf
from ilp.model.build import resolve_compute_dtype
from ilp.model.random_llama import save_random_llama
from ilp.sampling.sampler import Sampler, SamplingConfig, left_pad
from ilp.train import metrics

FLAGS = flags.FLAGS
flags.DEFINE_integer("batch", 16, "Prompts per call.")
flags.DEFINE_integer("new_tokens", 32, "Tokens generated per sample.")
flags.DEFINE_integer("d_model", 256, "Hidden size.")
flags.DEFINE_integer("layers", 4, "Decoder layers.")
flags.DEFINE_integer("vocab", 8192, "Vocabulary size.")
flags.DEFINE_integer("repeats", 3, "Timed calls per measurement (the best is kept).")
flags.DEFINE_enum("dtype", "auto", ["auto", "float32", "bfloat16"], "Compute dtype (auto: bf16 on accelerators).")
flags.DEFINE_float(
  "peak_flops",
  0.0,
  "Peak FLOP/s of one device (0: data sheet for known accelerators, else "
  "timed); a run's `machine.peak_flops` is all devices' together.",
)


def _best(fn) -> float:
  fn()
  times = []
  for _ in range(FLAGS.repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return min(times)


def main(argv: list[str]) -> None:
  del argv
  import torch

  directory = tempfile.mkdtemp()
  model = save_random_llama(directory, FLAGS.d_model, FLAGS.layers, FLAGS.vocab)
  dtype = resolve_compute_dtype(FLAGS.dtype)
  mesh = parallel.make_mesh((-1, 1, 1))
  cfg, graphdef, params = hf.load_hf(directory, mesh, dtype=dtype)
  sampler = Sampler(graphdef, cfg, mesh)
  device = jax.devices()[0]
  on_cpu = device.platform == "cpu"
  peak = (FLAGS.peak_flops or metrics.device_peak_flops(dtype)) * jax.device_count()
  ceiling = "matmul ceiling" if on_cpu and not FLAGS.peak_flops else "peak (MFU)"

  rng = np.random.default_rng(0)
  prompts = [rng.integers(3, FLAGS.vocab, int(n)).astype(np.int32) for n in rng.integers(32, 65, FLAGS.batch)]
  tokens, mask = left_pad(prompts, 64, pad_id=0)
  input_ids, attention = torch.as_tensor(tokens, dtype=torch.long), torch.as_tensor(mask, dtype=torch.long)
  print(
    f"devices: {jax.device_count()} x {device.device_kind} ({device.platform}); "
    f"torch threads: {torch.get_num_threads()}"
  )
  print(
    f"model: Llama d_model {FLAGS.d_model}, {FLAGS.layers} layers, vocab {FLAGS.vocab}, {dtype} compute; "
    f"{FLAGS.batch} prompts of 32-64 tokens (left-padded to 64), {FLAGS.new_tokens} new tokens per sample"
  )
  print(f"{ceiling}: {peak / 1e9:.1f} GFLOP/s")
  # Decode FLOPs per generated token, attending over the mean cached context of the decode.
  token_flops = flops.forward_flops_per_token(cfg, 64 + FLAGS.new_tokens / 2)

  def ours(n: int, new_tokens: int) -> float:
    config = SamplingConfig(num_samples=n, max_new_tokens=new_tokens, temperature=1.0)
    return _best(lambda: sampler(params, tokens, mask, seed=0, sampling=config))

  def theirs(n: int, new_tokens: int) -> float:
    if not on_cpu:
      return float("nan")

    def call():
      with torch.no_grad():
        model.generate(
          input_ids=input_ids,
          attention_mask=attention,
          do_sample=True,
          temperature=1.0,
          top_k=0,
          top_p=1.0,
          num_return_sequences=n,
          max_new_tokens=new_tokens,
          min_new_tokens=new_tokens,
          use_cache=True,
          pad_token_id=0,
        )

    return _best(call)

  print(
    f"{'N':>3} {'ilp tok/s':>10} {'HF tok/s':>10} {'speed-up':>9} {'% ceiling':>10} | "
    f"{'1-token call, ilp':>18} {'HF':>8}"
  )
  for n in (1, 5, 10):
    generated = FLAGS.batch * n * FLAGS.new_tokens
    ours_s, theirs_s = ours(n, FLAGS.new_tokens), theirs(n, FLAGS.new_tokens)
    ours_1, theirs_1 = ours(n, 1), theirs(n, 1)
    share = 100 * generated * token_flops / ours_s / peak
    print(
      f"{n:>3} {generated / ours_s:>10.0f} {generated / theirs_s:>10.0f} {theirs_s / ours_s:>8.1f}x {share:>9.0f}% | "
      f"{ours_1 * 1e3:>15.0f} ms {theirs_1 * 1e3:>5.0f} ms"
    )


if __name__ == "__main__":
  app.run(main)
