"""Tiny SFT data sets and run configs for the training-pipeline tests."""

from __future__ import annotations

import json
import os

import numpy as np

from configs import tiny_test
from tests import hf_models

VOCAB = hf_models.BASE["vocab_size"]


def write_sft_jsonl(path: str, dataset: str, phase: int, n: int, seed: int) -> list[dict]:
  """n prompt/response records over the tiny tokenizer's words `w3..w95`."""
  rng = np.random.default_rng(seed)
  rows = []
  for i in range(n):
    prompt = " ".join(f"w{t}" for t in rng.integers(5, VOCAB, int(rng.integers(2, 8))))
    response = " ".join(f"w{t}" for t in rng.integers(5, VOCAB, int(rng.integers(1, 6))))
    rows.append(
      {
        "id": f"{dataset}-{i}",
        "prompt": prompt,
        "response": response,
        "dataset": dataset,
        "phase": phase,
        "meta": {"k": i % 3},
      }
    )
  with open(path, "w") as f:
    for row in rows:
      f.write(json.dumps(row) + "\n")
  return rows


def make_inputs(directory: str, per_dataset: int = 20) -> dict[str, str]:
  """Two data sets for two sequential phases, and a tokenizer directory."""
  os.makedirs(directory, exist_ok=True)
  paths = {
    "a": os.path.join(directory, "a.jsonl"),
    "b": os.path.join(directory, "b.jsonl"),
    "tokenizer": os.path.join(directory, "tokenizer"),
  }
  write_sft_jsonl(paths["a"], "a", 1, per_dataset, seed=1)
  write_sft_jsonl(paths["b"], "b", 2, per_dataset, seed=2)
  hf_models.save_tiny_tokenizer(paths["tokenizer"])
  return paths


def write_config(path, paths: dict[str, str], *lines: str) -> None:
  """A config file for launch.py: `sft_config(paths)` as `c`, then `lines` (statements on `c`)."""
  body = "".join(f"  {line}\n" for line in lines)
  path.write_text(
    f"from tests import sft_data\nPATHS = {paths!r}\ndef get_config():\n"
    f"  c = sft_data.sft_config(PATHS)\n{body}  return c\n"
  )


def sft_config(paths: dict[str, str], **sft_overrides):
  config = tiny_test.get_config()
  config.model.vocab_size = VOCAB
  config.stages = ("init_model", "sft")
  config.data.sft = ({"path": paths["a"]}, {"path": paths["b"]})
  config.data.tokenizer = paths["tokenizer"]
  config.data.buckets = (16, 24)
  config.data.template.update(turn="{content} ", generation_prefix="w4 ")
  config.sft.update(batch_size=8, epochs=2, log_every_steps=2)
  config.sft.optimizer.learning_rate = 3e-3
  config.sft.checkpoint.update(every_steps=3, async_save=False)
  config.sft.update(sft_overrides)
  return config


def run_killed_and_resumed(monkeypatch, config, workdir: str, kill_at: int) -> None:
  """Runs `config` into `workdir`, killed (KeyboardInterrupt) as the dynamics log receives step
  `kill_at`, then again with the same command, which resumes."""
  import pytest

  from ilp import pipeline
  from ilp.train import dynamics

  real_add = dynamics.DynamicsWriter.add_batch

  def crash(self, step, *args, **kwargs):
    if step == kill_at:
      raise KeyboardInterrupt("simulated kill")
    return real_add(self, step, *args, **kwargs)

  monkeypatch.setattr(dynamics.DynamicsWriter, "add_batch", crash)
  with pytest.raises(KeyboardInterrupt):
    pipeline.run(config, workdir)
  monkeypatch.setattr(dynamics.DynamicsWriter, "add_batch", real_add)
  pipeline.run(config, workdir)


def assert_same_final_params(a: str, b: str) -> None:
  """The `sft/final` models of work directories `a` and `b` are bit-identical."""
  import jax

  from ilp import parallel
  from ilp.model import checkpoint

  mesh = parallel.make_mesh((1, 1, 1), jax.devices()[:1])
  _, _, pa = checkpoint.load_params(os.path.join(a, "sft", "final"), mesh)
  _, _, pb = checkpoint.load_params(os.path.join(b, "sft", "final"), mesh)
  for x, y in zip(jax.tree.leaves(pa), jax.tree.leaves(pb)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
