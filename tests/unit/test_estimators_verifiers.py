"""Sample estimators against brute-force enumeration and hand computations; verifiers on known values."""

from __future__ import annotations

import itertools
import math
import pickle

import numpy as np
import pytest

from ilp.scoring import estimators as est
from ilp.scoring import verifiers as ver


def test_pass_fraction():
  correct = np.array([[True, False, True, True], [False] * 4])
  np.testing.assert_array_equal(est.pass_fraction(correct), [0.75, 0.0])
  assert est.pass_fraction(correct).dtype == np.float64


def test_unbiased_pass_at_k_matches_subset_enumeration():
  for n in range(1, 9):
    for c in range(n + 1):
      samples = [True] * c + [False] * (n - c)
      for k in range(1, n + 1):
        subsets = list(itertools.combinations(samples, k))
        expected = sum(any(s) for s in subsets) / len(subsets)
        assert est.unbiased_pass_at_k(n, c, k) == pytest.approx(expected, abs=1e-12), (n, c, k)


def test_unbiased_pass_at_k_vectorised_and_large():
  n = np.array([8, 8, 5, 200])
  c = np.array([0, 3, 4, 7])
  got = est.unbiased_pass_at_k(n, c, 2)
  expected = [1 - math.comb(int(ni - ci), 2) / math.comb(int(ni), 2) for ni, ci in zip(n, c)]
  np.testing.assert_allclose(got, expected, rtol=1e-12)
  assert isinstance(est.unbiased_pass_at_k(8, 3, 2), float)
  # C(2000, 1000) overflows float64; the product form does not.
  assert est.unbiased_pass_at_k(2000, 1, 1000) == pytest.approx(0.5)
  assert est.unbiased_pass_at_k(10, 8, 3) == 1.0


@pytest.mark.parametrize("n, c, k", [(4, 1, 5), (4, 1, 0), (4, 5, 2), (4, -1, 2)])
def test_unbiased_pass_at_k_rejects(n: int, c: int, k: int):
  with pytest.raises(ValueError):
    est.unbiased_pass_at_k(n, c, k)


def test_best_of_n_ties_are_averaged():
  correct = np.array([[True, False, True, False], [False, True, False, True], [True, False, False, False]])
  confidence = np.array([[0.1, 0.9, 0.9, 0.2], [0.5, 0.5, 0.5, 0.5], [-np.inf, 0.3, 0.2, 0.1]])
  np.testing.assert_allclose(est.best_of_n(correct, confidence), [0.5, 0.5, 0.0])
  assert est.best_of_n([True, False], [2.0, 1.0]) == 1.0
  with pytest.raises(ValueError, match="NaN"):
    est.best_of_n([True, False], [np.nan, 1.0])


def brute_best_of_k(correct: np.ndarray, confidence: np.ndarray, k: int) -> float:
  subsets = [list(s) for s in itertools.combinations(range(len(correct)), k)]
  return float(np.mean([est.best_of_n(correct[s], confidence[s]) for s in subsets]))


def test_best_of_k_matches_subset_enumeration_with_ties():
  rng = np.random.default_rng(0)
  for n in range(1, 8):
    correct = rng.random((12, n)) < 0.5
    confidence = rng.integers(0, 3, (12, n)).astype(float)  # few levels: many ties
    confidence[0] = rng.random(n)  # and one row without ties
    for k in range(1, n + 1):
      got = est.best_of_k(correct, confidence, k)
      expected = [brute_best_of_k(correct[i], confidence[i], k) for i in range(len(correct))]
      np.testing.assert_allclose(got, expected, atol=1e-12, err_msg=f"n={n} k={k}")
    np.testing.assert_allclose(est.best_of_k(correct, confidence, n), est.best_of_n(correct, confidence))
    np.testing.assert_allclose(est.best_of_k(correct, confidence, 1), est.pass_fraction(correct))


