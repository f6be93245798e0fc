"""Benchmark: the pipeline at real scale on the CPU, each stage's time and peak memory, and what
each would cost for a 1B model on one H100.

Runs `configs/scale.py` (the ILP world at about 100,000 SFT examples and a 1,000,000-document
pre-training corpus, a small model) stage by stage, each stage in its own `launch.py` process
(the earlier stages are done and skipped), plus the BPE tokenizer training the config needs
after the world stage (`scripts/train_tokenizer.py`). Per stage it records the stage's own time
(the pipeline's "stage X: done in Ys" line), the process's wall time and its peak RSS (`wait4`'s
maximum resident set), in `{workdir}/bench_scale.json`; a killed benchmark resumes at the first
stage not recorded.

The projection to a 1B model (Llama-3.2-1B's shape, `LLAMA_1B`) on one H100 counts the model
FLOPs of each model stage with the code's own per-token counts (`ilp.model.flops`):
  - sft: the run's padded training tokens (`sft/summary.json`) x `training_flops_per_token`;
  - detect: per example, the forward tokens of every probe the config runs, counted from its
    settings and the examples' token lengths (`detect_tokens`; every generation counted at
    `max_new_tokens`, an upper bound), x `forward_flops_per_token`;
and divides by the H100's dense bf16 peak (989 TFLOP/s) times an assumed model FLOPs utilisation
(`MFU`: 40% for training, as MaxText reports for dense models of this size; 15% for detection,
whose decoding at batch 256 is bound by memory bandwidth, not FLOPs). Token counts are the run's
(its 8k BPE tokenizer; a 128k-token tokenizer would give fewer). The stages without a model
(world, tokenizer, diagnose, report) keep their CPU time: their work does not grow with the
model. Pre-training is not projected: a 1B model arrives pre-trained.

  python scripts/bench_scale.py --workdir=runs/scale [--overrides=--config.detect.num_samples=2]
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time

import numpy as np
import pandas as pd
from absl import app, flags

from ilp import config as config_lib
from ilp.model import flops
from ilp.model.config import ModelConfig

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Run directory (resumes a killed benchmark).")
flags.DEFINE_list("overrides", [], "Extra --config.a.b=value arguments for every stage.")
flags.mark_flag_as_required("workdir")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(ROOT, "configs", "scale.py")
STAGES = ("world", "tokenizer", "init_model", "pretrain", "sft", "detect", "diagnose", "report")
TOKENIZER_VOCAB = 8192
LLAMA_1B = ModelConfig(
  family="llama",
  vocab_size=128256,
  hidden_size=2048,
  intermediate_size=8192,
  num_layers=16,
  num_heads=32,
  num_kv_heads=8,
  head_dim=64,
  max_position_embeddings=131072,
)
H100_PEAK = 989e12  # dense bf16 FLOP/s (SXM)
MFU = {"sft": 0.40, "detect": 0.15}


def command(stage: str, workdir: str, done: list[str]) -> list[str]:
  """The process that runs `stage` (the pipeline's stages up to it, the earlier ones skipped)."""
  if stage == "tokenizer":
    world = os.path.join(workdir, "world")
    return [
      sys.executable,
      os.path.join(ROOT, "scripts", "train_tokenizer.py"),
      f"--config={CONFIG}",
      f"--out={os.path.join(workdir, 'bpe')}",
      f"--vocab_size={TOKENIZER_VOCAB}",
      f"--config.data.corpora=({{'path': '{world}/pretrain.txt'}},)",
      f"--config.data.sft=({{'path': '{world}/sft_phase1.jsonl'}}, {{'path': '{world}/sft_phase2.jsonl'}})",
    ]
  stages = tuple(s for s in done + [stage] if s != "tokenizer")
  # the world stage runs before the BPE tokenizer exists: its check is given the world's own
  first = ["--config.data.tokenizer={workdir}/world/tokenizer"] if stage == "world" else []
  return [
    sys.executable,
    os.path.join(ROOT, "launch.py"),
    f"--config={CONFIG}",
    f"--workdir={workdir}",
    f"--config.stages={stages}",
    *first,
    *FLAGS.overrides,
  ]


def run(stage: str, workdir: str, done: list[str]) -> dict:
  """Runs one stage in its own process: its time, the process's wall time and peak RSS."""
  log = os.path.join(workdir, "bench_logs", f"{stage}.log")
  os.makedirs(os.path.dirname(log), exist_ok=True)
  start = time.perf_counter()
  with open(log, "w") as out:
    process = subprocess.Popen(command(stage, workdir, done), stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
    _, status, usage = os.wait4(process.pid, 0)
  wall = time.perf_counter() - start
  if os.waitstatus_to_exitcode(status) != 0:
    sys.exit(f"bench_scale.py: stage {stage} failed (exit {os.waitstatus_to_exitcode(status)}); see {log}")
  found = re.findall(rf"stage {stage}: done in ([0-9.]+)s", open(log).read())
  return {"seconds": float(found[-1]) if found else wall, "wall_seconds": wall, "peak_rss_gib": usage.ru_maxrss / 2**20}


def detect_tokens(workdir: str, detect) -> dict[str, float]:
  """Forward tokens detection runs through each model, from its settings and the examples' token
  lengths (P: prompt, R: response, T: `max_new_tokens`; each generation at T, an upper bound).
  The fine-tuned model: its greedy answer and repeats x N samples (P + T each), the reference
  teacher-forced (P + R), the MC options (options x (P + R)), the prompt embedding (P) and the
  answer embedding (R, when `detect.answers.embedding` is on; other candidate options not counted). The
  base model: its greedy answer and `base_samples` samples (P + T), the MC distractor samples
  when not the same draw, the options, and each entity swap with the example itself (P + R)."""
  examples = pd.read_parquet(os.path.join(workdir, "examples.parquet"), columns=["prompt_length", "length"])
  p = examples["prompt_length"].to_numpy(np.float64)
  r = examples["length"].to_numpy(np.float64) - p
  t = detect.max_new_tokens
  options = detect.mc.num_options if detect.mc.enabled else 0
  generate, score = (p + t).sum(), (p + r).sum()
  embedded = (p.sum() + (r.sum() if detect.answers.embedding else 0.0)) if detect.embedding_dims else 0.0
  tuned = (1 + detect.repeats * detect.num_samples) * generate + (1 + options) * score + embedded
  if not detect.base:
    return {"sft": tuned, "base": 0.0}
  m = detect.mc
  reused = (m.base_temperature, m.base_samples) == (detect.temperature, detect.base_samples)
  distractor_samples = 0 if reused or not m.enabled or m.base_distractors is False else m.base_samples
  base = (1 + detect.base_samples + distractor_samples) * generate + (options + detect.entity_swaps + 1) * score
  return {"sft": tuned, "base": base}


def projection(workdir: str, measured: dict[str, dict]) -> dict[str, float | None]:
  """Each stage's projected seconds for `LLAMA_1B` on one H100 (None: not projected)."""
  config = config_lib.read(os.path.join(workdir, "config.json"))
  sft = json.load(open(os.path.join(workdir, "sft", "summary.json")))
  context = max(config.data.buckets)
  sft_flops = sft["tokens"]["padded"] * flops.training_flops_per_token(LLAMA_1B, context)
  detect_flops = sum(detect_tokens(workdir, config.detect).values()) * flops.forward_flops_per_token(LLAMA_1B, context)
  return {
    "world": measured["world"]["seconds"],
    "tokenizer": measured["tokenizer"]["seconds"],
    "init_model": None,
    "pretrain": None,
    "sft": sft_flops / (H100_PEAK * MFU["sft"]),
    "detect": detect_flops / (H100_PEAK * MFU["detect"]),
    "diagnose": measured["diagnose"]["seconds"],
    "report": measured["report"]["seconds"],
  }


def table(workdir: str, measured: dict[str, dict]) -> str:
  examples = len(pd.read_parquet(os.path.join(workdir, "examples.parquet"), columns=["id"]))
  projected = projection(workdir, measured)
  rows = [
    f"{examples:,} SFT examples; 1B model on one H100 projected from FLOP counts (scripts/bench_scale.py docstring)",
    "",
    "| stage | time (s) | s per 1,000 examples | peak RSS (GiB) | projected 1B on H100 (s) |",
    "|---|---:|---:|---:|---:|",
  ]
  for stage in STAGES:
    m, p = measured[stage], projected[stage]
    rows.append(
      f"| {stage} | {m['seconds']:.0f} | {1000 * m['seconds'] / examples:.2f} | {m['peak_rss_gib']:.2f} | "
      f"{'n/a' if p is None else f'{p:.0f}'} |"
    )
  total = sum(measured[s]["seconds"] for s in STAGES)
  rows.append(
    f"| all | {total:.0f} | {1000 * total / examples:.2f} | {max(m['peak_rss_gib'] for m in measured.values()):.2f} | |"
  )
  return "\n".join(rows)


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  workdir = os.path.abspath(FLAGS.workdir)
  os.makedirs(workdir, exist_ok=True)
  record = os.path.join(workdir, "bench_scale.json")
  measured = json.load(open(record)) if os.path.exists(record) else {}
  for k, stage in enumerate(STAGES):
    if stage in measured:
      print(f"{stage}: measured before ({measured[stage]['seconds']:.0f} s)")
      continue
    print(f"{stage}: running", flush=True)
    measured[stage] = run(stage, workdir, list(STAGES[:k]))
    print(
      f"{stage}: {measured[stage]['seconds']:.0f} s, peak RSS {measured[stage]['peak_rss_gib']:.2f} GiB", flush=True
    )
    with open(record + ".tmp", "w") as f:
      json.dump(measured, f, indent=2)
    os.replace(record + ".tmp", record)
  print(table(workdir, measured))


if __name__ == "__main__":
  app.run(main)
