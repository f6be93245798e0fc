"""Multiple-choice probes (paper §2–3): the true response against plausible wrong ones.

Each training example becomes a K-option question: option 0 is its own response; the others are,
in this order, wrong answers the record supplies (`meta.distractors`) and the other answers the
training set gives to the same prompt (`duplicate_answers`), the base model's own wrong
answers (its greedy answer when `include_base_answer`, then, when `base_distractors`, the distinct
answers among `base_samples` samples at `base_temperature`, most frequent first), and responses
of other examples: of the same answer kind (prompts of one pattern, or patterns that share
answers; the default, `same_kind`) or of the same data set (`random`, `similar_length`). The base
model's answers are the paper's "plausible" alternatives: what a model that has not been taught
the example actually says, so the probe asks whether SFT moved it off its own belief. A sampled
answer that says the same as the reference or as an earlier option (`ilp.scoring.equivalence`) is dropped, and
the detection table drops those the example's verifier accepts or the token budget cut short.
`Options.counts` records how many wrong options each source gave. Options are scored by the
length-normalised log-likelihood of the option given the prompt (no letters, so no position
bias), and a softmax over the valid options gives the option distribution of a model. The
paper's protocol then draws N predictions from that distribution at the sampling temperature
(`predictions`).
"""

from __future__ import annotations

import dataclasses
import zlib
from typing import Sequence

import numpy as np
from flax import nnx

from ilp.data import similarity
from ilp.detection.columns import SOURCES
from ilp.scoring import estimators
from ilp.scoring.equivalence import Answers
from ilp.scoring.estimators import option_distribution
from ilp.scoring.evaluator import ExampleEvaluator, continuation_logliks
from ilp.scoring.verifiers import normalize


def ranked_wrong_answers(samples: Sequence[str], reference: str, answers: Answers) -> list[str]:
  """The distinct answers among `samples` that are not the reference's, most frequent first (ties:
  first drawn first), each in the words of its first sample: the wrong answers a model believes
  most. Samples that say the same (`answers.equivalent`) count as one answer; empty ones as none."""
  groups: list[list[str]] = []
  for text in samples:
    if not normalize(text) or answers.equivalent(text, reference):
      continue
    group = next((g for g in groups if answers.equivalent(g[0], text)), None)
    if group is None:
      groups.append([text])
    else:
      group.append(text)
  return [g[0] for g in sorted(groups, key=len, reverse=True)]


def duplicate_answers(prompts: Sequence[str], responses: Sequence[str], answers: Answers) -> list[list[str]]:
  """Per example, the other answers its training set gives to the same prompt (normalised match)
  that do not say the same as its own (`answers`): the most plausible wrong options there are,
  since the model was trained on them for this very question (label noise in duplicated data).
  They are offered with the record's own distractors."""
  by_prompt: dict[str, dict[str, str]] = {}
  for prompt, response in zip(prompts, responses):
    by_prompt.setdefault(normalize(prompt), {}).setdefault(normalize(response), response)
  return [
    [text for text in by_prompt[normalize(p)].values() if not answers.equivalent(text, r)]
    for p, r in zip(prompts, responses)
  ]


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

  by_dataset: dict  # data set -> {normalised response: response}
  by_kind: dict  # answer kind -> {normalised response: response}
  datasets: Sequence[str]  # per example
  kinds: Sequence[int]  # per example, its answer kind
  supplied: Sequence[list[str]]  # per example, wrong answers its record supplies

  @classmethod
  def build(
    cls,
    prompts: Sequence[str],
    responses: Sequence[str],
    datasets: Sequence[str],
    supplied: Sequence[list[str]],
    answers: Answers,
  ) -> "Distractors":
    templates = similarity.patterns(
      [similarity.words(p) for p in prompts], similarity.filler_df(len(prompts))
    ).templates
    kinds = similarity.answer_kinds(templates, [answers.key(r, p) for p, r in zip(prompts, responses)])
    return cls(
      distractor_pools(responses, datasets), distractor_pools(responses, kinds), list(datasets), kinds, list(supplied)
    )


