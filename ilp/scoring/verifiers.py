"""Verifiers: does a generated text count as a correct answer to the reference text?

A verifier is a plain `(prediction, reference) -> bool` function, so one name in a config picks how
a task is graded. Text metrics follow the SQuAD evaluation script (same normalisation, same token
F1), so their figures are comparable with published ones.
"""

from __future__ import annotations

import collections
import functools
import re
import string
from typing import Any, Callable

Verifier = Callable[[str, str], bool]

VERIFIERS = ("exact_match", "token_f1", "rouge_l", "mc_letter", "equivalent")

_PUNCTUATION = str.maketrans("", "", string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")
# An option letter standing alone: "(b)" in any case; "B", "Answer: C." in upper case (a capital
# "A" before a lower-case word, "A cat ...", is the article); a lower-case "b", "b)" or "b." only
# at the start, where it cannot be an ordinary word.
_LETTER = re.compile(r"\(([A-Da-d])\)|\b(A(?!\s+[a-z])|[B-D])\b|^\s*([a-d])(?:[.):]|\s*$)")


def normalize(text: str) -> str:
  """SQuAD normalisation: lower case, no ASCII punctuation, no articles, single spaces."""
  text = text.lower().translate(_PUNCTUATION)
  return " ".join(_ARTICLES.sub(" ", text).split())


def exact_match(pred: str, ref: str) -> bool:
  return normalize(pred) == normalize(ref)


def _f_measure(overlap: int, pred_len: int, ref_len: int) -> float:
  """Harmonic mean of precision and recall; two empty texts match perfectly."""
  if pred_len == 0 and ref_len == 0:
    return 1.0
  if overlap == 0:
    return 0.0
  precision, recall = overlap / pred_len, overlap / ref_len
  return 2 * precision * recall / (precision + recall)


def token_f1(pred: str, ref: str) -> float:
  """SQuAD token F1: overlap of the normalised token multisets, order ignored."""
  pred_tokens, ref_tokens = normalize(pred).split(), normalize(ref).split()
  overlap = sum((collections.Counter(pred_tokens) & collections.Counter(ref_tokens)).values())
  return _f_measure(overlap, len(pred_tokens), len(ref_tokens))


class _NormalizedTokens:
  """rouge-score's tokenizer interface over this module's normalisation (its default tokenizer
  keeps only [a-z0-9] runs, so answers such as `c-3` would change)."""

  def tokenize(self, text: str) -> list[str]:
    return normalize(text).split()


@functools.cache
def _rouge_scorer():
  from rouge_score import rouge_scorer

  return rouge_scorer.RougeScorer(["rougeL"], tokenizer=_NormalizedTokens())


def rouge_l(pred: str, ref: str) -> float:
  """ROUGE-L F-measure (beta = 1) over normalised tokens (rouge-score): like token F1, but order
  matters. Two empty answers match (1.0), as in token F1."""
  if not normalize(pred).split() and not normalize(ref).split():
    return 1.0
  return float(_rouge_scorer().score(ref, pred)["rougeL"].fmeasure)


def _option_letter(text: str) -> str | None:
  match = _LETTER.search(text)
  return None if match is None else next(g for g in match.groups() if g).upper()


def multiple_choice_letter(pred: str, ref: str) -> bool:
  """Whether the first standalone option letter A-D of the prediction is the reference's letter;
  a prediction without one is wrong. A reference without one is a data error."""
  expected = _option_letter(ref)
  if expected is None:
    raise ValueError(f"reference {ref!r} holds no option letter A-D")
  return _option_letter(pred) == expected


def _at_least(score: Callable[[str, str], float], threshold: float, pred: str, ref: str) -> bool:
  return score(pred, ref) >= threshold


def get_verifier(name: str, threshold: float = 0.5, answers: Any = None) -> Verifier:
  """The verifier called `name` (one of VERIFIERS); `threshold` is the pass mark of the scored
  ones, token_f1 and rouge_l; "equivalent" passes a prediction that says the same as the reference
  by the shared definition (`answers`: an `ilp.scoring.equivalence.Answers` fitted to the data's answers)."""
  scores = {"token_f1": token_f1, "rouge_l": rouge_l}
  if name in scores:
    if not 0.0 <= threshold <= 1.0:
      raise ValueError(f"verifier threshold must lie in [0, 1], got {threshold}")
    return functools.partial(_at_least, scores[name], threshold)  # unlike a closure, pickles to workers
  if name == "equivalent":
    from ilp.scoring import equivalence  # it builds on this module's normalisation and ROUGE-L

    return functools.partial(_equivalent, answers or equivalence.Answers())
  exact = {"exact_match": exact_match, "mc_letter": multiple_choice_letter}
  if name not in exact:
    raise ValueError(f"unknown verifier {name!r}; available: {', '.join(VERIFIERS)}")
  return exact[name]


def _equivalent(answers: Any, pred: str, ref: str) -> bool:
  return answers.equivalent(pred, ref)
