"""Generative detection: sample every prompt N times and verify each sample against its reference."""

from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

import numpy as np
from flax import nnx

from ilp.data import batches as batching
from ilp.sampling.sampler import Sampler, SamplingConfig, left_pad
from ilp.scoring.verifiers import Verifier


@dataclasses.dataclass
class GenerativeResult:
  """Per example and sample: [examples, N] arrays, and the decoded texts."""

  correct: np.ndarray  # bool
  confidence: np.ndarray  # mean token log-prob of the sample (the model's own score)
  truncated: np.ndarray  # bool: no stop token within the budget
  texts: list[list[str]]


def sample_and_verify(
  sampler: Sampler,
  params: nnx.State,
  prompts: Sequence[np.ndarray],
  references: Sequence[str],
  verifiers: Sequence[Verifier],
  decode: Callable[[np.ndarray], str],
  sampling: SamplingConfig,
  buckets: Sequence[int],
  batch_size: int,
  pad_id: int,
  seed: int,
) -> GenerativeResult:
  """Samples `sampling.num_samples` answers per prompt (prompts batched by length bucket) and
  verifies each against the prompt's reference.

  Args:
    sampler, params: the model.
    prompts: token ids per prompt (unpadded).
    references, verifiers: per prompt, the answer and how a sample is checked against it.
    decode: token ids -> text.
    sampling: how to decode.
    buckets, batch_size, pad_id: prompt batching (left-padded to the smallest bucket that fits).
    seed: batch b samples with seed * 100003 + b.
  """
  count, n = len(prompts), sampling.num_samples
  correct = np.zeros((count, n), bool)
  confidence = np.zeros((count, n), np.float64)
  truncated = np.zeros((count, n), bool)
  texts: list[list[str]] = [[] for _ in range(count)]
  lengths = np.asarray([len(p) for p in prompts])
  for b, (rows, length) in enumerate(batching.eval_batches(lengths, buckets, batch_size)):
    tokens, mask = left_pad([prompts[r] if r >= 0 else np.zeros(0, np.int32) for r in rows], length, pad_id)
    out = sampler(params, tokens, mask, seed=seed * 100_003 + b, sampling=sampling)
    mean_logprob = np.asarray(out.mean_logprob)
    for slot, r in enumerate(rows):
      if r < 0:
        continue
      for s in range(n):
        generated = out.tokens[slot, s, : out.lengths[slot, s] - int(out.stopped[slot, s])]
        texts[r].append(decode(generated))
        correct[r, s] = verifiers[r](texts[r][-1], references[r])
      confidence[r] = mean_logprob[slot]
      truncated[r] = ~out.stopped[slot]
  return GenerativeResult(correct, confidence, truncated, texts)
