"""Multiple-choice probes (paper §2–3): the true response against plausible wrong ones.

Each training example becomes a K-option question: option 0 is its own response; the others are
responses of other examples of the same data set (chosen at random, or those closest in length),
plus, when it differs from the target, the base model's own greedy answer, so that a conflicting
belief of the base model is on the menu. Options are scored by the length-normalised
log-likelihood of the option given the prompt (no letters, so no position bias), and a softmax
over the valid options gives the option distribution of a model.
"""
from __future__ import annotations

import dataclasses
import zlib
from typing import Sequence

import numpy as np
from flax import nnx

from ilp.scoring.estimators import option_distribution
from ilp.scoring.verifiers import normalize
from ilp.scoring.evaluator import ExampleEvaluator, continuation_logliks
from ilp.typed import check

STRATEGIES = ("random", "similar_length")


@dataclasses.dataclass(frozen=True)
class MCConfig:
  """The multiple-choice probe (config section `detect.mc`)."""
  enabled: bool = True
  num_options: int = 4
  distractors: str = "random"        # one of STRATEGIES
  include_base_answer: bool = True   # the base model's own greedy answer is an option when it is wrong
  p_exist: float = 0.8               # knowledge exists: base P(true option) > p_exist (paper: 0.8)
  t_conf: float = 0.5                # high-confidence error: base P(a wrong option) > t_conf (paper: not given)

  def __post_init__(self):
    check(self.num_options >= 2, "num_options", f"must be >= 2, got {self.num_options}")
    check(self.distractors in STRATEGIES, "distractors", f"'{self.distractors}' is not one of {STRATEGIES}")
    for name in ("p_exist", "t_conf"):
      check(0 <= getattr(self, name) <= 1, name, f"must lie in [0, 1], got {getattr(self, name)}")


def distractor_pools(responses: Sequence[str], datasets: Sequence[str]) -> dict[str, dict[str, str]]:
  """Distinct (normalised) responses of each data set: where distractors are drawn from."""
  pools: dict[str, dict[str, str]] = {}
  for text, dataset in zip(responses, datasets):
    pools.setdefault(dataset, {}).setdefault(normalize(text), text)
  return pools


def choose_options(ids: Sequence[str], responses: Sequence[str], datasets: Sequence[str],
                   pools: dict[str, dict[str, str]], base_answers: Sequence[str] | None, num_options: int,
                   strategy: str, seed: int) -> list[list[str]]:
  """Option texts per example, the true response first; fewer options when a data set is small.

  Args:
    ids, responses, datasets: per example (the id seeds its distractor draw).
    pools: distractors per data set (`distractor_pools`).
    base_answers: the base model's greedy answers, offered first when wrong (None: not used).
    num_options: options per example, the true one included.
    strategy: one of STRATEGIES.
    seed: the run's seed.
  """
  options = []
  for i, (ident, target, dataset) in enumerate(zip(ids, responses, datasets)):
    key = normalize(target)
    chosen: list[str] = []
    if base_answers is not None and base_answers[i].strip() and normalize(base_answers[i]) != key:
      chosen.append(base_answers[i])
    taken = {key} | {normalize(c) for c in chosen}
    candidates = [t for k, t in pools[dataset].items() if k not in taken]
    rng = np.random.default_rng([seed, zlib.crc32(ident.encode())])
    order = rng.permutation(len(candidates))
    if strategy == "similar_length":
      order = sorted(order, key=lambda j: abs(len(candidates[j]) - len(target)))
    chosen += [candidates[j] for j in order[:num_options - 1 - len(chosen)]]
    options.append([target] + chosen)
  return options


def option_probabilities(evaluator: ExampleEvaluator, params: nnx.State, prompts: Sequence[np.ndarray],
                         option_tokens: Sequence[Sequence[np.ndarray]], num_options: int, buckets: Sequence[int],
                         pad_id: int) -> np.ndarray:
  """[examples, num_options] option distribution of one model; missing options get probability 0.

  Args:
    evaluator, params: the model.
    prompts: token ids per example.
    option_tokens: per example, each option's token ids (ending in EOS).
    num_options: columns of the result.
    buckets, pad_id: how prompt + option sequences are padded.
  """
  pairs = [(e, k) for e, opts in enumerate(option_tokens) for k in range(len(opts))]
  sums, counts = continuation_logliks(evaluator, params, [prompts[e] for e, _ in pairs],
                                      [option_tokens[e][k] for e, k in pairs], buckets, pad_id)
  logliks = np.zeros((len(prompts), num_options))
  valid = np.zeros((len(prompts), num_options), bool)
  for (e, k), total, n in zip(pairs, sums, counts):
    logliks[e, k] = total / max(n, 1)
    valid[e, k] = True
  return option_distribution(logliks, valid)
