"""The multiple-choice probe's distractors from the base model's own sampled wrong answers:
answer equivalence, ranking, the order options are filled in, their sources, and the config rules."""

import collections
import zlib

import numpy as np
import pytest

from ilp import config as config_lib
from ilp.detection import multiple_choice as mc
from ilp.detection.config import DetectConfig, MCConfig
from ilp.scoring import equivalence
from ilp.scoring.equivalence import AnswersConfig
from ilp.scoring.verifiers import get_verifier, normalize, rouge_l
from ilp.typed import ConfigError

LONG = "he was born in the old city of lyon in 1950"


def test_equivalence_is_normalised_equality_or_rouge_l_for_long_answers():
  same = lambda a, b, tau: equivalence.equivalent(a, b, AnswersConfig(rouge_l=tau))
  assert same("The Paris!", "paris", 0.9) and not same("paris", "lyon", 0.9)
  # Short answers: one word apart is another answer, however high their ROUGE-L.
  assert rouge_l("born in paris", "born in lyon") > 0.6 and not same("born in paris", "born in lyon", 0.6)
  reworded = "he was born in the city of lyon in 1950 ."
  assert rouge_l(LONG, reworded) >= 0.9 and same(LONG, reworded, 0.9)
  other = "he was born in the new city of paris in 1950"  # 8 of 10 normalised words in common
  assert rouge_l(LONG, other) == pytest.approx(0.8) and not same(LONG, other, 0.9)
  assert same(LONG, other, 0.8)
  assert not equivalence.equivalent("born in paris", "born in lyon", AnswersConfig(rouge_l=0.6, few_words=3))
  assert equivalence.equivalent("born in old paris", "born in old lyon", AnswersConfig(rouge_l=0.7, few_words=3))
  pairs = [("The Paris!", "paris"), (LONG, reworded), (LONG, other), ("The Paris!", "paris")]
  assert equivalence.pairwise([a for a, _ in pairs], [b for _, b in pairs]).tolist() == [True, True, False, True]
  verifier = get_verifier("equivalent", answers=AnswersConfig(rouge_l=0.8))
  assert verifier(other, LONG) and not get_verifier("equivalent")(other, LONG)
  for field, value in (("rouge_l", 0.0), ("few_words", -1)):
    with pytest.raises(ConfigError, match=f"'detect.answers.{field}'"):
      config_lib.load({"detect": {"answers": {field: value}}})


def test_ranked_wrong_answers_match_a_direct_count():
  samples = ["Lyon", "paris", "nice", "lyon.", "The Paris", "", "the", "Nice", "lyon", "rome", "marseille", "Rome"]
  ranked = mc.ranked_wrong_answers(samples, "Paris", AnswersConfig())
  # Direct: count normalised answers (short ones: equivalence is equality), drop the reference's and
  # empty ones, order by count, ties by first appearance, each in the words of its first sample.
  first = {}
  for s in samples:
    first.setdefault(normalize(s), s)
  counts = collections.Counter(normalize(s) for s in samples)
  expected = [
    first[k] for k in sorted(first, key=lambda k: (-counts[k], list(first).index(k))) if k and k != normalize("Paris")
  ]
  assert ranked == expected == ["Lyon", "nice", "rome", "marseille"]
  # Long answers that ROUGE-L calls the same are one answer; one equivalent to the reference is dropped.
  long_samples = [
    "he was born in the new city of paris in 1950",
    LONG + " .",
    "she moved to lyon in 1950 with him",
    "he was born in new city of paris in 1950",
    "he was born in the city of lyon in 1950",
  ]
  assert mc.ranked_wrong_answers(long_samples, LONG, AnswersConfig()) == [long_samples[0], long_samples[2]]


def _pools(responses, supplied):
  n = len(responses)
  return mc.Distractors(
    mc.distractor_pools(responses, ["d"] * n), mc.distractor_pools(responses, [0] * n), ["d"] * n, [0] * n, supplied
  )