def test_best_of_k_shapes_and_errors():
  correct = np.zeros((2, 3, 5), bool)
  correct[..., 0] = True
  confidence = np.broadcast_to(np.arange(5.0), (2, 3, 5))
  got = est.best_of_k(correct, confidence, 2)  # the correct sample is the least confident: never best of 2
  assert got.shape == (2, 3) and np.all(got == 0.0)
  assert est.best_of_k([True, False, False], [3.0, 2.0, 1.0], 2) == pytest.approx(2 / 3)
  with pytest.raises(ValueError, match="k <= n"):
    est.best_of_k(correct, confidence, 6)


def test_cohen_kappa_by_hand():
  a = np.array([1, 1, 1, 1, 1, 1, 0, 0, 0, 0], bool)
  b = np.array([1, 1, 1, 1, 0, 0, 1, 0, 0, 0], bool)
  # Agreement 7/10; base rates 0.6 and 0.5, so chance agreement 0.6*0.5 + 0.4*0.5 = 0.5.
  assert est.cohen_kappa(a, b) == pytest.approx((0.7 - 0.5) / (1 - 0.5))
  assert est.cohen_kappa(a, a) == 1.0
  assert est.cohen_kappa(a, ~a) == pytest.approx(-12 / 13)  # p_o 0, p_e 0.6*0.4 + 0.4*0.6 = 0.48


def sklearn_kappa(a: np.ndarray, b: np.ndarray) -> float:
  """sklearn.metrics.cohen_kappa_score (unweighted), written out."""
  confusion = np.zeros((2, 2))
  np.add.at(confusion, (a.astype(int), b.astype(int)), 1)
  expected = np.outer(confusion.sum(axis=1), confusion.sum(axis=0)) / confusion.sum()
  weights = 1 - np.eye(2)
  return 1 - np.sum(weights * confusion) / np.sum(weights * expected)


def test_cohen_kappa_matches_sklearn_formula():
  rng = np.random.default_rng(1)
  for _ in range(50):
    a = rng.random(30) < rng.random()
    b = np.where(rng.random(30) < 0.7, a, rng.random(30) < 0.5)
    if len(set(a.tolist())) == 1 and np.array_equal(a, b):
      continue  # sklearn's 0/0
    assert est.cohen_kappa(a, b) == pytest.approx(sklearn_kappa(a, b), abs=1e-12)


def test_cohen_kappa_constant_labelings():
  ones, zeros = np.ones(6, bool), np.zeros(6, bool)
  assert est.cohen_kappa(ones, ones) == 1.0 and est.cohen_kappa(zeros, zeros) == 1.0
  assert est.cohen_kappa(ones, zeros) == 0.0
  with pytest.raises(ValueError):
    est.cohen_kappa(ones, ones[:3])


def test_mean_pairwise_kappa():
  rng = np.random.default_rng(2)
  labelings = rng.random((4, 25)) < 0.5
  pairs = [est.cohen_kappa(labelings[i], labelings[j]) for i in range(4) for j in range(i + 1, 4)]
  assert len(pairs) == 6
  assert est.mean_pairwise_kappa(labelings) == pytest.approx(np.mean(pairs))
  with pytest.raises(ValueError, match="S >= 2"):
    est.mean_pairwise_kappa(labelings[:1])


def direct_jsd(p: list[float], q: list[float]) -> float:
  m = [(x + y) / 2 for x, y in zip(p, q)]
  kl = lambda x, y: sum(xi * math.log2(xi / yi) for xi, yi in zip(x, y) if xi > 0)  # noqa: E731
  return 0.5 * kl(p, m) + 0.5 * kl(q, m)


def test_js_divergence():
  rng = np.random.default_rng(3)
  p = rng.dirichlet(np.ones(5), size=10)
  q = rng.dirichlet(np.ones(5), size=10)
  p[0, 2] = 0.0
  p[0] /= p[0].sum()
  got = est.js_divergence(p, q)
  np.testing.assert_allclose(got, [direct_jsd(list(a), list(b)) for a, b in zip(p, q)], rtol=1e-12)
  np.testing.assert_allclose(got, est.js_divergence(q, p), rtol=1e-12)
  assert np.all((got >= 0) & (got <= 1))
  np.testing.assert_array_equal(est.js_divergence(p, p), 0.0)
  assert est.js_divergence([1.0, 0.0, 0.0], [0.0, 0.5, 0.5]) == pytest.approx(1.0)
  assert est.js_divergence([1.0, 0.0], [0.5, 0.5]) == pytest.approx(direct_jsd([1.0, 0.0], [0.5, 0.5]))


