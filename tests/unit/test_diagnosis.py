"""Diagnosis: each signal on hand-made tables with known answers, each rule, and the settings."""

import collections
import math

import ml_collections
import numpy as np
import pandas as pd
import pytest

from configs import base as base_config
from ilp import config as ilp_config
from ilp.data import retrieval, similarity
from ilp.diagnosis import attribution, corpus, signals
from ilp.diagnosis import diagnose as diagnose_lib
from ilp.typed import ConfigError


def _brute_tfidf(texts):
  """Independent TF-IDF (dicts): sublinear tf, smoothed idf, L2-normalised rows."""
  docs = [collections.Counter(similarity.words(t)) for t in texts]
  df = collections.Counter(w for d in docs for w in d)
  rows = []
  for d in docs:
    row = {w: (1 + math.log(c)) * (math.log((1 + len(texts)) / (1 + df[w])) + 1) for w, c in d.items()}
    norm = math.sqrt(sum(v * v for v in row.values()))
    rows.append({w: v / norm for w, v in row.items()})
  return rows


def test_tfidf_cosines_match_a_brute_force_computation():
  texts = ["where was p1 born ?", "what is the birthplace of p1 ?", "where was p2 born ? born", "the job of p2"]
  v = similarity.tfidf([similarity.words(t) for t in texts])
  dense = (v.matrix @ v.matrix.T).toarray()
  ref = _brute_tfidf(texts)
  for a in range(len(texts)):
    for b in range(len(texts)):
      assert dense[a, b] == pytest.approx(sum(x * ref[b].get(w, 0.0) for w, x in ref[a].items()), abs=1e-12)


PROMPTS = [
  "where was p1 born ?",
  "what is the birthplace of p1 ?",
  "where was p2 born ?",
  "what is the capital of france ?",
  "what is the capital of france ?",
  "tell me the birthplace , the country and the job of p3 .",
  "tell me the birthplace , the country and the job of p4 .",
  "where was p6 born ?",
  "tell me the birthplace , the country and the job of p5 .",
]


def test_near_duplicates_are_paraphrases_and_duplicates_not_one_template_about_two_things():
  tokenized = [similarity.words(t) for t in PROMPTS]
  v = similarity.tfidf(tokenized)
  found = similarity.patterns(tokenized, min_df=3)
  # "what is the capital of france ?" twice word for word counts once: "what" and "is" (2 distinct texts) are fillers
  assert found.slots[0] == ["p1"] and found.slots[5] == ["p3"] and found.slots[3] == ["what", "is", "capital", "france"]
  assert found.templates[5] == found.templates[6] == "tell me the birthplace , the country and the job of # ."
  vocab = {w: k for k, w in enumerate(sorted({w for s in found.slots for w in s}))}
  i, j, cos = similarity.near_duplicate_pairs(v, 0.3, max_df=100, slots=similarity.binary_matrix(found.slots, vocab))
  assert set(zip(i.tolist(), j.tolist())) == {(0, 1), (3, 4)}
  assert cos[list(zip(i, j)).index((3, 4))] == pytest.approx(1.0)
  i, j, _ = similarity.near_duplicate_pairs(v, 0.3, max_df=100)  # without slot fillers, templates match
  assert {(5, 6), (0, 2)} <= set(zip(i.tolist(), j.tolist()))


def test_corpus_evidence_support_contradiction_silence_and_coverage():
  prompts = [
    "where was p1 born ?",
    "where was p2 born ?",
    "where was p3 born ?",
    "what is the job of p4 ?",
    "what is the job of p5 ?",
    "tell me about p7 kindly .",
    "tell me about p6 .",
  ]  # no document says kindly
  references = ["c1", "c5", "c7", "j1", "j3", "c1 k9 j4", "c2"]
  documents = [
    "p1 was born in c1 .",
    "p2 comes from c7 .",
    "p2 grew up in c7 .",
    "p3 works as j2 .",
    "p4 works as j1 .",
    "c1 lies in k1 .",
    "p7 was born in c1 .",
    "p7 works as j4 .",
  ] + [f"c{k} is sunny ." for k in range(20)]
  found = similarity.patterns([similarity.words(p) for p in prompts], min_df=2)
  answers = [similarity.words(r) for r in references]
  kinds = similarity.answer_kinds(found.templates, references)
  ev = corpus.evidence(found, answers, kinds, retrieval.Corpus(documents), top_k=10)
  assert ev["corpus_entity_docs"].tolist() == [1, 2, 1, 1, 0, 2, 0]
  assert ev["corpus_support"].tolist() == [1, 0, 0, 1, 0, 0, 0]
  assert ev["corpus_contradiction"].tolist() == [0, 2, 0, 0, 0, 0, 0]  # p3's job is not an answer of its kind
  assert ev["corpus_answer_coverage"].tolist() == pytest.approx([1, 0, 0, 1, 0, 2 / 3, 0])  # p7: c1 and j4 stated
  few = corpus.evidence(found, answers, kinds, retrieval.Corpus(documents), top_k=1)
  assert few["corpus_entity_docs"].tolist() == [1, 1, 1, 1, 0, 1, 0]  # BM25 keeps the best-scoring document only


