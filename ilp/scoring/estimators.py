"""Estimators over N samples per example: pass rates, best-of-N selection, agreement, divergence.

Everything is float64 numpy and works on whole evaluations at once: samples lie on the last axis,
any leading axes are examples, so one call scores a `[examples, samples]` table.
"""

from __future__ import annotations

import itertools

import numpy as np


def pass_fraction(correct: np.ndarray) -> np.ndarray:
  """The paper's pass@N: the share of the n samples (last axis) that are correct."""
  correct = np.asarray(correct, bool)
  if correct.ndim == 0 or correct.shape[-1] == 0:
    raise ValueError(f"need at least one sample on the last axis, got shape {correct.shape}")
  return correct.mean(axis=-1, dtype=np.float64)


def unbiased_pass_at_k(n: int | np.ndarray, c: int | np.ndarray, k: int) -> float | np.ndarray:
  """Chance that k samples drawn without replacement from n, c of them correct, include a correct one.

  HumanEval's estimator 1 - C(n-c, k) / C(n, k), written as the product 1 - prod_{i=n-c+1..n} (1 - k/i)
  so that no binomial coefficient overflows; 1.0 where n - c < k (every k-subset holds a correct
  sample). `n` and `c` broadcast against each other; scalars in, float out.
  """
  n, c = np.broadcast_arrays(np.asarray(n, np.int64), np.asarray(c, np.int64))
  if k < 1:
    raise ValueError(f"pass@k needs k >= 1, got {k}")
  if np.any(n < k):
    raise ValueError(f"pass@k is defined only for k <= n; got k={k}, n={int(n.min())}")
  bad = (c < 0) | (c > n)
  if bad.any():
    raise ValueError(f"the correct count must lie in [0, n]; got c={int(c[bad][0])}, n={int(n[bad][0])}")
  miss = np.ones(n.shape, np.float64)  # C(n-c, k) / C(n, k): no correct sample among the k
  for j in range(int(c.max(initial=0))):
    i = np.maximum(n - j, 1).astype(np.float64)  # the clamp only touches factors masked out below
    miss *= np.where(j < c, 1.0 - k / i, 1.0)
  result = np.where(n - c < k, 1.0, 1.0 - miss)
  return float(result) if result.ndim == 0 else result


