"""Near-duplicate prompts, prompt templates and answer kinds, from word n-gram TF-IDF (scikit-learn;
sparse, no Python loops over pairs) and, optionally, a model's embeddings of the prompts.

Near-duplicate search is an all-pairs similarity search. Candidates are the pairs that share at
least one *informative* n-gram (document frequency 2..`max_df`); the cosine of each candidate
pair is then computed exactly. The filter drops pairs that share only common n-grams: mostly one
template asked about two different things, which are not paraphrases; paraphrases and duplicates
share a rare word (the entity) and are kept. It keeps the work near-linear: at most `max_df`
candidates per n-gram occurrence (docs/measurements.md "Diagnosis benchmark" measures what it drops).
"""

from __future__ import annotations

import dataclasses
import re
from typing import Sequence

import numpy as np
from scipy import sparse
from scipy.sparse import csgraph

_WORD = re.compile(r"\w+|[^\w\s]")
_WORDLIKE = re.compile(r"\w+")


def words(text: str) -> list[str]:
  return _WORD.findall(text.lower())


def is_word(token: str) -> bool:
  """Whether a `words` token is a word (not punctuation)."""
  return _WORDLIKE.fullmatch(token) is not None


def _ngrams(tokens: list[str], n_max: int) -> list[str]:
  return [" ".join(tokens[i : i + n]) for n in range(1, n_max + 1) for i in range(len(tokens) - n + 1)]


@dataclasses.dataclass(frozen=True)
class TfIdf:
  matrix: sparse.csr_matrix  # [docs, features], rows L2-normalised
  df: np.ndarray  # [features] document frequency


def tfidf(tokenized: Sequence[list[str]], ngram: int = 1) -> TfIdf:
  """Sublinear-tf, smoothed-idf, L2-normalised TF-IDF over word 1..`ngram`-grams of tokenised texts
  (`words`), by scikit-learn's `TfidfVectorizer` (the texts come tokenised, so its own tokenizer and
  lower-casing are off)."""
  from sklearn.feature_extraction.text import TfidfVectorizer

  vectorizer = TfidfVectorizer(
    analyzer=lambda tokens: _ngrams(tokens, ngram), sublinear_tf=True, smooth_idf=True, norm="l2", dtype=np.float64
  )
  if not any(tokenized):  # scikit-learn refuses an empty vocabulary
    return TfIdf(sparse.csr_matrix((len(tokenized), 1)), np.zeros(1, np.int64))
  matrix = sparse.csr_matrix(vectorizer.fit_transform(list(tokenized)))
  return TfIdf(matrix, np.bincount(matrix.indices, minlength=matrix.shape[1]))