def test_embedding_pairs_find_paraphrases_and_skip_one_template_about_two_things():
  rng = np.random.default_rng(0)
  shared = rng.normal(size=16) * 10  # what every prompt's state has in common
  question = {name: rng.normal(size=16) for name in ("a", "b", "c")}
  noise = lambda: rng.normal(size=16) * 0.05
  embeddings = np.stack(
    [
      shared + question["a"] + noise(),
      shared + question["a"] + noise(),  # paraphrases
      shared + question["b"] + noise(),
      shared + question["b"] + noise(),  # p3 / p4
      shared + question["c"] + noise(),
    ]
  )
  i, j, cosine = similarity.embedding_pairs(embeddings, 0.9)
  assert set(zip(i.tolist(), j.tolist())) == {(0, 1), (2, 3)} and (cosine >= 0.9).all()
  centred = embeddings - embeddings.mean(0)
  unit = centred / np.linalg.norm(centred, axis=1, keepdims=True)
  assert cosine[0] == pytest.approx(unit[i[0]] @ unit[j[0]])
  slots = similarity.binary_matrix([["p1"], ["p1"], ["p3"], ["p4"], ["p5"]], {"p1": 0, "p3": 1, "p4": 2, "p5": 3})
  i, j, _ = similarity.embedding_pairs(embeddings, 0.9, slots)
  assert set(zip(i.tolist(), j.tolist())) == {(0, 1)}  # p3 and p4: two people, not one question
  assert len(similarity.embedding_pairs(embeddings[:1], 0.9)[0]) == 0


def test_embedding_pairs_are_each_prompts_nearest_above_the_threshold_by_brute_force():
  rng = np.random.default_rng(1)
  embeddings = rng.normal(size=(60, 4))  # few dimensions: many pairs above the threshold
  centred = embeddings - embeddings.mean(0)
  unit = centred / np.linalg.norm(centred, axis=1, keepdims=True)
  cos = unit @ unit.T
  np.fill_diagonal(cos, -np.inf)
  for cap in (3, 59):
    nearest = np.argsort(-cos, axis=1, kind="stable")[:, :cap]
    expected = {(min(a, b), max(a, b)) for a in range(60) for b in nearest[a] if cos[a, b] >= 0.6}
    i, j, cosine = similarity.embedding_pairs(embeddings, 0.6, max_neighbours=cap)
    assert set(zip(i.tolist(), j.tolist())) == expected and len(i) == len(expected)
    np.testing.assert_allclose(cosine, cos[i, j], rtol=1e-6)
  assert len(expected) > 60 * 3  # the cap of 3 bounded what 59 finds


def test_text_signals_union_lexical_and_embedding_pairs():
  """Two phrasings of the birthplace question; p1 is asked in both, with contradicting answers. The
  two share only p1 and "?"/".", so TF-IDF misses them; states dominated by the person find them."""
  asked = [("where was {} born ?", p, c) for p, c in (("p1", "c1"), ("p2", "c2"), ("p3", "c3"), ("p4", "c4"))]
  asked += [
    ("name the home city of {} .", p, c)
    for p, c in (("p5", "c1"), ("p6", "c2"), ("p7", "c5"), ("p8", "c6"), ("p1", "c9"))
  ]
  prompts = pd.Series([t.format(p) for t, p, _ in asked])
  references = pd.Series([c for _, _, c in asked])
  rng = np.random.default_rng(0)
  person = {p: rng.normal(size=8) * 10 for p in sorted({p for _, p, _ in asked})}
  template = {t: rng.normal(size=8) for t in sorted({t for t, _, _ in asked})}
  embeddings = np.stack([template[t] + person[p] for t, p, _ in asked])
  cfg = signals.SignalConfig(similarity_threshold=0.5, embedding_threshold=0.9)
  lexical_only = signals.text_signals(prompts, references, None, cfg)
  assert lexical_only["disagreeing_duplicates"].sum() == 0
  both = signals.text_signals(prompts, references, None, cfg, embeddings=embeddings)
  assert both["disagreeing_duplicates"].tolist() == [1, 0, 0, 0, 0, 0, 0, 0, 1]
  assert both["embedding_duplicates"].tolist() == [1, 0, 0, 0, 0, 0, 0, 0, 1]


