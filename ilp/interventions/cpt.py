"""Retrieval-based continual pre-training, shared by the knowledge (M-I) and calibration (M-II)
arms: retrieve documents for the baseline's examples of the target causes from `data.knowledge`
(BM25), keep those the intervention accepts, continue pre-training the base model on a mixture
of `data.general` and the kept documents, then redo SFT from the result.

SFT is redone as the baseline's, training to convergence included when it is on: CPT changes only
the starting model, and the arm's extra compute is matched by its equal-compute "more epochs"
control (`ilp.interventions.equal_compute`), not by fixing its epochs."""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Callable

import pandas as pd

from ilp import fileio
from ilp.detection import columns as col
from ilp.interventions import selection
from ilp.typed import check


@dataclasses.dataclass(frozen=True)
class CPTSettings:
  """Args shared by both arms: `per_query` documents retrieved per query (the paper: ~20 per
  entity); `weight` the retrieved documents' share of the mixture (the paper: 0.2, general text
  0.8); `steps`, `learning_rate` and `warmup_steps` of the continual pre-training (the other
  training settings are the baseline's `pretrain` section)."""

  causes: tuple[str, ...] = ("I",)  # documents are retrieved for the baseline's examples of these causes
  per_query: int = 20  # documents retrieved per query
  weight: float = 0.2  # the retrieved documents' share of the mixture (general text: the rest)
  steps: int = 200  # steps of the continual pre-training
  steps_fraction: float = 0.0  # > 0: instead, this share of the baseline's SFT optimizer steps (its summary)
  learning_rate: float = 1e-3  # its peak learning rate
  warmup_steps: int = 20  # its warmup steps
  query: str = "entities"  # retrieval queries from: one of selection.QUERIES (never the answer, but the last)

  def __post_init__(self):
    check(self.per_query >= 1, "per_query", f"must be >= 1, got {self.per_query}")
    check(0 < self.weight <= 1, "weight", f"must be in (0, 1], got {self.weight}")
    check(self.steps >= 1, "steps", f"must be >= 1, got {self.steps}")
    check(self.steps_fraction >= 0, "steps_fraction", f"must be >= 0 (0: `steps`), got {self.steps_fraction}")
    check(self.learning_rate > 0, "learning_rate", f"must be > 0, got {self.learning_rate}")
    check(self.warmup_steps >= 0, "warmup_steps", f"must be >= 0, got {self.warmup_steps}")
    check(self.query in selection.QUERIES, "query", f"'{self.query}' is not one of {selection.QUERIES}")


def check_config(config: Any, settings: CPTSettings) -> None:
  """The baseline config gives what the arm needs (run before anything is written)."""
  check(
    bool(config.data.knowledge), "data.knowledge", "the knowledge and calibration arms retrieve from it: give sources"
  )
  check(
    settings.weight == 1 or bool(config.data.general),
    "data.general",
    "is empty: give general text to mix with the retrieved documents (or settings.weight=1)",
  )


Accept = Callable[[pd.DataFrame], pd.Series]  # retrieved hits (with the example's reference) -> keep?


def prepare(context: Any, settings: CPTSettings, config: Any, accept: Accept) -> Any:
  """Writes the arm's retrieved corpus and selection, and returns `config` with continual
  pre-training from the base model on general + retrieved text before SFT."""
  data = config.data
  rows, meta = selection.examples_with_meta(context, context.selected(settings.causes)["id"])
  prompts = context.attribution[col.PROMPT].tolist()  # every detected example's question
  min_df = config.diagnose.signals.filler_df(len(prompts))  # the diagnosis' slot fillers: the same entities
  pairs = selection.queries(rows, meta, settings.query, prompts, min_df)
  hits = selection.collection(data.knowledge, data.index_directory).retrieve(pairs, settings.per_query)
  hits = hits.merge(rows[["id", "reference"]], on="id", how="left")
  hits["kept"] = accept(hits) if len(hits) else pd.Series(dtype=bool)
  kept = hits[hits["kept"]].drop_duplicates("document")
  directory = context.arm.intervention
  corpus = os.path.join(directory, "retrieved.jsonl")
  fileio.write_parquet_atomic(hits.drop(columns=["text"]), os.path.join(directory, "selection.parquet"))
  with fileio.atomic_file(corpus) as tmp:
    kept[["document", "text"]].rename(columns={"document": "id"}).to_json(tmp, orient="records", lines=True)
  selection.write_summary(
    context,
    {
      "examples": len(rows),
      "queries": int(hits["query"].nunique()) if len(hits) else 0,
      "hits": len(hits),
      "documents_kept": len(kept),
      "documents_rejected": int(hits.loc[~hits["kept"], "document"].nunique()) if len(hits) else 0,
    },
  )
  check(
    len(kept) > 0,
    "data.knowledge",
    f"no document retrieved for the {len(rows)} examples of causes {settings.causes}: nothing to pre-train on",
  )
  general = [{**s, "weight": (1 - settings.weight) / len(data.general)} for s in data.general]
  corpora = tuple(s for s in general if s["weight"] > 0) + (
    {"path": corpus, "format": "jsonl", "weight": settings.weight},
  )
  pretrain = dataclasses.replace(
    config.pretrain,
    init_from=context.base_model,
    steps=_steps(context, settings),
    optimizer=dataclasses.replace(
      config.pretrain.optimizer, learning_rate=settings.learning_rate, warmup_steps=settings.warmup_steps
    ),
  )
  return dataclasses.replace(
    config,
    stages=("pretrain",) + config.stages,
    pretrain=pretrain,
    data=dataclasses.replace(data, corpora=corpora),
    sft=dataclasses.replace(config.sft, init_from="pretrain"),
    detect=dataclasses.replace(config.detect, base="pretrain" if config.detect.base else ""),
  )


def _steps(context: Any, settings: CPTSettings) -> int:
  """The continual pre-training's steps: `steps`, or `steps_fraction` of the baseline's SFT steps."""
  if not settings.steps_fraction:
    return settings.steps
  with open(context.baseline.summary("sft")) as f:
    return max(1, round(settings.steps_fraction * int(json.load(f)["steps"])))
