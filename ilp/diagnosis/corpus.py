"""What the pre-training corpus says about each example (paper §6: OLMo2's SFT data measured
against its open pre-training corpus, Dolma, for missing and conflicting knowledge).

An example is *about* its prompt's slot fillers (rare words: names, entities) and its answer is
of the *kind* given to prompts of the same template (or of templates sharing answers with it).
A corpus document that mentions all of an example's slot fillers either states its answer (all
answer words present: support), states another answer of the same kind (a competing answer
word: contradiction), or neither. Sparse
matrix products find the documents per example, so the cost is linear in the documents that
mention an example's entities, not in corpus x examples.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd
from scipy import sparse

from ilp.data import similarity


def evidence(patterns: similarity.Patterns, answers: Sequence[list[str]], kinds: np.ndarray,
             documents: Sequence[str]) -> pd.DataFrame:
  """Per example, given its tokenised answer (`similarity.words`) and answer kind
  (`similarity.answer_kinds`): `corpus_entity_docs` (documents mentioning all its slot fillers),
  `corpus_support` (... that also state its answer) and `corpus_contradiction` (... that state
  a competing answer of its kind instead)."""
  vocab: dict[str, int] = {}
  for row in list(patterns.slots) + answers:
    for w in row:
      vocab.setdefault(w, len(vocab))
  entity = similarity.binary_matrix(patterns.slots, vocab)
  target = similarity.binary_matrix(answers, vocab)
  kind_words = sparse.csr_matrix((np.ones(len(answers)), (kinds, np.arange(len(answers)))),
                                 shape=(kinds.max() + 1, len(answers))) @ target
  kind_words.data[:] = 1.0                                            # answer words of each kind
  docs = similarity.binary_matrix([similarity.words(d) for d in documents], vocab)
  n_entity = np.asarray(entity.sum(axis=1)).ravel()
  n_target = np.asarray(target.sum(axis=1)).ravel()
  hits = (entity @ docs.T).tocoo()
  full = (n_entity[hits.row] > 0) & (hits.data == n_entity[hits.row])  # documents naming every slot filler
  ex, doc = hits.row[full].astype(np.int64), hits.col[full].astype(np.int64)
  stated = similarity.row_dots(target, ex, docs, doc)
  states_target = stated >= np.maximum(n_target[ex], 1)
  # the target's words are words of its kind, so kind words minus target words are competitors
  kind_hits = sparse.csr_matrix(docs @ kind_words.T)                   # [documents, kinds]
  states_other = ~states_target & (np.asarray(kind_hits[doc, kinds[ex]]).ravel() - stated > 0)
  count = lambda mask: np.bincount(ex[mask], minlength=len(answers))
  return pd.DataFrame({"corpus_entity_docs": count(np.ones(len(ex), bool)), "corpus_support": count(states_target),
                       "corpus_contradiction": count(states_other)})