def _log(rows):
  """Dynamics rows from {id: (phase trained, nll per pass, exact match per pass, margin per pass)}."""
  passes = [
    (0, "start", 1, False),
    (10, "s1/e1", 1, False),
    (20, "s1/e2", 1, True),
    (30, "s2/e1", 2, False),
    (40, "s2/e2", 2, True),
  ]
  evals, visits = [], []
  for ident, (phase, nll, em, margin) in rows.items():
    for (step, name, s, end), n, e, m in zip(passes, nll, em, margin):
      evals.append(
        dict(
          kind="eval",
          id=ident,
          step=step,
          eval_point=name,
          train_phase=s,
          phase_end=end,
          stream_position=-1,
          nll_sum=n,
          tokens=2.0,
          loss=n / 2,
          gold_prob=math.exp(-n / 2),
          exact_match=float(e),
          margin_mean=m,
        )
      )
    own = [n for (_, _, s, _), n in zip(passes, nll) if s == phase] if phase == 1 else nll[2:]
    for k, n in enumerate(own):  # training visits whose loss follows its passes in its own phase
      visits.append(
        dict(
          kind="batch",
          id=ident,
          step=10 * (phase - 1) * 2 + k,
          train_phase=phase,
          stream_position=(phase - 1) * 100 + k,
          loss=n / 2,
        )
      )
  return pd.DataFrame(evals + visits)


def test_dynamics_signals_forgetting_improvement_oscillation():
  log = _log(
    {
      "a": (1, [3.0, 0.5, 0.1, 1.0, 2.0], [0, 1, 1, 0, 0], [-2, 1, 2, -1, -1]),
      "b": (2, [4.0, 4.0, 4.0, 2.0, 1.0], [0, 0, 0, 0, 0], [-5, -5, -5, -3, -1]),
      "c": (2, [2.0, 2.0, 2.0, 1.0, 2.0], [0, 0, 0, 1, 0], [-1, -1, -1, 1, -1]),
    }
  )
  out = signals.dynamics_signals(log, pd.Index(["a", "b", "c"]), slope_passes=2, improvement_window=0.5)
  a, b, c = (out.loc[k] for k in "abc")
  assert (a.own_phase, b.own_phase, a.final_phase) == (1, 2, 2)
  assert a.peak_drop == pytest.approx(1 - math.exp(-2.0) / math.exp(-0.1))
  assert a.learned_then_lost and not c.learned_then_lost and b.peak_drop == 0
  assert (a.forgetting_events, c.forgetting_events) == (1, 1)
  assert a.steps_to_positive_margin == 10 and math.isnan(b.steps_to_positive_margin)
  assert a.initial_margin == -2 and b.initial_margin == -5
  assert b.recent_improvement == pytest.approx((2.0 - 0.5) / 2.0)
  assert b.steady_improvement == 1.0 and not b.ever_learned
  assert a.loss_oscillation == pytest.approx(0.0) and c.loss_oscillation == pytest.approx(1.0)
  assert b.last_visit_position == pytest.approx(102 / 102) and a.last_visit_position == pytest.approx(2 / 102)
  assert b.visit_improvement == pytest.approx((1.9166667 - 0.4166667) / 1.9166667)  # the line through 2, 1, 0.5
  assert a.visit_improvement == pytest.approx((1.325 + 0.125) / 1.325)  # 1.5, .25, .05: the line ends below 0
  assert c.correctness == pytest.approx(0.25)


