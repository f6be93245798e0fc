"""Detection benchmark: the detect stage vs the same probes written plainly with transformers, one process.

A random Llama (`ilp.model.random_llama`) is saved as a Hugging Face directory with a word-level tokenizer,
and `--examples` random SFT records (prompts of 20-40 words, responses of 1-4, three data sets)
as JSONL. Ours is the real stage: `ilp.pipeline.run` with stages=("detect",) on that directory
(protocol "both", N = 5 at temperature 0.7, no base model). Theirs is transformers on the same
weights, the stage's own prompt tokens and its own multiple-choice options (`mc_options`):

  - `repeats` x `generate(do_sample=True, temperature=0.7, top_k=0, num_return_sequences=5)` in
    left-padded batches of `--hf_batch` prompts, stopping at EOS; each sample decoded and
    exact-matched against the reference;
  - one forward pass over every option (the example's response and 3 other examples' responses,
    each then EOS), right-padded, `--hf_batch` examples' options at a time: the length-normalised
    log-likelihood of each, softmaxed over the options. Once, not per repeat, as in the stage
    (its repeats only redraw the MC predictions from that distribution).

The stage does more, all of it counted in its time:
  - a greedy decode of every prompt (`greedy_correct`) and a teacher-forced pass over the
    reference at the sampling temperature (`gen_expected_pass`);
  - a prompt embedding (a forward pass without the head, `prompt_embedding`);
  - every sample's mean log-prob (BoN's confidence), and its scoring passes compute all of the
    per-example statistics, not just the log-likelihood;
  - checks, building the examples table (tokenising), choosing distractors, loading the
    checkpoint, XLA compilation, and writing Parquet parts, the detection table and its summary.

Ours is timed whole (`pipeline.run`), and from the end of its first chunk to the end of its last
(the stage's per-chunk log lines: the first chunk holds the compilations, the later ones reuse
them; this leaves out the setup before the chunks and the writing after them too). Needs the test environment (torch):

  .venv/bin/python scripts/bench_detect.py [--examples=2000] [--repeats=1] [--d_model=256] [--layers=4]
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from typing import Any

import jax
import numpy as np
import pandas as pd
from absl import app, flags

from configs import base
from ilp import pipeline
from ilp.data import batches, examples
from ilp.data.tokenize import TokenizedExample
from ilp.data.tokenizer_training import SPECIAL, save_word_level
from ilp.detection import columns as col
from ilp.layout import Layout
from ilp.model import hf
from ilp.model.random_llama import save_random_llama
from ilp.sampling.sampler import left_pad
from ilp.scoring.estimators import option_distribution
from ilp.scoring.verifiers import get_verifier
from ilp.stages import detect as detect_stage

FLAGS = flags.FLAGS
flags.DEFINE_integer("examples", 2000, "SFT records probed.")
flags.DEFINE_integer("repeats", 1, "Sampling runs per example (detect.repeats).")
flags.DEFINE_integer("max_new_tokens", 8, "Generation budget per sample.")
flags.DEFINE_integer("hf_batch", 16, "Prompts per transformers call (the stage's detect.batch_size is 16).")
flags.DEFINE_integer("d_model", 256, "Hidden size.")
flags.DEFINE_integer("layers", 4, "Decoder layers.")
flags.DEFINE_integer("vocab", 2048, "Vocabulary size (the tokenizer's words).")

NUM_SAMPLES, TEMPERATURE = 5, 0.7
DATASETS = ("capitals", "dates", "codes")
PROMPT_WORDS, RESPONSE_WORDS = (20, 40), (1, 4)
ROLES = ("user:", "assistant:")  # the plain template's words: "user: {prompt}\nassistant: "
BUCKETS = (32, 48)  # prompts are 23-43 tokens (BOS, roles); with an option and EOS at most 48


def write_data(model_dir: str, data_dir: str) -> list[dict]:
  """Saves the word-level tokenizer (`--vocab` entries) next to the model and writes the records,
  one JSONL file per data set; returns the `data.sft` sources."""
  words = list(SPECIAL) + list(ROLES) + [f"w{i}" for i in range(len(SPECIAL) + len(ROLES), FLAGS.vocab)]
  save_word_level(words, model_dir)
  plain = words[len(SPECIAL) + len(ROLES) :]
  rng = np.random.default_rng(0)
  draw = lambda bounds: " ".join(rng.choice(plain, int(rng.integers(bounds[0], bounds[1] + 1))))
  os.makedirs(data_dir)
  sources = []
  for d, name in enumerate(DATASETS):
    path = os.path.join(data_dir, f"{name}.jsonl")
    with open(path, "w") as f:
      for i in range(d, FLAGS.examples, len(DATASETS)):
        record = {"id": f"{name}-{i}", "prompt": draw(PROMPT_WORDS), "response": draw(RESPONSE_WORDS)}
        f.write(json.dumps(record) + "\n")
    sources.append({"path": path})
  return sources


class ChunkLog(logging.Handler):
  """The stage's per-chunk progress lines, as (examples in the chunk, time logged)."""

  def __init__(self):
    super().__init__(logging.INFO)
    self.chunks: list[tuple[int, float]] = []

  def emit(self, record: logging.LogRecord) -> None:
    if record.getMessage().startswith("detect: chunk"):
      self.chunks.append((int(record.args[2]), record.created))