def _samples(correct: np.ndarray, confidence: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  correct, confidence = np.asarray(correct, bool), np.asarray(confidence, np.float64)
  if correct.shape != confidence.shape or correct.ndim == 0 or correct.shape[-1] == 0:
    raise ValueError(
      f"correct {correct.shape} and confidence {confidence.shape} must share a shape "
      "with at least one sample on the last axis"
    )
  if np.isnan(confidence).any():
    raise ValueError("confidence contains NaN, which has no rank")
  return correct, confidence


def best_of_n(correct: np.ndarray, confidence: np.ndarray) -> np.ndarray:
  """Correctness of the most confident sample; samples tied at the top count equally (their mean),
  so the result does not depend on the order the samples were generated in."""
  correct, confidence = _samples(correct, confidence)
  top = confidence == confidence.max(axis=-1, keepdims=True)
  return (correct & top).sum(axis=-1) / top.sum(axis=-1).astype(np.float64)


def _rank_weights(n: int, k: int) -> np.ndarray:
  """P(the sample at 0-based rank j is the most confident of a uniform k-subset of n) =
  C(n-1-j, k-1) / C(n, k), by the ratio recurrence w_{j+1} / w_j = (n-j-k) / (n-1-j), which stays
  in float64 range for any n (the binomials themselves would not)."""
  j = np.arange(n - 1, dtype=np.float64)
  ratios = np.maximum(n - j - k, 0.0) / (n - 1 - j)
  return (k / n) * np.concatenate([[1.0], np.cumprod(ratios)])


def best_of_k(correct: np.ndarray, confidence: np.ndarray, k: int) -> np.ndarray:
  """Expected best-of-k correctness when k of the n samples are drawn uniformly without replacement.

  Computed exactly from the n samples rather than by resampling: the sample at rank j wins with
  probability `_rank_weights`. Tied samples are exchangeable, so a tie group takes the summed weight
  of its ranks and its mean correctness, which is the expectation of the tie-averaged `best_of_n`
  over all k-subsets.
  """
  correct, confidence = _samples(correct, confidence)
  n = correct.shape[-1]
  if not 1 <= k <= n:
    raise ValueError(f"best-of-k needs 1 <= k <= n; got k={k}, n={n}")
  lead = correct.shape[:-1]
  correct, confidence = correct.reshape(-1, n), confidence.reshape(-1, n)
  order = np.argsort(-confidence, axis=-1)
  ranked = np.take_along_axis(confidence, order, axis=-1)
  hits = np.take_along_axis(correct, order, axis=-1).astype(np.float64)
  starts = np.ones(ranked.shape, bool)
  starts[:, 1:] = ranked[:, 1:] != ranked[:, :-1]
  # Tie groups numbered uniquely over the whole table, so one bincount sums every row's groups.
  group = (np.cumsum(starts, axis=-1) - 1 + n * np.arange(len(ranked))[:, None]).ravel()
  size = np.bincount(group, minlength=ranked.size)
  weight = np.bincount(group, weights=np.broadcast_to(_rank_weights(n, k), ranked.shape).ravel(), minlength=ranked.size)
  hit = np.bincount(group, weights=hits.ravel(), minlength=ranked.size)
  value = weight * hit / np.maximum(size, 1)
  return value.reshape(-1, n).sum(axis=-1).reshape(lead)[()]


def cohen_kappa(a: np.ndarray, b: np.ndarray) -> float:
  """Cohen's kappa of two binary labelings: agreement beyond what their base rates give by chance.

  When both labelings are the same constant, chance agreement p_e is 1 and the formula is 0/0
  (scikit-learn returns NaN); they agree perfectly, so this returns 1.0. p_e == 1 happens in no
  other case.
  """
  a, b = np.asarray(a, bool).ravel(), np.asarray(b, bool).ravel()
  if a.shape != b.shape or a.size == 0:
    raise ValueError(f"kappa needs two non-empty labelings of one length; got {a.size} and {b.size}")
  observed = np.mean(a == b, dtype=np.float64)
  pa, pb = a.mean(dtype=np.float64), b.mean(dtype=np.float64)
  chance = pa * pb + (1.0 - pa) * (1.0 - pb)
  if chance == 1.0:
    return 1.0
  return float((observed - chance) / (1.0 - chance))


def mean_pairwise_kappa(labelings: np.ndarray) -> float:
  """Mean Cohen's kappa over all pairs of S labelings (rows of an [S, N] array)."""
  labelings = np.asarray(labelings, bool)
  if labelings.ndim != 2 or len(labelings) < 2:
    raise ValueError(f"need an [S, N] array with S >= 2 labelings; got shape {labelings.shape}")
  return float(
    np.mean([cohen_kappa(labelings[i], labelings[j]) for i, j in itertools.combinations(range(len(labelings)), 2)])
  )


def _kl_bits(x: np.ndarray, m: np.ndarray) -> np.ndarray:
  """KL(x || m) in bits over the last axis, with 0 log 0 = 0 (m > 0 wherever x > 0, as m mixes x in)."""
  positive = x > 0
  ratio = np.where(positive, x, 1.0) / np.where(positive, m, 1.0)
  return np.sum(np.where(positive, x * np.log2(ratio), 0.0), axis=-1)


def js_divergence(p: np.ndarray, q: np.ndarray) -> np.ndarray:
  """Jensen-Shannon divergence of distributions on the last axis, in bits so that it lies in [0, 1]
  (1 for disjoint supports) and a fixed threshold means the same for any number of options."""
  p, q = np.broadcast_arrays(np.asarray(p, np.float64), np.asarray(q, np.float64))
  m = 0.5 * (p + q)
  # Rounding can leave a tiny negative value for near-equal inputs; the divergence itself cannot be.
  return np.maximum(0.5 * _kl_bits(p, m) + 0.5 * _kl_bits(q, m), 0.0)


def option_distribution(logliks: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
  """The model's distribution over K answer options: a softmax of their log-likelihoods.

  Pass length-normalised (per-token mean) log-likelihoods so that long options are not penalised
  for their length. Invalid options (padding when examples have fewer options) get probability 0;
  an example with no valid option is an error.
  """
  logliks = np.asarray(logliks, np.float64)
  valid = np.broadcast_to(True if valid is None else np.asarray(valid, bool), logliks.shape)
  if not valid.any(axis=-1).all():
    raise ValueError("every example needs at least one valid option")
  masked = np.where(valid, logliks, -np.inf)
  weights = np.where(valid, np.exp(masked - masked.max(axis=-1, keepdims=True)), 0.0)
  return weights / weights.sum(axis=-1, keepdims=True)


REPEAT_RULES = ("all", "any", "majority", "first")


def combine_runs(labels: np.ndarray, rule: str) -> np.ndarray:
  """One label per example from [runs, examples] labels of repeated sampling runs: set in `all`
  runs (the default: unlearned under repeated sampling), in `any`, in a strict `majority`, or in
  the `first` run only."""
  labels = np.asarray(labels, bool)
  if labels.ndim != 2 or len(labels) == 0:
    raise ValueError(f"need a [runs, examples] array with at least one run; got shape {labels.shape}")
  if rule not in REPEAT_RULES:
    raise ValueError(f"repeat rule {rule!r} is not one of {REPEAT_RULES}")
  if rule == "all":
    return labels.all(0)
  if rule == "any":
    return labels.any(0)
  if rule == "majority":
    return labels.mean(0, dtype=np.float64) > 0.5
  return labels[0]


def temper(probs: np.ndarray, temperature: float) -> np.ndarray:
  """A distribution on the last axis at another temperature: p^(1/T), renormalised (equivalently a
  softmax of the logits divided by T). T = 0 puts all mass on the most probable entries, shared."""
  probs = np.asarray(probs, np.float64)
  if temperature < 0:
    raise ValueError(f"temperature must be >= 0, got {temperature}")
  if temperature == 0:
    top = probs == probs.max(axis=-1, keepdims=True)
    return top / top.sum(axis=-1, keepdims=True)
  logs = np.where(probs > 0, np.log(np.where(probs > 0, probs, 1.0)), -np.inf) / temperature
  weights = np.exp(logs - logs.max(axis=-1, keepdims=True))
  return weights / weights.sum(axis=-1, keepdims=True)


def draw(probs: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
  """[examples, n] indices drawn from each row's distribution (inverse CDF, one uniform per draw)."""
  probs = np.asarray(probs, np.float64)
  cdf = np.cumsum(probs, axis=-1)
  u = rng.random((len(probs), n)) * cdf[:, -1:]
  return np.minimum((cdf[:, None, :] <= u[:, :, None]).sum(-1), probs.shape[-1] - 1)


def blind(pass_rate: np.ndarray, bon_rate: np.ndarray, pass_threshold: float, bon_threshold: float) -> np.ndarray:
  """The paper's blind fact: pass rate below `pass_threshold` (paper: pass@10 < 0.2) and best-of-k
  accuracy below `bon_threshold` (paper: BoN-5 < 0.1)."""
  return (np.asarray(pass_rate) < pass_threshold) & (np.asarray(bon_rate) < bon_threshold)