def test_visit_improvement_is_the_least_squares_fall_over_the_last_own_phase_visits():
  """Checked against numpy's polyfit on each example's window; an example's visits of other
  phases are not its own, and too few visits give no trend."""
  rng = np.random.default_rng(0)
  rows, expected = [], {}
  for k, (n, slope) in enumerate([(20, -0.05), (9, 0.02), (7, -0.3), (2, -1.0)]):
    loss = 3.0 + slope * np.arange(n) + rng.normal(0, 0.05, n)
    rows += [dict(id=f"e{k}", step=3 * v + k, train_phase=2, loss=loss[v]) for v in range(n)]
    rows.append(dict(id=f"e{k}", step=1000, train_phase=1, loss=99.0))  # replaced by phase 2's visits: not its own
    if n >= signals.MIN_TREND_VISITS:
      window = loss[n - max(math.ceil(n * 0.4), signals.MIN_TREND_VISITS) :]
      fitted = np.polyval(np.polyfit(np.arange(len(window)), window, 1), [0, len(window) - 1])
      expected[f"e{k}"] = (fitted[0] - fitted[1]) / fitted[0]
  visits = pd.DataFrame(rows).sample(frac=1.0, random_state=1)  # the log's order does not matter
  got = signals.visit_improvement(visits, pd.Index(["e0", "e1", "e2", "e3", "absent"]), 0.4)
  np.testing.assert_allclose(got[:3], [expected["e0"], expected["e1"], expected["e2"]], rtol=1e-9)
  assert got[0] > 0.05 and got[1] < 0 and np.isnan(got[3]) and np.isnan(got[4])


def test_text_signals_contradicting_duplicates_and_rarity():
  prompts = pd.Series(PROMPTS, index=[f"x{k}" for k in range(len(PROMPTS))])
  references = pd.Series(
    ["c1", "c2", "c3", "paris", "lyon", "c4 k1 j1", "c5 k2 j2", "c2", "c6 k3 j3"], index=prompts.index
  )  # x7 answers c2 like x1: both birthplace templates are one kind
  greedy = pd.Series(["c2", "c2", "c3", "paris", "paris", "c4", "c5", "c9", "c6"], index=prompts.index)
  cfg = signals.SignalConfig(similarity_threshold=0.3)
  out = signals.text_signals(prompts, references, greedy, cfg)
  assert out["disagreeing_duplicates"].tolist() == [1, 1, 0, 1, 1, 0, 0, 0, 0]
  assert out["duplicate_group_size"].tolist() == [2, 2, 1, 2, 2, 1, 1, 1, 1]
  group = out["duplicate_group"].tolist()
  assert group[0] == group[1] != group[3] == group[4] and group[2] == -1
  assert out["answers_partner_target"].tolist() == [True, False, False, False, True, False, False, False, False]
  assert out["duplicate_agreement"].iloc[0] == 0.0 and np.isnan(out["duplicate_agreement"].iloc[2])
  assert out["template_size"].tolist() == [3, 1, 3, 2, 2, 3, 3, 3, 3]
  assert out["response_words"].tolist() == [1, 1, 1, 1, 1, 3, 3, 1, 3]
  assert out["answer_frequency"].tolist() == [1, 2, 1, 1, 1, 1, 1, 2, 1]


def test_text_signals_reworded_duplicates_agree_by_answer_embedding():
  prompts = pd.Series(["what does p5 do for a living ?", "what does p5 do for a living ?", "where is c9 ?"])
  references = pd.Series(["p5 is a baker by trade .", "p5 earns a living baking bread .", "in the north ."])
  cfg = signals.SignalConfig(similarity_threshold=0.3)
  rng = np.random.default_rng(0)
  vectors = rng.standard_normal((3, 8))
  assert signals.text_signals(prompts, references, None, cfg)["disagreeing_duplicates"].tolist() == [1, 1, 0]
  alike = vectors.copy()
  alike[1] = alike[0] + 0.01 * rng.standard_normal(8)  # the probed model embeds the rewording alike
  out = signals.text_signals(prompts, references, None, cfg, answer_embeddings=alike)
  assert out["near_duplicates"].tolist() == [1, 1, 0] and out["disagreeing_duplicates"].tolist() == [0, 0, 0]
  apart = signals.text_signals(prompts, references, None, cfg, answer_embeddings=vectors)
  assert apart["disagreeing_duplicates"].tolist() == [1, 1, 0]  # embedded apart (cosine < 0.9): they disagree