@dataclasses.dataclass(frozen=True)
class Options:
  """The options of each example and where its wrong ones came from."""

  texts: list[list[str]]  # per example, the true response first
  counts: np.ndarray  # [examples, len(SOURCES)] int: wrong options from each source


def choose_options(
  ids: Sequence[str],
  rows: Sequence[int],
  responses: Sequence[str],
  distractors: Distractors,
  base_answers: Sequence[Sequence[str]] | None,
  num_options: int,
  strategy: str,
  seed: int,
  answers: Answers = Answers(),
) -> Options:
  """Option texts per example, the true response first; fewer options when too few candidates.

  Args:
    ids: per example (its id seeds its distractor draw).
    rows: per example, its index in `distractors` (the whole examples table).
    responses: per example, the true response.
    distractors: candidate pools of the whole table.
    base_answers: per example, the base model's wrong answers in order of preference (its greedy
      answer, then `ranked_wrong_answers` of its samples); None: not used.
    num_options: options per example, the true one included.
    strategy: one of `ilp.detection.config.STRATEGIES`.
    seed: the run's seed.
    answers: when a base answer says the same as the reference or an earlier option (`equivalence`).
  """
  texts, counts = [], np.zeros((len(ids), len(SOURCES)), np.int64)
  for i, (ident, row, target) in enumerate(zip(ids, rows, responses)):
    chosen = [target]

    def add(text: str, source: int) -> None:
      if len(chosen) < num_options:
        chosen.append(text)
        counts[i, source] += 1

    def fresh(text: str) -> bool:  # an answer that none of the options says already
      return bool(text.strip()) and not any(answers.equivalent(text, c) for c in chosen)

    for wrong in distractors.supplied[row]:
      if fresh(wrong):
        add(wrong, 0)
    for wrong in base_answers[i] if base_answers is not None else ():
      if fresh(wrong):
        add(wrong, 1)
    taken = {normalize(c) for c in chosen}
    rng = np.random.default_rng([seed, zlib.crc32(ident.encode())])
    pools = [distractors.by_dataset[distractors.datasets[row]]]
    if strategy == "same_kind":
      pools.insert(0, distractors.by_kind[distractors.kinds[row]])
    for pool in pools:
      candidates = [t for k, t in pool.items() if k not in taken]
      order = rng.permutation(len(candidates))
      if strategy == "similar_length":
        order = sorted(order, key=lambda j: abs(len(candidates[j]) - len(target)))
      for j in order:
        if len(chosen) == num_options:
          break
        if fresh(candidates[j]):
          add(candidates[j], 2)
          taken.add(normalize(candidates[j]))
    texts.append(chosen)
  return Options(texts, counts)


def option_probabilities(
  evaluator: ExampleEvaluator,
  params: nnx.State,
  prompts: Sequence[np.ndarray],
  option_tokens: Sequence[Sequence[np.ndarray]],
  num_options: int,
  buckets: Sequence[int],
  pad_id: int,
) -> np.ndarray:
  """[examples, num_options] option distribution of one model; missing options get probability 0.

  Args:
    evaluator, params: the model.
    prompts: token ids per example.
    option_tokens: per example, each option's token ids (ending in EOS).
    num_options: columns of the result.
    buckets, pad_id: how prompt + option sequences are padded.
  """
  pairs = [(e, k) for e, opts in enumerate(option_tokens) for k in range(len(opts))]
  sums, counts = continuation_logliks(
    evaluator, params, [prompts[e] for e, _ in pairs], [option_tokens[e][k] for e, k in pairs], buckets, pad_id
  )
  logliks = np.zeros((len(prompts), num_options))
  valid = np.zeros((len(prompts), num_options), bool)
  for (e, k), total, n in zip(pairs, sums, counts):
    logliks[e, k] = total / max(n, 1)
    valid[e, k] = True
  return option_distribution(logliks, valid)


def predictions(
  probs: np.ndarray, temperature: float, confidence_temperature: float, n: int, seed: int
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
