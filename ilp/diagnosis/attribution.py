"""Cause attribution: evidence scores for the five causes and an ordered rule set (paper §4).

Every example gets named boolean *conditions* (the signals that fired) and a per-cause evidence
score in [0, 1]. Each unlearned example gets the first cause, in the configured order, whose
rule holds, or "unattributed" when no rule has evidence for it. The default order puts observed,
example-specific evidence (contradicting duplicates, learned-then-lost) before base-model priors
(conflict, missing knowledge), and insufficient optimisation (a loss still falling) last. docs/method.md "Diagnosis"
documents each rule and where its threshold comes from.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd

from ilp.detection import columns as col
from ilp.typed import check

CAUSES = ("I", "II", "III", "IV", "V")
CAUSE_NAMES = {
  "I": "missing knowledge",
  "II": "conflict with pre-training",
  "III": "inconsistent data",
  "IV": "left-side forgetting",
  "V": "insufficient optimisation",
}
UNATTRIBUTED = "unattributed"
LEARNED = "learned"


@dataclasses.dataclass(frozen=True)
class RuleConfig:
  """Thresholds of the rules (config section `diagnose.rules`)."""

  order: tuple[str, ...] = ("III", "IV", "II", "I", "V")  # an example's cause: the first whose rule holds
  jsd: float = 0.3  # II evidence: JSD(base || SFT) over the options above this (paper: 0.3)
  prior_persists: float = 0.5  # II without corpus: the fine-tuned model gives the base's wrong belief this much
  prerequisites_known: float = 0.5  # I: share of prerequisite facts the base knows below this
  corpus_coverage: float = 0.5  # I: share of the answer's words the entity's corpus documents state below this
  entity_lift: float = 3.0  # I: entity-swap lift below this (nats; 3: no answer token 20x likelier)
  forgetting_drop: float = 0.25  # IV: relative drop of the response probability from its own-phase peak
  oscillation: float = 0.3  # III evidence: share of loss variation that is back-and-forth
  improvement: float = 0.05  # V: relative fall of the loss trend over the last own-phase visits
  rare_template_share: float = 0.05  # V: prompt pattern shared by at most this share of the data
  long_response_ratio: float = 2.0  # V: response at least this many times its data set's median length

  def __post_init__(self):
    check(
      all(c in CAUSES for c in self.order) and len(set(self.order)) == len(self.order),
      "order",
      f"{list(self.order)} must list distinct causes of {CAUSES}",
    )
    for name in (
      "jsd",
      "prior_persists",
      "prerequisites_known",
      "corpus_coverage",
      "forgetting_drop",
      "oscillation",
      "rare_template_share",
    ):
      check(0 <= getattr(self, name) <= 1, name, f"must lie in [0, 1], got {getattr(self, name)}")
    check(self.improvement >= 0, "improvement", f"must be >= 0, got {self.improvement}")
    check(self.long_response_ratio > 0, "long_response_ratio", f"must be > 0, got {self.long_response_ratio}")


def _column(signals: pd.DataFrame, name: str, default) -> np.ndarray:
  if name in signals:
    return signals[name].to_numpy()
  return np.full(len(signals), default)


def conditions(signals: pd.DataFrame, cfg: RuleConfig) -> dict[str, dict[str, np.ndarray]]:
  """Per cause, the named conditions (boolean arrays) its rule and evidence are built from."""
  s = lambda name, default=np.nan: _column(signals, name, default).astype(np.float64)
  has_prereq = s(col.PREREQUISITES, 0) > 0
  length = s(col.RESPONSE_WORDS, 1)
  median = (
    signals.groupby(col.DATASET)[col.RESPONSE_WORDS].transform("median").to_numpy()
    if col.DATASET in signals
    else np.median(length)
  )
  earlier = s(col.OWN_PHASE, 1) < s(col.FINAL_PHASE, 1)
  base_correct = s(col.BASE_GREEDY_CORRECT, np.nan)
  base_correct = np.where(np.isnan(base_correct), s(col.BASE_MC_CORRECT, 1), base_correct)
  has_corpus = col.CORPUS_SUPPORT in signals
  support, contradiction = s(col.CORPUS_SUPPORT, 0), s(col.CORPUS_CONTRADICTION, 0)
  lift = s(col.BASE_ENTITY_LIFT, -np.inf)  # no probe (or no slot filler): no evidence the base ties answer to entity
  coverage = np.nan_to_num(s(col.CORPUS_ANSWER_COVERAGE, 0), nan=0.0)
  return {
    "I": {
      "prerequisites_unknown": has_prereq & (s(col.PREREQUISITES_KNOWN, 1) < cfg.prerequisites_known),
      "no_base_knowledge": ~has_prereq & (s(col.P_EXIST, 1) < 0.5),
      "base_wrong": base_correct < 0.5,
      "base_blind": s(col.BASE_BLIND, 1) > 0.5,  # detection's blind-fact rule (no base samples: blind)
      "entity_unknown": np.nan_to_num(lift, nan=-np.inf) < cfg.entity_lift,
      "corpus_silent": has_corpus & (coverage < cfg.corpus_coverage) & (contradiction == 0),
    },
    "II": {
      "high_conf_error": s(col.BASE_HIGH_CONF_ERROR, 0) > 0.5,
      "jsd_above": s(col.JSD_BASE_SFT, 0) > cfg.jsd,
      "prior_persists": s(col.SFT_P_BASE_BELIEF, 0) >= cfg.prior_persists,
      "corpus_contradicts": has_corpus & (contradiction > support),
      "negative_initial_margin": s(col.INITIAL_MARGIN, 0) < 0,
    },
    "III": {
      "disagreeing_duplicate": s(col.DISAGREEING_DUPLICATES, 0) > 0,
      "answers_partner_target": s(col.ANSWERS_PARTNER_TARGET, 0) > 0.5,
      "oscillating_loss": s(col.LOSS_OSCILLATION, 0) >= cfg.oscillation,
    },
    "IV": {
      "earlier_phase": earlier,
      "learned_then_lost": s(col.LEARNED_THEN_LOST, 0) > 0.5,
      "dropped_after_phase": earlier & (s(col.PEAK_DROP, 0) >= cfg.forgetting_drop),
    },
    "V": {
      "still_improving": s(col.VISIT_IMPROVEMENT, 0) >= cfg.improvement,
      "base_knows": s(col.P_EXIST, 0) > 0.5,
      "prerequisites_known": has_prereq & (s(col.PREREQUISITES_KNOWN, 0) >= cfg.prerequisites_known),
      "corpus_covers": has_corpus & (coverage >= cfg.corpus_coverage),
      "entity_tied": np.nan_to_num(lift, nan=-np.inf) >= cfg.entity_lift,
      "rare_pattern": s(col.TEMPLATE_SHARE, 1) <= cfg.rare_template_share,
      "long_response": length >= cfg.long_response_ratio * median,
      "near_miss": s(col.ERROR_CONSISTENCY, 1) < 1,
    },
  }


def rules(c: dict[str, dict[str, np.ndarray]], has_corpus: bool) -> dict[str, np.ndarray]:
  """Whether each cause's rule holds; each needs evidence that speaks for its cause. With corpus
  evidence, the corpus decides whether pre-training stated something else (II) or too little of
  the answer (I: then a base model's lucky guess does not count as knowledge); without it, I needs
  the base model wrong, blind and not tying the answer to the prompt's entities (entity-swap
  lift), and II needs the fine-tuned model to still prefer the base model's wrong answer (the
  paper's JSD(base || SFT) > 0.3 is kept as a condition, not a rule: docs/method.md "Diagnosis" shows it
  ranks conflicts below missing knowledge when a small base model hallucinates). V needs the
  example's own loss still falling at the end and evidence that the knowledge is there (P_exist,
  known prerequisites, the corpus stating most of the answer, or, without a corpus, the entity
  lift); rarity, length and near misses only describe it."""
  i, ii, iii, iv, v = (c[k] for k in CAUSES)
  knowledge_absent = i["corpus_silent"] if has_corpus else i["base_wrong"] & i["base_blind"] & i["entity_unknown"]
  knowledge_present = (
    v["base_knows"] | v["prerequisites_known"] | (v["corpus_covers"] if has_corpus else v["entity_tied"])
  )
  return {
    "I": i["prerequisites_unknown"] | (i["no_base_knowledge"] & knowledge_absent),
    "II": ii["high_conf_error"] & (ii["corpus_contradicts"] if has_corpus else ii["prior_persists"]),
    "III": iii["disagreeing_duplicate"],
    "IV": iv["earlier_phase"] & (iv["learned_then_lost"] | iv["dropped_after_phase"]),
    "V": v["still_improving"] & knowledge_present,
  }


def scores(signals: pd.DataFrame, c: dict[str, dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
  """Evidence strength per cause in [0, 1] (ranks the most typical examples of a cause)."""
  s = lambda name, default: np.nan_to_num(_column(signals, name, default).astype(np.float64), nan=default)
  knowledge = np.where(s(col.PREREQUISITES, 0) > 0, s(col.PREREQUISITES_KNOWN, 1), s(col.BASE_P_TRUE, 1))
  contradiction = s(col.CORPUS_CONTRADICTION, 0)
  contradicted = contradiction / np.maximum(contradiction + s(col.CORPUS_SUPPORT, 0), 1)
  return {
    "I": np.clip(1 - knowledge, 0, 1),
    "II": np.clip(s(col.BASE_CONF_WRONG, 0) * np.maximum(s(col.SFT_P_BASE_BELIEF, 0), contradicted), 0, 1),
    "III": np.clip(
      s(col.DISAGREEING_SIMILARITY, 0) * (1 - np.nan_to_num(s(col.DUPLICATE_AGREEMENT, 1), nan=1.0) / 2), 0, 1
    )
    * c["III"]["disagreeing_duplicate"],
    "IV": np.clip(s(col.PEAK_DROP, 0), 0, 1) * c["IV"]["earlier_phase"],
    "V": np.clip(s(col.VISIT_IMPROVEMENT, 0), 0, 1),
  }


def attribute(signals: pd.DataFrame, cfg: RuleConfig) -> pd.DataFrame:
  """id-indexed table: cause ("learned" for examples that are not unlearned), evidence scores
  `score_<cause>`, `rules` (causes whose rule holds) and `fired` (every condition that holds)."""
  c = conditions(signals, cfg)
  holds = rules(c, has_corpus=col.CORPUS_SUPPORT in signals)
  unlearned = signals[col.UNLEARNED].to_numpy().astype(bool)
  cause = np.full(len(signals), UNATTRIBUTED, dtype=object)
  open_ = unlearned.copy()
  for name in cfg.order:
    take = open_ & holds[name]
    cause[take] = name
    open_ &= ~take
  cause[~unlearned] = LEARNED
  out = pd.DataFrame(index=signals.index)
  out[col.CAUSE] = cause
  for name, value in scores(signals, c).items():
    out[col.score(name)] = value
  out[col.RULES] = _joined({name: holds[name] for name in cfg.order}, len(signals))
  out[col.FIRED] = _joined({f"{k}:{cond}": arr for k in CAUSES for cond, arr in c[k].items()}, len(signals))
  return out


def _joined(flags: dict[str, np.ndarray], n: int) -> np.ndarray:
  """'a;b' listing the names whose flag is set, per row: rows are coded as bit masks and each
  distinct mask (few) is spelled out once."""
  names = list(flags)
  codes = np.zeros(n, np.int64)
  for bit, name in enumerate(names):
    codes |= np.asarray(flags[name], bool).astype(np.int64) << bit
  distinct, inverse = np.unique(codes, return_inverse=True)
  spelled = np.asarray(
    [";".join(names[b] for b in range(len(names)) if code >> b & 1) for code in distinct], dtype=object
  )
  return spelled[inverse]
