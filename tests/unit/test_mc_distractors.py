"""The multiple-choice probe's distractors from the base model's own sampled wrong answers:
answer equivalence, ranking, the order options are filled in, their sources, and the config rules."""

import collections
import zlib

import numpy as np
import pytest

from ilp import config as config_lib
from ilp.detection import multiple_choice as mc
from ilp.detection.config import DetectConfig, MCConfig
from ilp.scoring.equivalence import Answers, AnswersConfig
from ilp.scoring.verifiers import get_verifier, normalize, rouge_l
from ilp.typed import ConfigError

LONG = "he was born in the old city of lyon in 1950"


def test_equivalence_is_normalised_equality_or_rouge_l_without_contradicting_facts():
  same = lambda a, b, tau: Answers(AnswersConfig(rouge_l=tau)).equivalent(a, b)
  assert same("The Paris!", "paris", 0.9) and not same("paris", "lyon", 0.9)
  # Short answers: one word apart is another answer, however high their ROUGE-L.
  assert rouge_l("born in paris", "born in lyon") > 0.6 and not same("born in paris", "born in lyon", 0.6)
  reworded = "he was born in the city of lyon in 1950 ."  # drops a word: states nothing the other does not
  assert rouge_l(LONG, reworded) >= 0.9 and same(LONG, reworded, 0.9)
  assert not same(LONG, reworded, 0.99)
  other = "he was born in the new city of paris in 1950"  # 8 of 10 normalised words in common
  # Fitted to no answers, every word is a fact: each states one the other does not (a contradiction).
  assert rouge_l(LONG, other) == pytest.approx(0.8) and not same(LONG, other, 0.8) and not same(LONG, other, 0.5)
  longer = "he was born in the old city of lyon in 1950 , they say"
  assert same(LONG, longer, 0.9) and not same(LONG, longer, 0.95)  # adds words, contradicts none
  assert not Answers(AnswersConfig(few_words=3)).equivalent("born in old paris", "born in old lyon")
  pairs = [("The Paris!", "paris"), (LONG, reworded), (LONG, other), ("The Paris!", "paris")]
  assert Answers().pairwise([a for a, _ in pairs], [b for _, b in pairs]).tolist() == [True, True, False, True]
  verifier = get_verifier("equivalent", answers=Answers(AnswersConfig(rouge_l=0.8)))
  assert verifier(longer, LONG) and get_verifier("equivalent")(longer, LONG)
  assert not get_verifier("equivalent", answers=Answers(AnswersConfig(rouge_l=0.95)))(longer, LONG)
  for field, value in (("rouge_l", 0.0), ("few_words", -1), ("fact_share", 0.0)):
    with pytest.raises(ConfigError, match=f"'detect.answers.{field}'"):
      config_lib.load({"detect": {"answers": {field: value}}})


def _birth_answers(rng):
  """Sentence answers about 100 people in 40 cities, each in one of four wordings."""
  templates = (
    "{p} was born in {c} .",
    "{p} comes from {c} .",
    "the birthplace of {p} is {c} .",
    "{p} grew up in {c} .",
  )
  return [rng.choice(templates).format(p=f"p{i}", c=f"c{rng.integers(40)}") for i in range(100)]


def test_long_answers_are_equivalent_when_they_state_the_same_facts():
  answers = _birth_answers(np.random.default_rng(0))
  fitted = Answers(AnswersConfig(), answers)
  # Facts by a direct count: words in fewer than max(3, ceil(3% of the distinct answers)) of them.
  distinct = {frozenset(w for w in a.lower().replace(".", " ").split()) for a in answers}
  df = collections.Counter(w for words in distinct for w in words)
  rare = {w for w, n in df.items() if n < max(3, int(np.ceil(0.03 * len(distinct))))}
  for a in answers:
    assert fitted.facts(a) == {w for w in a.lower().split() if w in rare}
  assert fitted.facts("p5 was born in c3 .") == {"p5", "c3"}
  paraphrase, contradiction = "the birthplace of p5 is c3 .", "p5 was born in c7 ."
  # ROUGE-L ranks the contradiction above the paraphrase; the facts tell them apart.
  assert rouge_l("p5 was born in c3 .", contradiction) > rouge_l("p5 was born in c3 .", paraphrase)
  assert fitted.equivalent("p5 was born in c3 .", paraphrase)
  assert not fitted.equivalent("p5 was born in c3 .", contradiction)
  # What a long answer adds to its prompt: the facts the prompt does not name (its key).
  assert (
    fitted.content(paraphrase, "where was p5 born ?")
    == ["c3"]
    == fitted.content(contradiction.replace("c7", "c3"), "where was p5 born ?")
  )
  assert fitted.key(paraphrase, "where was p5 born ?") == "c3"
  assert fitted.key("The Paris", "where ?") == "paris" and fitted.content("The Paris", "where ?") == ["the", "paris"]


