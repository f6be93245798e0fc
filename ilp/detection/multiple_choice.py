"""Multiple-choice probes (paper §2–3): the true response against plausible wrong ones.

Each training example becomes a K-option question: option 0 is its own response; the others are,
in this order, wrong answers the record supplies (`meta.distractors`), the base model's own
greedy answer when it differs from the target (so a conflicting belief is on the menu), and
responses of other examples: of the same answer kind (prompts of one pattern, or patterns that
share answers; the default, `same_kind`) or of the same data set (`random`, `similar_length`).
Options are scored by the length-normalised log-likelihood of the option given the prompt (no
letters, so no position bias), and a softmax over the valid options gives the option
distribution of a model. The paper's protocol then draws N predictions from that distribution
at the sampling temperature (`predictions`).
"""
from __future__ import annotations

import dataclasses
import zlib
from typing import Sequence

import numpy as np
from flax import nnx

from ilp.data import similarity
from ilp.scoring import estimators
from ilp.scoring.estimators import option_distribution
from ilp.scoring.verifiers import normalize
from ilp.scoring.evaluator import ExampleEvaluator, continuation_logliks
from ilp.typed import check

STRATEGIES = ("same_kind", "random", "similar_length")


@dataclasses.dataclass(frozen=True)
class MCConfig:
  """The multiple-choice probe (config section `detect.mc`)."""
  enabled: bool = True
  num_options: int = 4
  distractors: str = "same_kind"     # one of STRATEGIES
  include_base_answer: bool = True   # the base model's own greedy answer is an option when it is wrong
  p_exist: float = 0.8               # knowledge exists: base accuracy over N predictions > p_exist (paper: 0.8)
  t_conf: float = 0.5                # high-confidence error: base P(a wrong option) > t_conf (paper: not given)

  def __post_init__(self):
    check(self.num_options >= 2, "num_options", f"must be >= 2, got {self.num_options}")
    check(self.distractors in STRATEGIES, "distractors", f"'{self.distractors}' is not one of {STRATEGIES}")
    for name in ("p_exist", "t_conf"):
      check(0 <= getattr(self, name) <= 1, name, f"must lie in [0, 1], got {getattr(self, name)}")


def distractor_pools(responses: Sequence[str], groups: Sequence) -> dict:
  """Distinct (normalised) responses of each group (data set or answer kind): where distractors
  are drawn from."""
  pools: dict = {}
  for text, group in zip(responses, groups):
    pools.setdefault(group, {}).setdefault(normalize(text), text)
  return pools


@dataclasses.dataclass(frozen=True)
class Distractors:
  """Where each example's wrong options come from."""
  by_dataset: dict          # data set -> {normalised response: response}
  by_kind: dict             # answer kind -> {normalised response: response}
  datasets: Sequence[str]   # per example
  kinds: Sequence[int]      # per example, its answer kind
  supplied: Sequence[list[str]]  # per example, wrong answers its record supplies

  @classmethod
  def build(cls, prompts: Sequence[str], responses: Sequence[str], datasets: Sequence[str],
            supplied: Sequence[list[str]]) -> "Distractors":
    templates = similarity.patterns([similarity.words(p) for p in prompts], similarity.filler_df(len(prompts))).templates
    kinds = similarity.answer_kinds(templates, [normalize(r) for r in responses])
    return cls(distractor_pools(responses, datasets), distractor_pools(responses, kinds), list(datasets), kinds,
               list(supplied))


def choose_options(ids: Sequence[str], rows: Sequence[int], responses: Sequence[str], distractors: Distractors,
                   base_answers: Sequence[str] | None, num_options: int, strategy: str, seed: int) -> list[list[str]]:
  """Option texts per example, the true response first; fewer options when too few candidates.

  Args:
    ids: per example (its id seeds its distractor draw).
    rows: per example, its index in `distractors` (the whole examples table).
    responses: per example, the true response.
    distractors: candidate pools of the whole table.
    base_answers: the base model's greedy answers, offered when wrong (None: not used).
    num_options: options per example, the true one included.
    strategy: one of STRATEGIES.
    seed: the run's seed.
  """
  options = []
  for i, (ident, row, target) in enumerate(zip(ids, rows, responses)):
    key = normalize(target)
    chosen: list[str] = []
    for wrong in list(distractors.supplied[row]) + ([base_answers[i]] if base_answers is not None else []):
      if wrong.strip() and normalize(wrong) not in {key} | {normalize(c) for c in chosen}:
        chosen.append(wrong)
    chosen = chosen[:num_options - 1]
    taken = {key} | {normalize(c) for c in chosen}
    rng = np.random.default_rng([seed, zlib.crc32(ident.encode())])
    pools = [distractors.by_dataset[distractors.datasets[row]]]
    if strategy == "same_kind":
      pools.insert(0, distractors.by_kind[distractors.kinds[row]])
    for pool in pools:
      candidates = [t for k, t in pool.items() if k not in taken]
      order = rng.permutation(len(candidates))
      if strategy == "similar_length":
        order = sorted(order, key=lambda j: abs(len(candidates[j]) - len(target)))
      picked = [candidates[j] for j in order[:num_options - 1 - len(chosen)]]
      chosen += picked
      taken |= {normalize(c) for c in picked}
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


def predictions(probs: np.ndarray, temperature: float, confidence_temperature: float, n: int, seed: int
                ) -> tuple[np.ndarray, np.ndarray]:
  """The paper's MC protocol for one run: N predictions per example drawn from the option
  distribution at `temperature` (0: the argmax), each with its confidence, the log-probability of
  the predicted option at `confidence_temperature` (so BoN picks the option the model ranks
  highest among those it predicted). Returns ([examples, n] correct, [examples, n] confidence)."""
  rng = np.random.default_rng([seed, 31])
  drawn = estimators.draw(estimators.temper(probs, temperature), n, rng)
  scored = estimators.temper(probs, confidence_temperature)
  with np.errstate(divide="ignore"):
    confidence = np.log(np.take_along_axis(scored, drawn, axis=1))
  return drawn == 0, confidence