def test_option_distribution():
  logliks = np.array([[-1.0, -2.0, -3.0, 99.0], [-1000.0, -1001.0, -1002.0, -1003.0]])
  valid = np.array([[True, True, True, False], [True] * 4])
  got = est.option_distribution(logliks, valid)
  first = np.exp([-1.0, -2.0, -3.0]) / np.exp([-1.0, -2.0, -3.0]).sum()
  np.testing.assert_allclose(got[0], [*first, 0.0], rtol=1e-12)
  np.testing.assert_allclose(got[1], np.exp(-np.arange(4.0)) / np.exp(-np.arange(4.0)).sum(), rtol=1e-12)
  np.testing.assert_allclose(got.sum(axis=-1), 1.0)
  np.testing.assert_allclose(est.option_distribution(logliks[1]), got[1])
  with pytest.raises(ValueError, match="valid option"):
    est.option_distribution(logliks, np.zeros((2, 4), bool))


def test_normalize_and_exact_match():
  assert ver.normalize("  The Eiffel   tower! ") == "eiffel tower"
  assert ver.normalize("An apple, a day.") == "apple day"
  assert ver.exact_match("The Eiffel tower!", "eiffel tower")
  assert not ver.exact_match("Eiffel tower in Paris", "eiffel tower")


def test_token_f1_and_rouge_l():
  # "cat sat on mat" vs "cat on mat": 3 shared tokens, precision 3/4, recall 1.
  assert ver.token_f1("The cat sat on the mat.", "cat on mat") == pytest.approx(6 / 7)
  assert ver.rouge_l("The cat sat on the mat.", "cat on mat") == pytest.approx(6 / 7)
  # Same tokens, other order: F1 ignores order, ROUGE-L's LCS ("cat sat") does not.
  assert ver.token_f1("mat on cat sat", "cat sat on mat") == 1.0
  assert ver.rouge_l("mat on cat sat", "cat sat on mat") == pytest.approx(0.5)
  # The ROUGE paper's example, normalised to "police killed gunman" vs "police kill gunman".
  assert ver.rouge_l("police killed the gunman", "police kill the gunman") == pytest.approx(2 / 3)
  assert ver.token_f1("", "") == 1.0 and ver.rouge_l("the", "") == 1.0
  assert ver.token_f1("paris", "") == 0.0 and ver.rouge_l("", "paris") == 0.0
  assert ver.token_f1("a b c", "d e") == 0.0


@pytest.mark.parametrize(
  "pred, letter",
  [
    ("B", "B"),
    ("(b)", "B"),
    ("Answer: C.", "C"),
    ("b", "B"),
    ("d) Paris", "D"),
    ("The answer is (A), not B", "A"),
    ("A cat would say D", "D"),
    ("A.", "A"),
    ("I think so", None),
    ("Options: CD", None),
  ],
)
def test_multiple_choice_letter(pred: str, letter: str | None):
  for ref in "ABCD":
    assert ver.multiple_choice_letter(pred, f"({ref})") == (ref == letter), (pred, ref)


def test_multiple_choice_reference_needs_a_letter():
  with pytest.raises(ValueError, match="no option letter"):
    ver.multiple_choice_letter("B", "Paris")