def test_long_answers_are_also_equivalent_by_centred_embedding_cosine_unless_facts_contradict():
  answers = _birth_answers(np.random.default_rng(0))
  texts = [
    "p5 is a baker by trade .",
    "p5 earns a living baking bread .",
    "p5 was born in c77 .",
    "p5 was born in c78 .",
  ]
  # "trade" and "baker" vs "earns", "living", "baking", "bread": more rare words apart than a swap
  rng = np.random.default_rng(1)
  vectors = rng.standard_normal((len(texts), 8))
  vectors[1] = vectors[0] + 0.05 * rng.standard_normal(8)  # the rewording, embedded alike
  vectors[3] = vectors[2]  # one changed place, embedded the same
  plain = Answers(AnswersConfig(), answers + texts)
  fitted = plain.with_embeddings(texts + texts[:1], np.concatenate([vectors, vectors[:1]]))
  centre = vectors.mean(0)  # over the distinct texts: the repeated one counts once
  u, w = vectors[0] - centre, vectors[1] - centre
  direct = u @ w / np.linalg.norm(u) / np.linalg.norm(w)
  assert fitted.cosine(texts[0], texts[1]) == pytest.approx(direct, rel=1e-5) and direct > 0.9
  assert rouge_l(texts[0], texts[1]) < 0.9 and not plain.equivalent(texts[0], texts[1])
  assert fitted.equivalent(texts[0], texts[1])
  strict = Answers(AnswersConfig(embedding=min(1.0, direct + 0.01)), answers + texts).with_embeddings(texts, vectors)
  assert not strict.equivalent(texts[0], texts[1])
  assert fitted.cosine(texts[2], texts[3]) == pytest.approx(1.0) and not fitted.equivalent(texts[2], texts[3])
  swap = "p5 is a cook by trade ."  # one fact swapped: a contradiction, however alike the embeddings
  near = plain.with_embeddings([texts[0], swap], np.stack([vectors[0], vectors[0] + 1e-3]))
  assert not near.equivalent(texts[0], swap) and not Answers(AnswersConfig(swap_facts=1), answers).contradict(
    frozenset({"a", "b", "c"}), frozenset({"a", "d", "e"})
  )
  assert fitted.cosine(texts[0], "an answer never embedded .") is None  # no embedder: compared by text alone
  off = Answers(AnswersConfig(embedding=0), answers + texts).with_embeddings(texts, vectors)
  assert off.cosine(texts[0], texts[1]) is None and not off.equivalent(texts[0], texts[1])
  calls = []
  embed = lambda batch: calls.append(list(batch)) or rng.standard_normal((len(batch), 8))
  lazy = plain.with_embeddings(texts, vectors, embed)
  lazy.prepare(["new one .", "new two .", texts[0], "new one ."])
  assert lazy.cosine("new one .", "new two .") is not None and calls == [["new one .", "new two ."]]


def test_ranked_wrong_answers_match_a_direct_count():
  samples = ["Lyon", "paris", "nice", "lyon.", "The Paris", "", "the", "Nice", "lyon", "rome", "marseille", "Rome"]
  ranked = mc.ranked_wrong_answers(samples, "Paris", Answers())
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
  # Long answers that say the same are one answer; one equivalent to the reference is dropped.
  long_samples = [
    "he was born in the new city of paris in 1950",
    LONG + " .",
    "she moved to lyon in 1950 with him",
    "he was born in new city of paris in 1950",
    "he was born in the city of lyon in 1950",
  ]
  assert mc.ranked_wrong_answers(long_samples, LONG, Answers()) == [long_samples[0], long_samples[2]]


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
  out = mc.duplicate_answers(prompts, responses, Answers())
  assert out == [["c2"], ["c1"], ["c2"], []]  # normalised prompts match; one's own answer never offered
  # Long answers: a paraphrase of one's own answer is not another label.
  long = ["q1 was born in d1 .", "the birthplace of q1 is d1 .", "q1 was born in d2 ."]
  fitted = Answers(AnswersConfig(), _birth_answers(np.random.default_rng(0)) + long)
  assert mc.duplicate_answers(["where was q1 born ?"] * 3, long, fitted) == [[long[2]], [long[2]], long[:2]]


def test_lead_in_is_a_long_answers_words_before_the_first_fact_it_adds():
  fitted = Answers(AnswersConfig(), _birth_answers(np.random.default_rng(0)))
  assert fitted.lead_in("the birthplace of p5 is c3 .", "where was p5 born ?") == "the birthplace of p5 is"
  assert fitted.lead_in("The birthplace of P5 is C3 .", "where was p5 born ?") == "The birthplace of P5 is"
  assert fitted.lead_in("c3 is where p5 was born .", "where was p5 born ?") == ""  # starts with the fact
  assert fitted.lead_in("c3", "where was p5 born ?") == ""  # a short answer
  assert fitted.lead_in("p5 was born in p5 .", "where was p5 born ?") == ""  # adds no fact
