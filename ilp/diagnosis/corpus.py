"""What the pre-training corpus says about each example (paper §6: OLMo2's SFT data measured
against its open pre-training corpus, Dolma, for missing and conflicting knowledge).

An example is *about* its prompt's slot fillers (rare words: names, entities) and its answer is
of the *kind* given to prompts of the same template (or of templates sharing answers with it).
BM25 (`ilp.data.retrieval`, bm25s) retrieves the `top_k` documents for a query made of the slot
fillers that occur in the corpus at all; those that mention every one of them are the example's
*entity documents*. One either
states its answer (every answer word present: support), states another answer of the same kind
(a competing answer word: contradiction), or neither; the share of the answer's words that some
entity document states (`corpus_answer_coverage`) tells a composite answer built from stated
facts from one that pre-training never stated.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from ilp.data import retrieval, similarity
from ilp.detection import columns as col


def evidence(
  patterns: similarity.Patterns,
  answers: Sequence[list[str]],
  kinds: np.ndarray,
  corpus: retrieval.Corpus,
  top_k: int,
) -> pd.DataFrame:
  """Per example, given its tokenised answer (`similarity.words`) and answer kind
  (`similarity.answer_kinds`): `corpus_entity_docs`, `corpus_support`, `corpus_contradiction` and
  `corpus_answer_coverage` (NaN for an answer without word characters)."""
  documents, retriever = corpus.texts, corpus.retriever()
  doc_words: dict[int, set[str]] = {}
  words_of = lambda d: doc_words.setdefault(d, set(similarity.words(documents[d])))
  kind_words: dict[int, set[str]] = {}
  for k, answer in zip(kinds, answers):
    kind_words.setdefault(int(k), set()).update(answer)
  n = len(answers)
  out = {name: np.zeros(n, np.int64) for name in (col.CORPUS_ENTITY_DOCS, col.CORPUS_SUPPORT, col.CORPUS_CONTRADICTION)}
  coverage = np.full(n, np.nan)
  # a slot filler no document holds ("describe" in a rare phrasing) cannot be what the corpus is about
  about = [[w for w in dict.fromkeys(slots) if retriever.knows(w)] for slots in patterns.slots]
  hits = retriever.search([" ".join(slots) for slots in about], top_k)
  for e, (slots, answer) in enumerate(zip(about, answers)):
    target = set(answer)
    content = {w for w in target if similarity.is_word(w)}
    competitors = kind_words[int(kinds[e])] - target
    stated: set[str] = set()
    for d, _ in hits[e] if slots else ():
      text = words_of(d)
      if not set(slots) <= text:
        continue
      out[col.CORPUS_ENTITY_DOCS][e] += 1
      stated |= content & text
      if target <= text:
        out[col.CORPUS_SUPPORT][e] += 1
      elif competitors & text:
        out[col.CORPUS_CONTRADICTION][e] += 1
    if content:
      coverage[e] = len(stated) / len(content)
  return pd.DataFrame({**out, col.CORPUS_ANSWER_COVERAGE: coverage})