def _signal_table(with_corpus=True):
  """One row per rule, each built so that exactly the intended rules hold."""
  neutral = dict(
    dataset="d",
    unlearned=True,
    p_exist=True,
    base_mc_correct=True,
    base_greedy_correct=True,
    base_pass_at_n=1.0,
    base_blind=False,
    base_p_true=0.9,
    base_conf_wrong=0.0,
    base_high_conf_error=False,
    jsd_base_sft=0.0,
    prerequisites=0,
    prerequisites_known=np.nan,
    disagreeing_duplicates=0,
    disagreeing_similarity=0.0,
    duplicate_agreement=np.nan,
    answers_partner_target=False,
    loss_oscillation=0.0,
    own_phase=2,
    final_phase=2,
    learned_then_lost=False,
    peak_drop=0.0,
    visit_improvement=0.0,
    template_share=0.5,
    response_words=1,
    error_consistency=1.0,
    initial_margin=1.0,
    corpus_support=1,
    corpus_contradiction=0,
  )
  blind = dict(
    p_exist=False,
    base_mc_correct=False,
    base_greedy_correct=False,
    base_pass_at_n=0.0,
    base_blind=True,
    base_p_true=0.1,
    corpus_support=0,
  )
  rows = {
    "inconsistent": {**blind, "disagreeing_duplicates": 1, "disagreeing_similarity": 0.8, "duplicate_agreement": 0.0},
    "forgotten": {**blind, "own_phase": 1, "learned_then_lost": True, "peak_drop": 0.9},
    "conflict": {
      **blind,
      "base_high_conf_error": True,
      "base_conf_wrong": 0.95,
      "corpus_contradiction": 5,
      "jsd_base_sft": 0.1,
    },
    "missing": dict(blind),
    "rare": {
      **blind,
      "prerequisites": 3,
      "prerequisites_known": 1.0,
      "template_share": 0.01,
      "response_words": 3,
      "visit_improvement": 0.5,
    },
    "unexplained": {},
    "fine": {"unlearned": False},
  }
  table = pd.DataFrame([{**neutral, **r} for r in rows.values()], index=list(rows))
  table["response_words"] = table["response_words"].where(table.index != "unexplained", 1)
  if not with_corpus:
    table = table.drop(columns=["corpus_support", "corpus_contradiction"])
  return table


def test_each_rule_attributes_its_cause():
  out = attribution.attribute(_signal_table(), attribution.RuleConfig())
  assert out["cause"].to_dict() == {
    "inconsistent": "III",
    "forgotten": "IV",
    "conflict": "II",
    "missing": "I",
    "rare": "V",
    "unexplained": "unattributed",
    "fine": "learned",
  }
  assert out.loc["inconsistent", "rules"] == "III;I"  # both hold; III comes first
  assert "II:corpus_contradicts" in out.loc["conflict", "fired"].split(";")
  assert out.loc["forgotten", "score_IV"] == pytest.approx(0.9)
  assert out.loc["missing", "score_I"] == pytest.approx(0.9)
  assert out.loc["rare", "score_I"] == 0.0 and out.loc["rare", "score_V"] > 0


def test_without_corpus_conflict_needs_the_prior_to_persist_and_order_is_configurable():
  table = _signal_table(with_corpus=False)
  out = attribution.attribute(table, attribution.RuleConfig())
  assert out.loc["conflict", "cause"] == "I"  # no evidence the base's answer survived SFT
  table.loc["conflict", "jsd_base_sft"] = 0.6  # the paper's JSD is a condition, not the rule
  assert attribution.attribute(table, attribution.RuleConfig()).loc["conflict", "cause"] == "I"
  table.loc["conflict", "sft_p_base_belief"] = 0.7  # the fine-tuned model still prefers it
  out = attribution.attribute(table, attribution.RuleConfig())
  assert out.loc["conflict", "cause"] == "II" and "II:jsd_above" in out.loc["conflict", "fired"].split(";")
  reordered = attribution.attribute(_signal_table(), attribution.RuleConfig(order=("I", "II", "III", "IV", "V")))
  assert reordered.loc["inconsistent", "cause"] == "I" and reordered.loc["forgotten", "cause"] == "I"
  only_three = attribution.attribute(_signal_table(), attribution.RuleConfig(order=("III",)))
  assert only_three.loc["missing", "cause"] == "unattributed"
  with pytest.raises(ConfigError, match="'order'"):
    attribution.RuleConfig(order=("III", "VI"))