def test_get_verifier():
  assert ver.get_verifier("exact_match")("The Eiffel tower!", "eiffel tower")
  assert ver.get_verifier("mc_letter")("Answer: C.", "C")
  assert ver.get_verifier("token_f1", 0.8)("The cat sat on the mat.", "cat on mat")  # 0.857
  assert not ver.get_verifier("token_f1", 0.9)("The cat sat on the mat.", "cat on mat")
  assert ver.get_verifier("rouge_l")("mat on cat sat", "cat sat on mat")  # 0.5 >= 0.5
  assert not ver.get_verifier("rouge_l", 0.6)("mat on cat sat", "cat sat on mat")
  assert pickle.loads(pickle.dumps(ver.get_verifier("rouge_l", 0.6)))("cat", "cat")
  assert set(ver.VERIFIERS) == {"exact_match", "token_f1", "rouge_l", "mc_letter", "equivalent"}
  assert pickle.loads(pickle.dumps(ver.get_verifier("equivalent")))("The Paris", "paris")
  for name in ver.VERIFIERS:
    assert callable(ver.get_verifier(name))


def test_unknown_verifier_is_named():
  with pytest.raises(ValueError) as error:
    ver.get_verifier("bleu")
  message = str(error.value)
  assert "'bleu'" in message and all(name in message for name in ver.VERIFIERS)
  with pytest.raises(ValueError, match="threshold"):
    ver.get_verifier("token_f1", 1.5)


def test_repeat_rules_combine_run_labels():
  labels = np.array([[1, 1, 0, 0, 1], [1, 0, 0, 1, 1], [1, 0, 0, 0, 0]], bool)
  assert est.combine_runs(labels, "all").tolist() == [True, False, False, False, False]
  assert est.combine_runs(labels, "any").tolist() == [True, True, False, True, True]
  assert est.combine_runs(labels, "majority").tolist() == [True, False, False, False, True]
  assert est.combine_runs(labels, "first").tolist() == labels[0].tolist()
  with pytest.raises(ValueError, match="repeat rule"):
    est.combine_runs(labels, "most")


def test_temper_and_draw_follow_the_tempered_distribution():
  probs = np.array([[0.5, 0.3, 0.2, 0.0]])
  direct = probs[0, :3] ** (1 / 0.5) / (probs[0, :3] ** (1 / 0.5)).sum()
  np.testing.assert_allclose(est.temper(probs, 0.5)[0, :3], direct)
  assert est.temper(probs, 0.5)[0, 3] == 0.0
  np.testing.assert_allclose(est.temper(probs, 1.0), probs)
  np.testing.assert_array_equal(est.temper(np.array([[0.4, 0.4, 0.2]]), 0.0), [[0.5, 0.5, 0.0]])
  drawn = est.draw(est.temper(probs, 0.5), 40_000, np.random.default_rng(0))[0]
  np.testing.assert_allclose(np.bincount(drawn, minlength=4) / drawn.size, [*direct, 0.0], atol=0.01)


def test_mc_predictions_pass_rate_and_bon_against_brute_force():
  """The paper's MC protocol: N predictions drawn from the option distribution; BoN is correct when
  the most confident predicted option (highest probability) is the true one (option 0)."""
  from ilp.detection import multiple_choice as mc

  probs = np.array([[0.6, 0.2, 0.1, 0.1], [0.1, 0.7, 0.1, 0.1], [0.3, 0.3, 0.2, 0.2]])
  correct, confidence = mc.predictions(probs, 1.0, 1.0, 5, seed=4)
  drawn = est.draw(probs, 5, np.random.default_rng([4, 31]))
  np.testing.assert_array_equal(correct, drawn == 0)
  np.testing.assert_allclose(confidence, np.log(np.take_along_axis(probs, drawn, 1)))
  bon = est.best_of_n(correct, confidence)
  for e in range(3):
    best = probs[e, drawn[e]].max()
    top = drawn[e][probs[e, drawn[e]] == best]
    assert bon[e] == np.mean(top == 0)
  greedy, _ = mc.predictions(probs[:2], 0.0, 1.0, 5, seed=4)  # temperature 0: always the argmax
  np.testing.assert_array_equal(greedy.mean(1), [1.0, 0.0])


def test_blind_fact_rule():
  assert est.blind([0.1, 0.1, 0.3, 0.0], [0.05, 0.2, 0.0, 0.0], 0.2, 0.1).tolist() == [True, False, False, True]