def test_options_fill_record_then_base_then_pool_and_count_their_sources():
  responses = ["paris", "rome", "madrid", "berlin", "oslo", "lisbon"]
  distractors = _pools(responses, [["Vienna", "vienna!", "paris"]] + [[]] * 5)
  # The base model's answers: its greedy answer, then its ranked samples (one repeats the record's, one the target).
  base = [["lyon", "Vienna", "The Paris", "nice", "marseille"]]
  chosen = mc.choose_options(["a"], [0], ["paris"], distractors, base, 4, "random", seed=3)
  assert chosen.texts == [["paris", "Vienna", "lyon", "nice"]] and chosen.counts.tolist() == [[1, 2, 0]]
  # Few base answers: the pool fills the rest, in the draw of the example's own generator (direct computation).
  chosen = mc.choose_options(["a"], [0], ["paris"], distractors, [["lyon"]], 5, "random", seed=3)
  candidates = [r for r in responses if r != "paris"]
  order = np.random.default_rng([3, zlib.crc32(b"a")]).permutation(len(candidates))
  assert chosen.texts[0] == ["paris", "Vienna", "lyon"] + [candidates[j] for j in order[:2]]
  assert chosen.counts.tolist() == [[1, 1, 2]]


def test_without_a_base_model_the_pool_fills_as_before():
  responses = ["paris", "rome", "madrid", "berlin", "oslo"]
  distractors = _pools(responses, [[]] * 5)
  none = mc.choose_options(["a", "b"], [0, 1], ["paris", "rome"], distractors, None, 4, "same_kind", seed=0)
  empty = mc.choose_options(["a", "b"], [0, 1], ["paris", "rome"], distractors, [[], []], 4, "same_kind", seed=0)
  assert none.texts == empty.texts and none.counts.tolist() == [[0, 0, 3], [0, 0, 3]]
  for e, (ident, target) in enumerate((("a", "paris"), ("b", "rome"))):
    candidates = [r for r in responses if r != target]
    order = np.random.default_rng([0, zlib.crc32(ident.encode())]).permutation(len(candidates))
    assert none.texts[e] == [target] + [candidates[j] for j in order[:3]]


def test_base_distractors_need_a_base_model():
  with pytest.raises(ConfigError, match="'mc.base_distractors'"):
    DetectConfig(base="", mc=MCConfig(base_distractors=True))
  with pytest.raises(ConfigError, match="'detect.mc.base_distractors': .*detect.base is empty"):
    config_lib.load({"detect": {"base": "", "mc": {"base_distractors": True}}})
  reference = {"base_distractors": True, "distractor_model": "reference"}
  with pytest.raises(ConfigError, match="'detect.mc.base_distractors': .*detect.reference is empty"):
    config_lib.load({"detect": {"mc": reference}})
  written = DetectConfig(base="", reference="/models/instruct", mc=MCConfig(**reference))
  assert written.mc.distractor_model == "reference"
  with pytest.raises(ConfigError, match="'detect.mc.distractor_model': 'sft' is not one of"):
    config_lib.load({"detect": {"mc": {"distractor_model": "sft"}}})
  assert DetectConfig(base="").mc.base_distractors is None  # the default: on exactly when a base model is set
  assert DetectConfig(base="", mc=MCConfig(base_distractors=False)).base == ""
  for field, value in (("base_samples", 0), ("base_temperature", 0.0)):
    with pytest.raises(ConfigError, match=f"'detect.mc.{field}'"):
      config_lib.load({"detect": {"mc": {field: value}}})


def test_duplicate_answers_offer_the_other_labels_of_the_same_prompt():
  prompts = ["where was p1 born ?", "Where was p1 born?", "where was p1 born ?", "where was p2 born ?"]
  responses = ["c1", "c2", "c1", "c3"]
  out = mc.duplicate_answers(prompts, responses)
  assert out == [["c2"], ["c1"], ["c2"], []]  # normalised prompts match; one's own answer never offered
