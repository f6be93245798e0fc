"""What the training stages share: where their initial model and tokenizer come from."""
from __future__ import annotations

import os

import ml_collections

from ilp.model import checkpoint, hf

FINAL_DIR = "final"


def init_dir(section: ml_collections.ConfigDict, workdir: str, field: str) -> str:
  """`init_from` names a stage ("model_init", "pretrain") or a checkpoint directory."""
  if section.init_from == "model_init":
    return os.path.join(workdir, "model_init")
  if section.init_from == "pretrain":
    return os.path.join(workdir, "pretrain", FINAL_DIR)
  if not os.path.isabs(section.init_from):
    raise ValueError(f"config field '{field}.init_from': '{section.init_from}' is neither 'model_init', "
                     f"'pretrain' nor an absolute checkpoint path")
  return section.init_from


def tokenizer(config: ml_collections.ConfigDict, model_dir: str):
  """`data.tokenizer` when set, else the tokenizer stored with the initial model."""
  return hf.load_tokenizer(config.data.tokenizer or checkpoint.tokenizer_dir(model_dir))


def outputs(workdir: str, name: str) -> list[str]:
  return [os.path.join(workdir, name, FINAL_DIR), os.path.join(workdir, name, "summary.json")]
