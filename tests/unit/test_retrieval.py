"""BM25 retrieval (bm25s) against a brute-force BM25, and ranking among distractors."""

import math

import numpy as np
import pytest

from ilp.data.retrieval import Retriever, terms

DOCS = [
  "p1 was born in c1 .",
  "the birthplace of p1 is c1 .",
  "p2 was born in c1 .",
  "p2 works as a j3 .",
  "the code of p7 is z8 .",
  "the code of p8 is z8 . the code of p8 is z8 .",
  "c1 is a city in k2 .",
  "the weather in c1 is sunny today .",
]


def brute_force(query, docs, k1=1.5, b=0.75):
  """Lucene BM25: idf = ln(1 + (N - df + 0.5) / (df + 0.5)), tf part tf / (tf + k1 (1 - b + b dl / avgdl)),
  summed over the query's terms (a repeated term once per occurrence)."""
  tokenized = [terms(d) for d in docs]
  n, avgdl = len(docs), sum(map(len, tokenized)) / len(docs)
  out = np.zeros(n)
  for t in terms(query):
    df = sum(t in d for d in tokenized)
    if not df:
      continue
    idf = math.log(1 + (n - df + 0.5) / (df + 0.5))
    for i, d in enumerate(tokenized):
      tf = d.count(t)
      out[i] += idf * tf / (tf + k1 * (1 - b + b * len(d) / avgdl))
  return out


@pytest.mark.parametrize(
  "query",
  [
    "where was p1 born ? c1",
    "what is the code of p8 ? z8",
    "p2",
    "sunny weather",
    "the code of the p8 is THE z8",
    "P1 c1 unknown",
  ],
)
def test_scores_match_brute_force_bm25(query):
  np.testing.assert_allclose(Retriever(DOCS).scores(query), brute_force(query, DOCS), rtol=1e-5, atol=1e-6)


def test_the_entitys_documents_come_first_among_distractors():
  hits = Retriever(DOCS).search(["where was p1 born ? c1", "what is the code of p7 ?", "p1 c1"], k=3)
  assert hits[0][0][0] == 0 and 1 in {d for d, _ in hits[0]}
  assert {d for d, _ in hits[2][:2]} == {0, 1}  # the entity and its answer, without template words
  assert hits[1][0][0] == 4
  assert all(a[1] >= b[1] for a, b in zip(hits[0], hits[0][1:]))


def test_edge_cases():
  r = Retriever(DOCS)
  assert r.search(["", "unknown words only"], k=5) == [[], []]
  assert len(r.search(["the"], k=100)[0]) == sum("the" in terms(d) for d in DOCS)  # only positive scores
  assert r.search(["p1"], k=0) == [[]]
  tie = Retriever(["a x", "a x", "b"]).search(["x"], k=2)[0]
  assert [d for d, _ in tie] == [0, 1]
  assert Retriever([]).search(["p1", ""], k=3) == [[], []]
  assert Retriever(["", "p1 x"]).search(["p1"], k=3)[0][0][0] == 1


def test_a_saved_index_is_reused_memory_mapped_and_refused_for_other_documents(tmp_path):
  """Built once under the collection's fingerprint, then loaded (memory-mapped) with the same
  scores; an index directory whose manifest names other documents is refused, naming the file."""
  import json
  import os

  from ilp.data import retrieval

  built = Retriever(DOCS, directory=str(tmp_path))
  (key,) = os.listdir(tmp_path)
  stamp = os.path.getmtime(tmp_path / key / retrieval.MANIFEST)
  loaded = Retriever(DOCS, directory=str(tmp_path))
  assert os.path.getmtime(tmp_path / key / retrieval.MANIFEST) == stamp and os.listdir(tmp_path) == [key]
  assert isinstance(loaded._index.scores["data"], np.memmap)
  for query in ("where was p1 born ? c1", "sunny weather", "p2"):
    np.testing.assert_array_equal(loaded.scores(query), built.scores(query))
    np.testing.assert_allclose(loaded.scores(query), brute_force(query, DOCS), rtol=1e-5)
  assert loaded.search(["p1 c1"], 3) == built.search(["p1 c1"], 3)
  other = DOCS[:-1]
  assert retrieval.fingerprint(other, 1.5, 0.75)[:16] != key  # other documents: another directory
  Retriever(other, directory=str(tmp_path))
  assert len(os.listdir(tmp_path)) == 2
  manifest = tmp_path / key / retrieval.MANIFEST
  manifest.write_text(json.dumps({"fingerprint": "0" * 64, "documents": 3}))
  with pytest.raises(retrieval.IndexMismatchError, match=r"fingerprint.json: this index was built for other documents"):
    Retriever(DOCS, directory=str(tmp_path))