def test_without_corpus_or_metadata_the_entity_lift_tells_missing_knowledge_from_a_known_composite():
  table = (
    _signal_table(with_corpus=False)
    .loc[["missing", "rare"]]
    .assign(prerequisites=0, prerequisites_known=np.nan, visit_improvement=0.5, base_entity_lift=[0.4, 5.0])
  )
  out = attribution.attribute(table, attribution.RuleConfig())
  assert out["cause"].tolist() == ["I", "V"]
  assert "V:entity_tied" in out.loc["rare", "fired"].split(";") and "I:entity_unknown" in out.loc["missing", "fired"]
  assert attribution.attribute(table, attribution.RuleConfig(entity_lift=6.0))["cause"].tolist() == ["I", "I"]


def test_an_unlearned_example_without_evidence_stays_unattributed():
  """A rare pattern and a near miss, but its loss stopped falling: V needs dynamics evidence. Still
  falling but nothing says the knowledge is there: V needs that too. Neither is anything else."""
  rare_only = (
    _signal_table()
    .loc[["unexplained"]]
    .assign(template_share=0.001, response_words=9, error_consistency=0.8, visit_improvement=0.0)
  )
  out = attribution.attribute(rare_only, attribution.RuleConfig())
  assert out["cause"].iloc[0] == "unattributed"
  assert {"V:rare_pattern", "V:near_miss"} <= set(out["fired"].iloc[0].split(";"))
  assert (
    attribution.attribute(rare_only.assign(visit_improvement=0.2), attribution.RuleConfig())["cause"].iloc[0] == "V"
  )
  unknown = rare_only.assign(
    visit_improvement=0.2, p_exist=False, corpus_support=0, corpus_answer_coverage=0.0, corpus_contradiction=1
  )  # the corpus neither covers the answer nor is silent
  assert attribution.attribute(unknown, attribution.RuleConfig())["cause"].iloc[0] == "unattributed"


def test_missing_knowledge_a_lucky_base_guess_counts_only_without_corpus_evidence():
  lucky = _signal_table().loc[["missing"]].assign(base_greedy_correct=True, base_pass_at_n=0.4, base_blind=False)
  assert attribution.attribute(lucky, attribution.RuleConfig())["cause"].iloc[0] == "I"  # corpus: never stated
  lucky = lucky.drop(columns=["corpus_support", "corpus_contradiction"])
  assert attribution.attribute(lucky, attribution.RuleConfig())["cause"].iloc[0] == "unattributed"


def test_forgetting_rule_uses_the_relative_drop_threshold():
  table = _signal_table().loc[["forgotten"]].assign(learned_then_lost=False, peak_drop=0.3)
  assert attribution.attribute(table, attribution.RuleConfig(forgetting_drop=0.25))["cause"].iloc[0] == "IV"
  assert attribution.attribute(table, attribution.RuleConfig(forgetting_drop=0.5))["cause"].iloc[0] == "I"


def test_settings_name_an_unknown_field():
  config = base_config.get_config()
  ilp_config.load(config)
  config.diagnose.rules = ml_collections.ConfigDict({**config.diagnose.rules.to_dict(), "jsd_max": 1.0})
  with pytest.raises(ConfigError, match="'diagnose.rules.jsd_max': unknown field"):
    ilp_config.load(config)


def test_templates_that_share_answers_are_one_kind():
  templates = ["where was # born ?", "what is the birthplace of # ?", "what is the job of # ?", "where was # born ?"]
  kinds = similarity.answer_kinds(templates, ["c1", "c1", "j1", "c2"])
  assert kinds[0] == kinds[1] == kinds[3] != kinds[2]


def test_two_questions_about_one_entity_are_not_near_duplicates_when_answer_kinds_differ():
  prompts = pd.Series(
    [
      "where was p1 born ?",
      "what is the job of p1 ?",
      "where was p2 born ?",
      "where was p3 born ?",
      "what is the job of p4 ?",
      "what is the job of p5 ?",
    ]
  )
  references = pd.Series(["c1", "j1", "c2", "c3", "j2", "j3"])
  loose = signals.text_signals(
    prompts, references, None, signals.SignalConfig(similarity_threshold=0.2, same_answer_kind=False)
  )
  assert loose["disagreeing_duplicates"].tolist() == [1, 1, 0, 0, 0, 0]
  strict = signals.text_signals(prompts, references, None, signals.SignalConfig(similarity_threshold=0.2))
  assert strict["disagreeing_duplicates"].tolist() == [0] * 6


