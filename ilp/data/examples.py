"""The SFT examples as training sees them: every record tokenised once, in one table.

The sft stage writes this table (`Layout.examples`); detection and diagnosis read it instead of
re-reading and re-tokenising the sources, so every stage agrees on an example's id, text and
tokens. Columns: id, dataset, phase, prompt (the prompt turns' text), response, meta (JSON),
tokens (prompt then response and EOS), prompt_length, length.
"""

from __future__ import annotations

import json
import os
from typing import Any, Sequence

import numpy as np
import pandas as pd

from ilp import fileio
from ilp.data import dev, loaders
from ilp.data.config import DataConfig
from ilp.data.records import DataError, SFTRecord
from ilp.data.tokenize import TokenizedExample, tokenize_sft
from ilp.typed import ConfigError

ID_COLUMNS = ("id", "dataset", "phase", "meta")


def prompt_text(messages: Sequence[dict[str, str]]) -> str:
  """The prompt turns' contents, one per line: what the diagnosis compares between examples."""
  return "\n".join(m["content"] for m in messages)


def table(records: Sequence[SFTRecord], tokenized: Sequence[TokenizedExample]) -> pd.DataFrame:
  """One row per tokenised example (records dropped as over-long have none)."""
  rows = [records[e.record] for e in tokenized]
  return pd.DataFrame(
    {
      "id": [r.id for r in rows],
      "dataset": [r.dataset for r in rows],
      "phase": np.asarray([r.phase for r in rows], np.int64),
      "prompt": [prompt_text(r.prompt_messages) for r in rows],
      "response": [r.response for r in rows],
      "meta": [json.dumps(r.meta, sort_keys=True) for r in rows],
      "tokens": [e.tokens for e in tokenized],
      "prompt_length": np.asarray([e.prompt_length for e in tokenized], np.int64),
      "length": np.asarray([e.length for e in tokenized], np.int64),
    }
  )


def check(config: Any, data: DataConfig) -> None:
  """Reads and validates every SFT record of `data` (the sources that exist already), and checks
  that the data sets `config.sft.phases` names are in them."""
  if not data.sft:
    return
  records = loaders.load_sft(data.sft, data.extra_fields)
  if not records:
    raise DataError(f"data.sft: the sources hold no records ({', '.join(str(s['path']) for s in data.sft)})")
  known = {r.dataset for r in records}
  for k, phase in enumerate(config.sft.phases):
    missing = sorted(set(phase.datasets) - known)
    if missing:
      raise ConfigError(
        f"sft.phases[{k}].datasets",
        f"unknown dataset(s) {', '.join(missing)} (the data has: {', '.join(sorted(known))})",
      )


def build(
  data: DataConfig, tokenizer: Any, sources: Sequence[dict] | None = None
) -> tuple[pd.DataFrame, dict[str, int]]:
  """Reads `sources` (default `data.sft`; e.g. `data.dev`) and tokenises them with `data.template`:
  the table and the tokenisation counts."""
  records = loaders.load_sft(data.sft if sources is None else sources, data.extra_fields)
  tokenized, report = tokenize_sft(records, tokenizer, data.max_length, data.template, data.overlong)
  return table(records, tokenized), report


def build_with_dev(data: DataConfig, tokenizer: Any) -> tuple[pd.DataFrame, dict[str, int], pd.DataFrame | None]:
  """The training examples, their tokenisation counts, and the dev set the controls watch:
  `data.dev`'s records when given, else the `data.dev_fraction` held out by `dev.held_out`'s hash
  rule (None when neither asks for one)."""
  frame, report = build(data, tokenizer)
  if data.dev:
    return frame, report, build(data, tokenizer, data.dev)[0]
  if data.dev_fraction <= 0:
    return frame, report, None
  held = dev.held_out(frame["id"].tolist(), data.dev_fraction)
  return frame[~held].reset_index(drop=True), report, frame[held].reset_index(drop=True)


def write(frame: pd.DataFrame, path: str) -> None:
  fileio.write_parquet_atomic(frame, path)


def read(path: str) -> pd.DataFrame:
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path}: no examples table (the sft stage writes it; run it first)")
  return pd.read_parquet(path)


def tokenized(frame: pd.DataFrame) -> list[TokenizedExample]:
  """The table's token sequences; `record` is the row index."""
  return [
    TokenizedExample(i, np.asarray(tokens, np.int32), int(p))
    for i, (tokens, p) in enumerate(zip(frame["tokens"], frame["prompt_length"]))
  ]


def prompts(frame: pd.DataFrame) -> list[np.ndarray]:
  """Each example's prompt tokens (what a model is asked)."""
  return [np.asarray(tokens[:p], np.int32) for tokens, p in zip(frame["tokens"], frame["prompt_length"])]


def check_sources(config: Any, data: DataConfig) -> None:
  """Reads and validates the other sources a run may use (those that exist already): the dev
  and held-out records, and the knowledge, general and held-out text collections."""
  del config
  for name in ("dev", "heldout", "replay"):
    if getattr(data, name):
      loaders.load_sft(getattr(data, name), data.extra_fields)
  for name in ("knowledge", "general", "heldout_text"):
    if getattr(data, name):
      loaders.load_corpus(getattr(data, name))
