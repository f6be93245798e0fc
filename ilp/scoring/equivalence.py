"""When two answers say the same: one definition for every part of the method that asks (config
section `detect.answers`), so that a distractor, a contradiction and a pass agree on it.

Two answers are equivalent when they are equal once normalised (SQuAD normalisation), or, when
both are longer than `few_words` words, when their ROUGE-L F-measure is at least `rouge_l`. In a
short answer the one differing word is the answer ("paris" / "lyon"), so only equality counts; a
long answer can be reworded without changing what it says, and at 0.9 one word in ten may differ.
Used by: the multiple-choice probe (a sampled wrong answer that says the same as the reference or
an earlier option is no distractor), inconsistent data (III: near-duplicate questions contradict
each other only when their answers are *not* equivalent), and the `equivalent` verifier.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from ilp.scoring.verifiers import normalize, rouge_l
from ilp.typed import check


@dataclasses.dataclass(frozen=True)
class AnswersConfig:
  """When two answers say the same (config section `detect.answers`)."""

  rouge_l: float = 0.9  # answers longer than `few_words` words say the same at this ROUGE-L F-measure or more
  few_words: int = 4  # answers of at most this many words say the same only when equal once normalised

  def __post_init__(self):
    check(0 < self.rouge_l <= 1, "rouge_l", f"must lie in (0, 1], got {self.rouge_l}")
    check(self.few_words >= 0, "few_words", f"must be >= 0, got {self.few_words}")


def equivalent(a: str, b: str, answers: AnswersConfig = AnswersConfig()) -> bool:
  """Whether answers `a` and `b` say the same (the module's definition)."""
  left, right = normalize(a), normalize(b)
  if left == right:
    return True
  return min(len(left.split()), len(right.split())) > answers.few_words and rouge_l(a, b) >= answers.rouge_l


def pairwise(a: Sequence[str], b: Sequence[str], answers: AnswersConfig = AnswersConfig()) -> np.ndarray:
  """`equivalent(a[k], b[k])` for every k, each distinct pair of texts scored once."""
  cache: dict[tuple[str, str], bool] = {}
  out = np.zeros(len(a), bool)
  for k, pair in enumerate(zip(a, b)):
    if pair not in cache:
      cache[pair] = equivalent(pair[0], pair[1], answers)
    out[k] = cache[pair]
  return out