def near_duplicate_pairs(
  vectors: TfIdf, threshold: float, max_df: int, slots: sparse.csr_matrix | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Pairs (i < j) with cosine >= threshold among those sharing an n-gram of df in 2..max_df.

  With `slots` ([docs, words] binary: each prompt's slot fillers, see `patterns`), a pair whose
  prompts *both* have a slot filler the other lacks is one template about two different things
  ("capital of France?" / "capital of Spain?"), not a near-duplicate, however long the template.
  """
  informative = (vectors.df >= 2) & (vectors.df <= max_df)
  shared = vectors.matrix[:, informative]
  shared.data[:] = 1.0
  candidates = sparse.triu(shared @ shared.T, k=1).tocoo()
  i, j = candidates.row.astype(np.int64), candidates.col.astype(np.int64)
  if not len(i):
    return i, j, np.zeros(0)
  cosine = row_dots(vectors.matrix, i, vectors.matrix, j)
  keep = cosine >= threshold
  if slots is not None:
    keep &= ~different_things(slots, i, j)
  return i[keep], j[keep], cosine[keep]


def different_things(slots: sparse.csr_matrix, i: np.ndarray, j: np.ndarray) -> np.ndarray:
  """Per pair, whether both prompts have a slot filler (`slots`: [docs, words] binary) the other
  lacks: one template asked about two different things."""
  both = row_dots(slots, i, slots, j)
  count = np.asarray(slots.sum(axis=1)).ravel()
  return (count[i] > both) & (count[j] > both)


def embedding_pairs(
  embeddings: np.ndarray, threshold: float, slots: sparse.csr_matrix | None = None, max_neighbours: int = 50
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Pairs (i < j) whose centred embeddings have cosine >= threshold, among each prompt's
  `max_neighbours` nearest (scikit-learn's brute-force k-nearest neighbours, computed in chunks),
  less those `different_things` rules out: paraphrases that share few words but read alike.
  Centring (subtracting the mean embedding) removes the direction every prompt shares, which
  otherwise makes all cosines high. The cap bounds memory at prompts x `max_neighbours` pairs: an
  under-trained model embeds most prompts alike (100k prompts of the scale run: 37k neighbours
  above 0.8 each, billions of pairs), as `max_df` bounds the TF-IDF candidates."""
  from sklearn.neighbors import NearestNeighbors

  n = len(embeddings)
  if n < 2:
    return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0)
  centred = embeddings - embeddings.mean(0, keepdims=True)
  index = NearestNeighbors(metric="cosine", algorithm="brute").fit(centred)
  distances, neighbours = index.kneighbors(n_neighbors=min(max_neighbours, n - 1))  # a prompt is not its own
  i = np.repeat(np.arange(n), neighbours.shape[1])
  j = neighbours.ravel().astype(np.int64)
  cosine = 1.0 - distances.ravel()
  keep = cosine >= threshold
  i, j, cosine = np.minimum(i, j)[keep], np.maximum(i, j)[keep], cosine[keep]
  _, first = np.unique(i * n + j, return_index=True)  # found from both ends: once
  i, j, cosine = i[first], j[first], cosine[first]
  if slots is not None:
    keep = ~different_things(slots, i, j)
    i, j, cosine = i[keep], j[keep], cosine[keep]
  return i, j, cosine


def groups(n: int, i: np.ndarray, j: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Near-duplicate groups (connected components of the pairs): per item its group id (-1 when
  it has no near-duplicate) and the group's size (1 when alone)."""
  graph = sparse.csr_matrix((np.ones(len(i)), (i, j)), shape=(n, n))
  _, labels = csgraph.connected_components(graph, directed=False)
  size = np.bincount(labels)[labels]
  return np.where(size > 1, labels, -1), size


def row_dots(a: sparse.csr_matrix, i: np.ndarray, b: sparse.csr_matrix, j: np.ndarray) -> np.ndarray:
  """a[i[k]] . b[j[k]] for every k, without densifying."""
  return np.asarray(a[i].multiply(b[j]).sum(axis=1)).ravel()


TEMPLATE_MIN_DF = 3  # default: words in fewer prompts are slot fillers, masked out of the template ...
TEMPLATE_MIN_SHARE = 0.01  # ... or in fewer than this share of them: an entity asked about a few times stays one


def filler_df(n: int, min_df: int = TEMPLATE_MIN_DF, min_share: float = TEMPLATE_MIN_SHARE) -> int:
  """The document frequency below which a word of `n` texts is a slot filler."""
  return max(min_df, int(np.ceil(min_share * n)))


@dataclasses.dataclass(frozen=True)
class Patterns:
  templates: list[str]  # each text with its slot fillers replaced by `#`
  slots: list[list[str]]  # the slot fillers of each text


def patterns(tokenized: Sequence[list[str]], min_df: int) -> Patterns:
  """Splits every tokenised text into a template and slot fillers: words in fewer than `min_df`
  texts (names, numbers, entities). The template's frequency measures how rare a prompt pattern
  is; the slot fillers say what a prompt is about. Frequencies count distinct texts: a question
  asked several times word for word is one text, so its entity stays a slot filler."""
  df: dict[str, int] = {}
  for tokens in {tuple(t) for t in tokenized}:
    for w in set(tokens):
      df[w] = df.get(w, 0) + 1
  rare = [[w for w in tokens if df[w] < min_df] for tokens in tokenized]
  templates = [" ".join(w if df[w] >= min_df else "#" for w in tokens) for tokens in tokenized]
  return Patterns(templates, rare)


def answer_kinds(templates: Sequence[str], answer_keys: Sequence[str]) -> np.ndarray:
  """Per example, its answer kind: templates that share an answer (normalised key) are one kind, so
  "where was # born ?" and "what is the birthplace of # ?" pool their cities, while a job
  question keeps its own (connected components of the template-answer graph)."""
  _, template_ids = np.unique(np.asarray(templates, dtype=object), return_inverse=True)
  _, answer_ids = np.unique(np.asarray(answer_keys, dtype=object), return_inverse=True)
  t, a = template_ids.max() + 1, answer_ids.max() + 1
  graph = sparse.csr_matrix((np.ones(len(templates)), (template_ids, t + answer_ids)), shape=(t + a, t + a))
  _, labels = csgraph.connected_components(graph, directed=False)
  return np.unique(labels[template_ids], return_inverse=True)[1]


def binary_matrix(rows: Sequence[Sequence[str]], vocab: dict[str, int]) -> sparse.csr_matrix:
  """[rows, vocab] 0/1 matrix of which vocabulary words each row holds (others are ignored)."""
  indptr, indices = [0], []
  for row in rows:
    indices.extend(sorted({vocab[w] for w in row if w in vocab}))
    indptr.append(len(indices))
  return sparse.csr_matrix(
    (np.ones(len(indices)), np.asarray(indices, np.int64), np.asarray(indptr, np.int64)),
    shape=(len(rows), max(len(vocab), 1)),
  )
