"""Prerequisite probes: does the base model know the one-hop facts a multi-hop prompt composes?

An example's `meta.prerequisites` lists those facts as questions with answers; the base model's
samples for each question tell whether the fact is known or blind (the paper's fact-level
criterion, `blind`). Diagnosis then tells missing knowledge (I)
from a hard composition of known facts (V).
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from ilp.data.records import PREREQUISITES
from ilp.detection import columns as col
from ilp.detection.generative import GenerativeResult, sample_and_verify
from ilp.sampling.sampler import Sampler, SamplingConfig
from ilp.scoring import estimators
from ilp.scoring.verifiers import Verifier

Question = tuple[np.ndarray, str]  # (prompt tokens, reference answer)


def questions(ids: Sequence[str], metas: Sequence[dict], render: Any) -> list[list[Question]]:
  """Per example, its prerequisite questions as prompt ids (`render(questions, owners)`, the base
  model's format: `ilp.detection.base_prompts`) with their answers (empty when its meta lists none)."""
  listed = [(e, q["prompt"], q["response"]) for e, meta in enumerate(metas) for q in meta.get(PREREQUISITES) or []]
  rendered = render([q for _, q, _ in listed], [e for e, _, _ in listed]) if listed else []
  out: list[list[Question]] = [[] for _ in ids]
  for (e, _, answer), prompt in zip(listed, rendered):
    out[e].append((prompt, answer))
  return out


def blind_rates(result: GenerativeResult, detect: Any) -> tuple[np.ndarray, np.ndarray]:
  """Per prompt, what the blind-fact rule reads: the pass rate and the BoN-`blind_bon_k` accuracy."""
  k = min(detect.blind_bon_k, result.correct.shape[1])
  return estimators.pass_fraction(result.correct), estimators.best_of_k(result.correct, result.confidence, k)


def blind(result: GenerativeResult, detect: Any) -> np.ndarray:
  """Per prompt, the paper's blind-fact rule on its samples: pass rate < `detect.threshold` and
  BoN-`blind_bon_k` accuracy < `detect.blind_bon` (paper: pass@10 < 0.2 and BoN-5 < 0.1; with a
  single greedy sample both are its correctness)."""
  return estimators.blind(*blind_rates(result, detect), detect.threshold, detect.blind_bon)


def known_share(
  example_questions: Sequence[list[Question]],
  verifiers: Sequence[Verifier],
  sampler: Sampler,
  params: Any,
  sampling: SamplingConfig,
  detect: Any,
  decode: Callable[[np.ndarray], str],
  buckets: Sequence[int],
  pad_id: int,
  seed: int,
) -> dict[str, np.ndarray]:
  """How many prerequisite facts each example has, and the share the model knows, i.e. is not
  blind on (NaN for none).

  Args:
    example_questions: per example, its questions (`questions`).
    verifiers: per example, the verifier of its data set (used for its questions too).
    sampler, params: the base model.
    sampling: samples per question and decoding settings (greedy when the base takes no samples).
    detect: the detection settings (`blind`'s thresholds, the batch size).
    decode, buckets, pad_id, seed: as in `sample_and_verify`.
  """
  flat = [(e, prompt, ref) for e, listed in enumerate(example_questions) for prompt, ref in listed]
  counts = np.asarray([len(listed) for listed in example_questions])
  known = np.full(len(example_questions), np.nan)
  if flat:
    result = sample_and_verify(
      sampler,
      params,
      [p for _, p, _ in flat],
      [r for _, _, r in flat],
      [verifiers[e] for e, _, _ in flat],
      decode,
      sampling,
      buckets,
      detect.batch_size,
      pad_id,
      seed,
    )
    fact_known = (~blind(result, detect)).astype(float)
    owners = np.asarray([e for e, _, _ in flat])
    share = np.bincount(owners, fact_known, len(example_questions)) / np.maximum(counts, 1)
    known[counts > 0] = share[counts > 0]
  return {col.PREREQUISITES: counts, col.PREREQUISITES_KNOWN: known}
