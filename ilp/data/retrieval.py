"""Lexical retrieval (the continual pre-training arms, the diagnosis's corpus evidence): BM25 through the
maintained `bm25s` library (Lucene's variant), not a hand-written scorer.

Texts are split on whitespace and lower-cased, with no stop-word removal and no stemming, so
that short entity names (`p17`, `c3`, model numbers, ticker symbols) stay terms; bm25s' default
tokenizer drops one-character tokens and English stop words. A term repeated in a query counts
once per occurrence, as in bm25s and Lucene's boolean queries.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


def terms(text: str) -> list[str]:
  return text.lower().split()


class Retriever:
  """BM25 over a fixed collection of texts (possibly empty: then nothing is ever found)."""

  def __init__(self, texts: Sequence[str], k1: float = 1.5, b: float = 0.75):
    import bm25s

    self.size = len(texts)
    self._index = bm25s.BM25(k1=k1, b=b, method="lucene")
    if self.size:  # bm25s cannot index an empty corpus
      self._index.index([terms(t) for t in texts], show_progress=False)
    self._vocab = self._index.vocab_dict if self.size else {}

  def knows(self, term: str) -> bool:
    """Whether any document holds `term` (as `terms` splits it)."""
    return term in self._vocab

  def scores(self, query: str) -> np.ndarray:
    """Every document's BM25 score for `query` (terms the collection lacks score nothing)."""
    known = [t for t in terms(query) if t in self._vocab]
    if not known:
      return np.zeros(self.size, np.float64)
    return np.asarray(self._index.get_scores(known), np.float64)

  def search(self, queries: Sequence[str], k: int) -> list[list[tuple[int, float]]]:
    """Per query, up to `k` (document index, score) pairs with a positive score, best first
    (ties: lower index first)."""
    out = []
    for query in queries:
      s = self.scores(query)
      hits = np.flatnonzero(s > 0)  # few for entity queries: sort only those
      order = hits[np.lexsort((hits, -s[hits]))][:k]
      out.append([(int(i), float(s[i])) for i in order])
    return out
