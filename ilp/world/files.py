"""A world on disk, in the formats a user would bring: text corpora, JSONL records, an HF tokenizer
directory; and the ground truth, which only the evaluation reads back."""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Iterable

import numpy as np

from ilp import fileio
from ilp.data.tokenizer_training import save_word_level
from ilp.world import arm_data, generate
from ilp.world.config import GROUPS, WorldConfig
from ilp.world.templates import vocabulary

GROUND_TRUTH = "ground_truth.jsonl"


def _text(path: str, documents: Iterable[str]) -> None:
  with open(path, "w") as f:
    f.write("\n\n".join(documents) + "\n")


def _jsonl(path: str, rows: Iterable[dict]) -> None:
  with open(path, "w") as f:
    f.writelines(json.dumps(row) + "\n" for row in rows)


def write(cfg: WorldConfig, directory: str) -> dict[str, Any]:
  """Writes the world into `directory` atomically and returns its summary (also `world.json`)."""
  w = generate.build(cfg)
  rng = np.random.default_rng([cfg.seed, 1])  # file order and the general corpus
  extra = np.random.default_rng([cfg.seed, 2])  # the arms' data
  documents = arm_data.knowledge(w, extra)
  dev, heldout = arm_data.questions(w, extra)
  records = w.records
  if w.wording is not None:  # answers as sentences, after every draw of the short world
    records, dev, heldout = (w.wording.rewrite(rows) for rows in (w.records, dev, heldout))
  if cfg.free_form:
    records, dev, heldout = (w.phrasing.rewrite(rows, w.fixed) for rows in (records, dev, heldout))
  summary = {
    "config": dataclasses.asdict(cfg),
    "people": w.people,
    "pretrain_documents": len(w.docs),
    "sft_examples": len(w.records),
    "groups": {g: sum(t["group"] == g for t in w.truth) for g in GROUPS},
    "replay_documents": len(w.replay),
    "knowledge_documents": len(documents),
    "dev_questions": len(dev),
    "heldout_questions": len(heldout),
  }
  order = rng.permutation(len(w.docs))
  with fileio.atomic_directory(directory) as tmp:
    _text(os.path.join(tmp, "pretrain.txt"), (w.docs[i] for i in order))
    _text(os.path.join(tmp, "general.txt"), arm_data.general_corpus(cfg, rng))
    replay_order = np.random.default_rng([cfg.seed, 4]).permutation(len(w.replay))  # SFT's replay (converged)
    _jsonl(os.path.join(tmp, "replay.jsonl"), (w.replay[i] for i in replay_order))
    for name, rows in (("knowledge.jsonl", documents), ("dev.jsonl", dev), ("heldout.jsonl", heldout)):
      _jsonl(os.path.join(tmp, name), rows)
    for phase in (1, 2):
      rows = [rec for rec in records if rec["phase"] == phase]
      _jsonl(os.path.join(tmp, f"sft_phase{phase}.jsonl"), (rows[i] for i in rng.permutation(len(rows))))
    _jsonl(os.path.join(tmp, GROUND_TRUTH), w.truth)
    with open(os.path.join(tmp, "world.json"), "w") as f:
      json.dump(summary, f, indent=2)
    save_word_level(vocabulary(cfg, w.people), os.path.join(tmp, "tokenizer"))
  return summary


def load_ground_truth(directory: str):
  """The planted group and cause of every SFT example of a written world (evaluation only)."""
  import pandas as pd

  return pd.read_json(os.path.join(directory, GROUND_TRUTH), lines=True, dtype={"cause": object})
