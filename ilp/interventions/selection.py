"""What the interventions share: the knowledge collection and its retriever, queries built from
examples, SFT records rewritten for an arm, and the arm's record of what it selected."""

from __future__ import annotations

import functools
import json
import os
from typing import Any, Iterable, Sequence

import pandas as pd

from ilp import fileio
from ilp.data import loaders, similarity
from ilp.data.records import PREREQUISITES, SFTRecord
from ilp.data.retrieval import Retriever
from ilp.detection import columns as col

QUERIES = ("entities", "prompt", "prompt_and_answer")  # what a retrieval query is built from (`CPTSettings.query`)


def queries(
  rows: pd.DataFrame, meta: pd.Series, mode: str, prompts: Sequence[str], min_df: int
) -> list[tuple[str, str]]:
  """(example id, query) pairs for each example of `rows` and each of its prerequisite questions.

  `mode` "entities": the question's slot fillers (words in fewer than `min_df` of `prompts`, the
  run's SFT prompts with those questions: the entities it is about; the whole question when it has
  none); "prompt": the question's words; "prompt_and_answer": the question with its supervised
  answer (the example's reference, a prerequisite's response). Only the last reads an answer: the
  paper retrieves background about the entity, and a real collection does not hold the answer
  verbatim, so the first two are the honest ones; the last is kept to measure what it leaked."""
  asked = [(row.id, row.prompt, row.reference) for row in rows.itertuples()]
  for row, raw in zip(rows.itertuples(), meta):
    asked += [(row.id, p["prompt"], p["response"]) for p in json.loads(raw).get(PREREQUISITES) or []]
  if mode == "prompt_and_answer":
    return [(ident, f"{prompt} {answer}") for ident, prompt, answer in asked]
  if mode == "prompt":
    return [(ident, prompt) for ident, prompt, _ in asked]
  pool = [similarity.words(p) for p in list(prompts) + [prompt for _, prompt, _ in asked]]
  fillers = similarity.patterns(pool, min_df).slots[len(prompts) :]
  return [(ident, " ".join(found) or prompt) for (ident, prompt, _), found in zip(asked, fillers)]


def states(text: str, answer: str) -> bool:
  """Whether `text` contains `answer` as a whole-word sequence (case and spacing ignored): the
  verification rule for "a document states the supervised answer"."""
  norm = lambda s: f" {' '.join(s.lower().split())} "
  return norm(answer) in norm(text)


class Collection:
  """The knowledge documents (`data.knowledge`) with a BM25 index."""

  def __init__(self, sources: Sequence[dict[str, Any]], index_dir: str | None = None):
    self.documents = loaders.load_corpus(sources)
    self.retriever = Retriever([d.text for d in self.documents], directory=index_dir)

  def retrieve(self, pairs: Sequence[tuple[str, str]], per_query: int) -> pd.DataFrame:
    """One row per (example, query, document) hit: id, query, document, text, score, rank."""
    hits = self.retriever.search([q for _, q in pairs], per_query)
    rows = [
      {
        "id": ident,
        "query": query,
        "document": self.documents[d].id,
        "text": self.documents[d].text,
        "score": score,
        "rank": rank,
      }
      for (ident, query), found in zip(pairs, hits)
      for rank, (d, score) in enumerate(found)
    ]
    return pd.DataFrame(rows, columns=["id", "query", "document", "text", "score", "rank"])


@functools.lru_cache(maxsize=4)
def _collection(key: str, index_dir: str | None) -> Collection:
  return Collection(json.loads(key), index_dir)


def collection(sources: Sequence[dict[str, Any]], index_dir: str | None = None) -> Collection:
  """The indexed collection of `sources`, read once per process (every retrieving arm of a launch
  uses the same `data.knowledge`) and indexed once for all processes when `index_dir` is given."""
  return _collection(json.dumps(list(sources), sort_keys=True), index_dir)


def examples_with_meta(context: Any, ids: Iterable[str]) -> tuple[pd.DataFrame, pd.Series]:
  """The baseline's attribution rows of `ids` with the examples' meta (JSON) alongside."""
  frame = pd.read_parquet(context.baseline.examples, columns=["id", "meta"]).set_index("id")
  rows = context.attribution[context.attribution[col.ID].isin(list(ids))]
  return rows, frame.loc[rows[col.ID], "meta"]


def write_records(records: Sequence[SFTRecord], path: str) -> None:
  """SFT records as JSONL in the messages form, which every loader reads back unchanged."""
  with fileio.atomic_file(path) as tmp, open(tmp, "w") as f:
    for r in records:
      f.write(
        json.dumps({"id": r.id, "messages": list(r.messages), "dataset": r.dataset, "phase": r.phase, "meta": r.meta})
        + "\n"
      )


def write_summary(context: Any, summary: dict[str, Any]) -> None:
  fileio.write_json_atomic(os.path.join(context.arm.intervention, "summary.json"), summary)