def run_stage(model_dir: str, sources: list[dict], workdir: str) -> tuple[float, list[tuple[int, float]]]:
  """Runs the detect stage on the HF directory: its wall seconds and its chunk log."""
  config = base.get_config()
  config.stages = ("detect",)
  config.data.update(sft=tuple(sources), tokenizer=model_dir, buckets=BUCKETS)
  config.detect.update(
    model=model_dir,
    base="",
    protocol="both",
    num_samples=NUM_SAMPLES,
    temperature=TEMPERATURE,
    repeats=FLAGS.repeats,
    max_new_tokens=FLAGS.max_new_tokens,
  )
  log = ChunkLog()
  logger = logging.getLogger(detect_stage.__name__)
  logger.setLevel(logging.INFO)
  logger.addHandler(log)
  start = time.time()
  try:
    pipeline.run(config, workdir)
  finally:
    logger.removeHandler(log)
  return time.time() - start, log.chunks


def hf_detect(model: Any, tokenizer: Any, frame: pd.DataFrame, options: list[list[str]]) -> tuple[float, np.ndarray]:
  """The same probes with transformers: wall seconds, and every example's option distribution."""
  import torch

  tensor = lambda array: torch.as_tensor(array, dtype=torch.long)
  eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
  prompts, references = examples.prompts(frame), frame["response"].tolist()
  verify = get_verifier("exact_match")
  spans = [range(s, min(s + FLAGS.hf_batch, len(prompts))) for s in range(0, len(prompts), FLAGS.hf_batch)]
  logliks = np.zeros((len(prompts), max(map(len, options))))
  valid = np.zeros(logliks.shape, bool)
  start = time.perf_counter()
  with torch.no_grad():
    for _ in range(FLAGS.repeats):
      for span in spans:
        tokens, mask = left_pad([prompts[e] for e in span], max(len(prompts[e]) for e in span), pad)
        out = model.generate(
          input_ids=tensor(tokens),
          attention_mask=tensor(mask),
          do_sample=True,
          temperature=TEMPERATURE,
          top_k=0,
          top_p=1.0,
          num_return_sequences=NUM_SAMPLES,
          max_new_tokens=FLAGS.max_new_tokens,
          eos_token_id=eos,
          pad_token_id=pad,
        )
        texts = tokenizer.batch_decode(out[:, tokens.shape[1] :], skip_special_tokens=True)
        for row, text in enumerate(texts):  # prompt-major; checked as the stage does (the result is not kept)
          verify(text.strip(), references[span[row // NUM_SAMPLES]])
    for span in spans:
      pairs = [(e, k) for e in span for k in range(len(options[e]))]
      option_ids = [tokenizer(options[e][k], add_special_tokens=False)["input_ids"] + [eos] for e, k in pairs]
      sequences = [
        TokenizedExample(i, np.asarray(list(prompts[e]) + ids, np.int32), len(prompts[e]))
        for i, ((e, _), ids) in enumerate(zip(pairs, option_ids))
      ]
      batch = batches.assemble(sequences, np.arange(len(sequences)), max(s.length for s in sequences), pad)
      logits = model(input_ids=tensor(batch["tokens"]), attention_mask=tensor(batch["mask"])).logits
      token_ll = torch.log_softmax(logits.float(), -1).gather(-1, tensor(batch["targets"])[..., None])[..., 0].numpy()
      scored = batch["loss_mask"].astype(bool)
      for i, (e, k) in enumerate(pairs):
        logliks[e, k], valid[e, k] = token_ll[i][scored[i]].mean(), True
  return time.perf_counter() - start, option_distribution(logliks, valid)


def main(argv: list[str]) -> None:
  del argv
  with tempfile.TemporaryDirectory() as root:
    bench(os.path.join(root, "model"), os.path.join(root, "data"), os.path.join(root, "work"))


def bench(model_dir: str, data_dir: str, workdir: str) -> None:
  """Builds the model and data, runs both sides and prints the figures."""
  import torch

  model = save_random_llama(model_dir, FLAGS.d_model, FLAGS.layers, FLAGS.vocab)
  sources = write_data(model_dir, data_dir)
  print(f"devices: {jax.device_count()} x {jax.devices()[0].platform}; torch threads: {torch.get_num_threads()}")
  print(
    f"model: Llama d_model {FLAGS.d_model}, {FLAGS.layers} layers, vocab {FLAGS.vocab}, float32, "
    f"{sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters"
  )

  ours_s, chunks = run_stage(model_dir, sources, workdir)
  layout = Layout(workdir)
  frame = examples.read(layout.examples)
  detection = pd.read_parquet(layout.detection).set_index(col.ID).loc[frame["id"]]
  options = [list(o) for o in detection[col.MC_OPTIONS]]
  tokenizer = hf.load_tokenizer(model_dir)
  theirs_s, probs = hf_detect(model, tokenizer, frame, options)

  n = len(frame)
  print(
    f"examples: {n} in {len(DATASETS)} data sets, prompts {frame['prompt_length'].min()}-"
    f"{frame['prompt_length'].max()} tokens; per example {FLAGS.repeats} x {NUM_SAMPLES} samples of up to "
    f"{FLAGS.max_new_tokens} tokens at temperature {TEMPERATURE} + {len(options[0])} MC options"
  )
  print(f"ilp detect stage, whole run:       {ours_s:7.1f} s {n / ours_s:7.1f} examples/s")
  rates = {"whole run": n / ours_s}
  if len(chunks) >= 2:  # from the end of the first chunk (compiled) to the end of the last
    later, seconds = sum(c for c, _ in chunks[1:]), chunks[-1][1] - chunks[0][1]
    rates["after chunk 1"] = later / seconds
    print(f"ilp, after chunk 1 ({later} ex.):   {seconds:7.1f} s {later / seconds:7.1f} examples/s")
  print(f"transformers generate + forward:   {theirs_s:7.1f} s {n / theirs_s:7.1f} examples/s")
  print("speed-up vs transformers: " + ", ".join(f"{r * theirs_s / n:.2f}x ({name})" for name, r in rates.items()))
  gap = np.abs(detection[col.SFT_P_TRUE].to_numpy() - probs[:, 0]).max()
  print(f"P(true option), ilp vs transformers: max |difference| {gap:.1e} (the same computation)")


if __name__ == "__main__":
  app.run(main)