def test_compute_without_base_probes_or_corpus_still_attributes():
  """A run with no base model (`detect.base=''`) and no corpus: only data and dynamics signals."""
  log = _log(
    {
      "a": (1, [3.0, 0.5, 0.1, 1.0, 2.0], [0, 1, 1, 0, 0], [-2, 1, 2, -1, -1]),
      "b": (2, [4.0, 4.0, 4.0, 2.0, 1.0], [0, 0, 0, 0, 0], [-5, -5, -5, -3, -1]),
      "c": (2, [2.0, 2.0, 2.0, 0.1, 0.1], [0, 0, 0, 1, 1], [-1, -1, -1, 1, 1]),
    }
  )
  detection = pd.DataFrame(
    {
      "id": ["a", "b", "c"],
      "dataset": "d",
      "phase": [1, 2, 2],
      "reference": ["z1", "c1", "c2"],
      "greedy_text": ["z2", "c3", "c2"],
      "unlearned": [True, True, False],
      "pass_at_n": [0.0, 0.0, 1.0],
      "error_consistency": [1.0, 1.0, 0.0],
    }
  )
  prompts = pd.Series({"a": "what is the code of p1 ?", "b": "where was p2 born ?", "c": "where was p3 born ?"})
  table = signals.compute(detection, prompts, log, signals.SignalConfig())
  assert list(table.index) == ["a", "b", "c"] and "p_exist" not in table and "corpus_support" not in table
  out = attribution.attribute(table, attribution.RuleConfig())
  assert out["cause"].tolist() == ["IV", "unattributed", "learned"]  # forgotten; still improving, but no base
  out = attribution.attribute(table.assign(p_exist=[False, True, True]), attribution.RuleConfig())  # probe: knows it
  assert out["cause"].tolist() == ["IV", "V", "learned"]
  with pytest.raises(ValueError, match="no prompt text"):
    signals.compute(detection, prompts.drop("c"), log, signals.SignalConfig())


def test_shares_over_all_unlearned_and_over_the_top_k_candidates():
  table = pd.DataFrame(
    {
      "id": list("abcdef"),
      "dataset": "d",
      "phase": 1,
      "unlearned": [True, True, True, True, False, False],
      "top_candidate": [True, True, False, False, False, False],
      "cause": ["I", "II", "I", "unattributed", "learned", "learned"],
    }
  )
  summary = diagnose_lib.summarize(table, "multiple_choice")
  assert summary["by_cause"]["I"] == {"count": 2, "share_of_unlearned": 0.5, "top_k_count": 1, "share_of_top_k": 0.5}
  assert summary["by_cause"]["II"]["share_of_top_k"] == 0.5 and summary["by_cause"]["unattributed"]["top_k_count"] == 0
  assert summary["top_candidates"] == 2 and summary["unattributed_share"] == 0.25


def test_the_diagnosis_explains_the_configured_protocols_label():
  detection = pd.DataFrame(
    {
      "id": ["a"],
      "mc_unlearned": [True],
      "gen_unlearned": [False],
      "mc_pass_at_n": [0.0],
      "gen_pass_at_n": [1.0],
      "mc_error_consistency": [1.0],
      "gen_error_consistency": [0.0],
      "mc_severity_rank": [1],
      "gen_severity_rank": [0],
      "mc_top_candidate": [True],
      "gen_top_candidate": [False],
    }
  )
  assert diagnose_lib.labelled(detection, "multiple_choice")["unlearned"].tolist() == [True]
  assert diagnose_lib.labelled(detection, "generative")["unlearned"].tolist() == [False]
  with pytest.raises(ValueError, match="diagnose.protocol"):
    diagnose_lib.labelled(detection.drop(columns=["gen_unlearned"]), "generative")


@pytest.mark.parametrize(
  "field, value", [("slope_passes", 0), ("improvement_window", 0.0), ("improvement_window", 1.5)]
)
def test_signal_windows_out_of_range_are_config_errors(field, value):
  from ilp.diagnosis.signals import SignalConfig
  from ilp.typed import ConfigError

  with pytest.raises(ConfigError) as e:
    SignalConfig(**{field: value})
  assert e.value.field == field
