"""When two answers say the same: one definition for every part of the method that asks (config
section `detect.answers`), so that a distractor, a contradiction and a pass agree on it.

Two answers are equivalent when they are equal once normalised (SQuAD normalisation). Answers of
more than `few_words` words are also equivalent when they state the same *facts* in other words,
or when their ROUGE-L F-measure is at least `rouge_l` and their facts do not contradict. An
answer's facts are its rare words: those in fewer than `fact_share` of the data's answers (names,
places, numbers; `ilp.data.similarity.filler_df`, the rule that finds a prompt's slot fillers).
In a short answer the one differing word is the answer ("paris" / "lyon"), so only equality
counts. A long answer can be reworded without changing what it says ("p5 was born in c3 ." / "the
birthplace of p5 is c3 ."), and can change what it says in one word ("p5 was born in c7 ."), at a
ROUGE-L (0.8) that no threshold separates from a paraphrase's; its facts separate the two. Facts
contradict when each answer states one the other does not (`ilp.data.similarity.different_things`
asks the same of prompts). The probed model's embeddings are not used (docs/method.md).

Used by: the multiple-choice probe (a sampled wrong answer that says the same as the reference or
an earlier option is no distractor), inconsistent data (III: near-duplicate questions contradict
each other only when their answers are *not* equivalent), the `equivalent` verifier, and the
diagnosis' answer kinds and corpus evidence (`content`: what a long answer adds to its prompt).
"""

from __future__ import annotations

import dataclasses
from typing import Iterable, Sequence

import numpy as np

from ilp.data import similarity
from ilp.scoring.verifiers import normalize, rouge_l
from ilp.typed import check


@dataclasses.dataclass(frozen=True)
class AnswersConfig:
  """When two answers say the same (config section `detect.answers`)."""

  rouge_l: float = 0.9  # long answers whose facts agree say the same at this ROUGE-L F-measure or more
  few_words: int = 3  # answers of at most this many words say the same only when equal once normalised
  fact_share: float = 0.03  # a word in fewer than this share of the data's answers is a fact (at least 3)

  def __post_init__(self):
    check(0 < self.rouge_l <= 1, "rouge_l", f"must lie in (0, 1], got {self.rouge_l}")
    check(self.few_words >= 0, "few_words", f"must be >= 0, got {self.few_words}")
    check(0 < self.fact_share <= 1, "fact_share", f"must lie in (0, 1], got {self.fact_share}")


def _words(text: str) -> list[str]:
  return [w for w in similarity.words(text) if similarity.is_word(w)]


class Answers:
  """The equivalence of answers, fitted to a data set's answers (which words are facts)."""

  def __init__(self, cfg: AnswersConfig = AnswersConfig(), answers: Iterable[str] = ()):
    self.cfg = cfg
    distinct = {frozenset(_words(a)) for a in answers}
    self.df: dict[str, int] = {}
    for words in distinct:
      for w in words:
        self.df[w] = self.df.get(w, 0) + 1
    self.rare_below = similarity.filler_df(len(distinct), min_share=cfg.fact_share)

  def long(self, text: str) -> bool:
    return len(normalize(text).split()) > self.cfg.few_words

  def facts(self, text: str) -> frozenset[str]:
    """The answer's rare words (in fewer than `fact_share` of the fitted answers)."""
    return frozenset(w for w in _words(text) if self.df.get(w, 0) < self.rare_below)

  def equivalent(self, a: str, b: str) -> bool:
    """Whether answers `a` and `b` say the same (the module's definition)."""
    if normalize(a) == normalize(b):
      return True
    if not (self.long(a) and self.long(b)):
      return False
    left, right = self.facts(a), self.facts(b)
    if left and left == right:
      return True
    contradict = bool(left - right) and bool(right - left)
    return not contradict and rouge_l(a, b) >= self.cfg.rouge_l

  def pairwise(self, a: Sequence[str], b: Sequence[str]) -> np.ndarray:
    """`equivalent(a[k], b[k])` for every k, each distinct pair of texts scored once."""
    cache: dict[tuple[str, str], bool] = {}
    out = np.zeros(len(a), bool)
    for k, pair in enumerate(zip(a, b)):
      if pair not in cache:
        cache[pair] = self.equivalent(*pair)
      out[k] = cache[pair]
    return out

  def added(self, answer: str, prompt: str) -> list[str]:
    """A long answer's facts that its prompt does not name (what it adds to the question), in
    order; none for a short answer."""
    if not self.long(answer):
      return []
    asked, facts = set(similarity.words(prompt)), self.facts(answer)
    return [w for w in dict.fromkeys(_words(answer)) if w in facts and w not in asked]

  def content(self, answer: str, prompt: str) -> list[str]:
    """What an answer says (`similarity.words`): its added facts when it has any, else all its words."""
    return self.added(answer, prompt) or similarity.words(answer)

  def key(self, answer: str, prompt: str) -> str:
    """The answer's identity for counting answers and pooling kinds: its added facts when it has
    any (paraphrases of one fact share a key), else the normalised answer."""
    added = self.added(answer, prompt)
    return " ".join(sorted(added)) if added else normalize(answer)
