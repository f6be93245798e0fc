"""Lexical retrieval (the continual pre-training arms, the diagnosis's corpus evidence): BM25 through the
maintained `bm25s` library (Lucene's variant), not a hand-written scorer.

Texts are split on whitespace and lower-cased, with no stop-word removal and no stemming, so
that short entity names (`p17`, `c3`, model numbers, ticker symbols) stay terms; bm25s' default
tokenizer drops one-character tokens and English stop words. A term repeated in a query counts
once per occurrence, as in bm25s and Lucene's boolean queries.

An index is built once per collection: with a `directory` (`data.index_dir`) it is saved under
the collection's fingerprint (a SHA-256 of its texts and the BM25 parameters) and later runs, arms
and stages memory-map it from there instead of indexing again (a 1M-document collection: see
docs/measurements.md, retrieval benchmark). One index holds the whole collection: bm25s bakes the
collection-wide IDF into its term-document scores, so shards would score with their own IDF and
rank differently from one index; at the measured sizes one index fits in memory.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from typing import Sequence

import numpy as np

from ilp import fileio

MANIFEST = "fingerprint.json"  # in an index directory: what it was built from
TOKENS = r"(?u)\S+"  # bm25s' tokenizer splitting as `terms` does


def terms(text: str) -> list[str]:
  return text.lower().split()


class IndexMismatchError(fileio.ResumeError):
  """A saved index was built for other documents or parameters than the ones asked for."""


def fingerprint(texts: Sequence[str], k1: float, b: float) -> str:
  """SHA-256 of the collection (every text, in order) and the BM25 parameters."""
  h = hashlib.sha256(json.dumps({"k1": k1, "b": b, "documents": len(texts)}).encode())
  for text in texts:
    h.update(text.encode("utf-8", "surrogatepass"))
    h.update(b"\0")
  return h.hexdigest()


def _build(texts: Sequence[str], k1: float, b: float):
  import bm25s

  index = bm25s.BM25(k1=k1, b=b, method="lucene")
  tokens = bm25s.tokenize(list(texts), lower=True, token_pattern=TOKENS, stopwords=None, show_progress=False)
  index.index(tokens, show_progress=False)
  return index


def _saved(texts: Sequence[str], k1: float, b: float, directory: str):
  """The collection's index from `directory/<fingerprint>/`, memory-mapped, built and saved first
  when absent (atomically: a killed build leaves nothing to load)."""
  import bm25s

  key = fingerprint(texts, k1, b)
  path = os.path.join(directory, key[:16])
  manifest = os.path.join(path, MANIFEST)
  if not os.path.isdir(path):
    index = _build(texts, k1, b)
    os.makedirs(directory, exist_ok=True)
    with fileio.atomic_directory(path) as tmp:
      index.save(tmp, show_progress=False)
      fileio.write_json_atomic(
        os.path.join(tmp, MANIFEST), {"fingerprint": key, "documents": len(texts), "k1": k1, "b": b}
      )
  try:
    with open(manifest) as f:
      saved = json.load(f)
  except (OSError, ValueError) as e:
    raise IndexMismatchError(f"{manifest}: unreadable ({e}); delete {path} to index the collection again") from None
  if saved.get("fingerprint") != key:
    raise IndexMismatchError(
      f"{manifest}: this index was built for other documents ({saved.get('documents')} documents, fingerprint "
      f"{str(saved.get('fingerprint'))[:16]}) than the {len(texts)} asked for ({key[:16]}); delete {path}"
    )
  return bm25s.BM25.load(path, mmap=True, show_progress=False)


class Retriever:
  """BM25 over a fixed collection of texts (possibly empty: then nothing is ever found); with a
  `directory`, its index is saved there once and memory-mapped by every later retriever."""

  def __init__(self, texts: Sequence[str], k1: float = 1.5, b: float = 0.75, directory: str | None = None):
    self.size = len(texts)
    self._index = None
    if self.size:  # bm25s cannot index an empty corpus
      self._index = _saved(texts, k1, b, directory) if directory else _build(texts, k1, b)
    self._vocab = self._index.vocab_dict if self._index is not None else {}

  def knows(self, term: str) -> bool:
    """Whether any document holds `term` (as `terms` splits it)."""
    return term in self._vocab

  def scores(self, query: str) -> np.ndarray:
    """Every document's BM25 score for `query` (terms the collection lacks score nothing)."""
    known = [t for t in terms(query) if t in self._vocab]
    if not known:
      return np.zeros(self.size, np.float64)
    return np.asarray(self._index.get_scores(known), np.float64)

  def matches(self, query: str) -> tuple[np.ndarray, np.ndarray]:
    """The documents holding a term of `query` and their BM25 scores, summed over the query's
    terms' postings only (the index's term-document scores, read from its sparse columns): an
    entity query touches a few documents, not every one of a large collection. Postings longer
    than an eighth of the collection are summed densely (bm25s' `get_scores`), which is then faster."""
    known = [self._vocab[t] for t in terms(query) if t in self._vocab]
    if not known:
      return np.zeros(0, np.int64), np.zeros(0, np.float64)
    columns = self._index.scores
    spans = [(columns["indptr"][t], columns["indptr"][t + 1]) for t in known]
    if sum(b - a for a, b in spans) > self.size // 8:  # common terms: adding dense columns is cheaper
      dense = self.scores(query)
      found = np.flatnonzero(dense)
      return found.astype(np.int64), dense[found]
    docs = np.concatenate([columns["indices"][a:b] for a, b in spans])
    values = np.concatenate([columns["data"][a:b] for a, b in spans]).astype(np.float64)
    found, slot = np.unique(docs, return_inverse=True)
    return found.astype(np.int64), np.bincount(slot, weights=values, minlength=len(found))

  def search(self, queries: Sequence[str], k: int) -> list[list[tuple[int, float]]]:
    """Per query, up to `k` (document index, score) pairs with a positive score, best first
    (ties: lower index first)."""
    out = []
    for query in queries:
      docs, s = self.matches(query)
      keep = s > 0
      docs, s = docs[keep], s[keep]
      order = np.lexsort((docs, -s))[:k]
      out.append([(int(docs[i]), float(s[i])) for i in order])
    return out


@dataclasses.dataclass(frozen=True)
class Corpus:
  """A collection's texts and where its index is kept (None: built in memory each time)."""

  texts: Sequence[str]
  index_dir: str | None = None

  def retriever(self) -> Retriever:
    return Retriever(self.texts, directory=self.index_dir)
