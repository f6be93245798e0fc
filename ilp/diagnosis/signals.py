"""Per-example diagnostic signals: one row per training example, from the detection table, the
dynamics log and the SFT data itself (paper §3–4; docs/method.md "Diagnosis" lists every column).

Everything is vectorised over examples (matrices of the evaluation passes, sparse TF-IDF for
near-duplicates), so 100k examples take seconds.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np
import pandas as pd

from ilp.data import retrieval, similarity
from ilp.detection import columns as col
from ilp.diagnosis import corpus
from ilp.scoring import dynamics_log
from ilp.scoring.equivalence import Answers, AnswersConfig
from ilp.typed import check


@dataclasses.dataclass(frozen=True)
class SignalConfig:
  """How the data-side signals are computed (config section `diagnose.signals`)."""

  similarity_threshold: float = 0.5  # TF-IDF cosine for near-duplicate prompts (paper's X: not given)
  embedding_threshold: float = 0.8  # centred cosine of the prompt embeddings (detection's) for near-duplicates
  max_neighbours: int = 50  # ... among each prompt's this many nearest by embedding (bounds memory)
  ngram: int = 1  # word n-grams of the TF-IDF
  max_df: int = 100  # n-grams shared by more prompts do not propose candidate pairs
  template_min_df: int = similarity.TEMPLATE_MIN_DF  # words in fewer prompts are masked to form the template ...
  template_min_share: float = similarity.TEMPLATE_MIN_SHARE  # ... or in fewer than this share of the prompts
  corpus_top_k: int = 100  # documents BM25 retrieves per example for the corpus evidence
  same_answer_kind: bool = True  # near-duplicates must expect the same kind of answer
  slope_passes: int = 3  # evaluation passes at the end over which `recent_improvement` is measured
  # V's "still improving": the last share of an example's own-phase training visits (at least
  # MIN_TREND_VISITS) over which its loss trend is fitted (`visit_improvement`)
  improvement_window: float = 0.5

  def __post_init__(self):
    check(
      0 < self.similarity_threshold <= 1, "similarity_threshold", f"must lie in (0, 1], got {self.similarity_threshold}"
    )
    check(self.ngram >= 1, "ngram", f"must be >= 1, got {self.ngram}")
    check(self.max_neighbours >= 1, "max_neighbours", f"must be >= 1, got {self.max_neighbours}")
    check(self.max_df >= 2, "max_df", f"must be >= 2 (a pair needs two prompts), got {self.max_df}")
    check(self.template_min_df >= 1, "template_min_df", f"must be >= 1, got {self.template_min_df}")
    for name in ("embedding_threshold", "template_min_share"):
      check(0 <= getattr(self, name) <= 1, name, f"must lie in [0, 1], got {getattr(self, name)}")
    check(self.corpus_top_k >= 1, "corpus_top_k", f"must be >= 1, got {self.corpus_top_k}")
    check(self.slope_passes >= 1, "slope_passes", f"must be >= 1, got {self.slope_passes}")
    check(0 < self.improvement_window <= 1, "improvement_window", f"must lie in (0, 1], got {self.improvement_window}")

  def filler_df(self, n: int) -> int:
    return similarity.filler_df(n, self.template_min_df, self.template_min_share)


def _pivots(evals: pd.DataFrame, columns: Sequence[str], ids: pd.Index, steps: np.ndarray) -> dict[str, np.ndarray]:
  """[examples, evaluation passes] matrices of statistics (NaN where an example was not
  evaluated; the last row wins), filled by index arithmetic rather than a pandas pivot."""
  rows = ids.get_indexer(evals["id"])
  cols = np.searchsorted(steps, evals["step"].to_numpy())
  known = rows >= 0
  out = {}
  for c in columns:
    matrix = np.full((len(ids), len(steps)), np.nan)
    matrix[rows[known], cols[known]] = evals[c].to_numpy(np.float64)[known]
    out[c] = matrix
  return out


def _row_pick(matrix: np.ndarray, columns: np.ndarray) -> np.ndarray:
  return matrix[np.arange(len(matrix)), columns]


MIN_TREND_VISITS = 3  # a trend needs at least this many visits


def visit_improvement(visits: pd.DataFrame, ids: pd.Index, window: float) -> np.ndarray:
  """Per example, how far its training loss is still falling at the end of its own phase: the
  least-squares line through its loss at its last `window` share of own-phase visits (at least
  MIN_TREND_VISITS), and that line's relative fall from the window's first visit to its last.

  Read from every training visit (the dynamics log's BATCH rows, logged at each step), not from
  evaluation passes: it needs no `sft.eval_every_steps`, and a line over many visits is not the
  noise of a difference of the last few passes, where a converged phase's plateau puts it. NaN
  for an example with fewer visits than MIN_TREND_VISITS."""
  own = visits.groupby("id")["train_phase"].transform("max")
  rows = visits.loc[visits["train_phase"] == own, ["id", "step", "loss"]].sort_values(["id", "step"], kind="stable")
  count = rows.groupby("id")["step"].transform("size").to_numpy()
  order = rows.groupby("id").cumcount().to_numpy()
  width = np.maximum(np.ceil(count * window), MIN_TREND_VISITS)
  rows = rows[(order >= count - width) & (count >= MIN_TREND_VISITS)]
  x = rows.groupby("id").cumcount().to_numpy(np.float64)
  y = rows["loss"].to_numpy(np.float64)
  sums = pd.DataFrame({"id": rows["id"].to_numpy(), "n": 1.0, "x": x, "y": y, "xx": x * x, "xy": x * y})
  sums = sums.groupby("id").sum().reindex(ids)
  slope = (sums["xy"] - sums["x"] * sums["y"] / sums["n"]) / (sums["xx"] - sums["x"] ** 2 / sums["n"])
  first = sums["y"] / sums["n"] - slope * sums["x"] / sums["n"]  # the line at the window's first visit (x = 0)
  return (-slope * (sums["n"] - 1) / np.maximum(first, 1e-6)).to_numpy(np.float64)


def dynamics_signals(
  dynamics: pd.DataFrame, ids: pd.Index, slope_passes: int, improvement_window: float
) -> pd.DataFrame:
  """Signals of the training dynamics: initial (base model) fit, own-phase end, final, forgetting,
  improvement at the end, oscillation, position in the stream, and the cartography summaries
  (`ilp.scoring.dynamics_log.cartography`)."""
  evals = dynamics_log.rows(dynamics, dynamics_log.EVAL)
  visits = dynamics_log.rows(dynamics, dynamics_log.BATCH)
  steps = np.sort(evals["step"].unique())
  point_phase = evals.groupby("step")["train_phase"].first().reindex(steps).to_numpy()
  phase_end_step = evals[evals["phase_end"].astype(bool)].groupby("train_phase")["step"].max()
  final_phase = int(point_phase.max())
  m = _pivots(evals, ("loss", "gold_prob", "exact_match", "margin_mean", "nll_sum"), ids, steps)
  response_prob = np.exp(-m["nll_sum"])  # probability of the whole response: what sampling sees
  own = visits.groupby("id")["train_phase"].max().reindex(ids).fillna(final_phase).astype(int).to_numpy()
  own_end = np.searchsorted(steps, phase_end_step.reindex(own).fillna(steps[-1]).to_numpy())
  trained = (point_phase[None, :] == own[:, None]) & (steps[None, :] > 0)  # passes during the own phase
  before = np.zeros_like(trained)
  first = trained.argmax(1)
  before[np.arange(len(ids)), np.maximum(first - 1, 0)] = True  # the pass just before it
  window = trained | before
  loss = m["loss"]
  diffs = np.diff(loss, axis=1)
  pairs = window[:, 1:] & window[:, :-1]
  variation = np.where(pairs, np.abs(diffs), 0).sum(1)
  net = np.abs(_row_pick(loss, own_end) - _row_pick(loss, np.maximum(first - 1, 0)))
  after_start = steps > 0
  learned = m["exact_match"][:, after_start] > 0.5
  gold = m["gold_prob"]
  peak_own = np.nanmax(
    np.where(trained & (np.arange(len(steps))[None, :] <= own_end[:, None]), response_prob, -np.inf), 1
  )
  k = min(slope_passes, len(steps) - 1)
  final_loss, earlier_loss = loss[:, -1], loss[:, -1 - k]
  positive_margin = m["margin_mean"][:, after_start] > 0
  stream_end = max(float(visits["stream_position"].max()), 1.0) if len(visits) else 1.0
  out = pd.DataFrame(index=ids)
  out[col.OWN_PHASE] = own
  out[col.FINAL_PHASE] = final_phase
  out[col.INITIAL_LOSS] = loss[:, 0]
  out[col.INITIAL_GOLD_PROB] = gold[:, 0]
  out[col.INITIAL_MARGIN] = m["margin_mean"][:, 0]
  out[col.OWN_END_GOLD_PROB] = _row_pick(gold, own_end)
  out[col.OWN_END_EXACT_MATCH] = _row_pick(m["exact_match"], own_end) > 0.5
  out[col.OWN_END_MARGIN] = _row_pick(m["margin_mean"], own_end)
  out[col.FINAL_LOSS] = final_loss
  out[col.FINAL_GOLD_PROB] = gold[:, -1]
  out[col.FINAL_EXACT_MATCH] = m["exact_match"][:, -1] > 0.5
  out[col.FINAL_RESPONSE_PROB] = response_prob[:, -1]
  out[col.PEAK_OWN_RESPONSE_PROB] = peak_own
  earlier_phase = own < final_phase
  out[col.BOUNDARY_DROP] = np.where(earlier_phase, out[col.OWN_END_GOLD_PROB] - out[col.FINAL_GOLD_PROB], 0.0)
  # relative loss of response probability from its best during its own phase to the end
  out[col.PEAK_DROP] = np.where(earlier_phase, 1 - response_prob[:, -1] / np.maximum(peak_own, 1e-12), 0.0)
  out[col.LEARNED_THEN_LOST] = earlier_phase & out[col.OWN_END_EXACT_MATCH] & ~out[col.FINAL_EXACT_MATCH]
  out[col.EVER_LEARNED] = learned.any(1)
  first_positive = np.where(positive_margin.any(1), steps[after_start][positive_margin.argmax(1)], np.nan)
  out[col.STEPS_TO_POSITIVE_MARGIN] = first_positive
  out[col.MARGIN_CLOSING_RATE] = (out[col.OWN_END_MARGIN] - out[col.INITIAL_MARGIN]) / np.maximum(trained.sum(1), 1)
  out[col.RECENT_IMPROVEMENT] = (earlier_loss - final_loss) / np.maximum(earlier_loss, 1e-6)
  out[col.VISIT_IMPROVEMENT] = visit_improvement(visits, ids, improvement_window)
  out[col.STEADY_IMPROVEMENT] = np.where(pairs, diffs < 0, False).sum(1) / np.maximum(pairs.sum(1), 1)
  out[col.LOSS_OSCILLATION] = np.where(variation > 0, (variation - net) / np.maximum(variation, 1e-12), 0.0)
  last_visit = visits.groupby("id")["stream_position"].max().reindex(ids).to_numpy(np.float64)
  out[col.LAST_VISIT_POSITION] = last_visit / stream_end
  carto = dynamics_log.cartography(dynamics, id_columns=("id",)).set_index("id").reindex(ids)
  for name in col.CARTOGRAPHY:
    out[name] = carto[name].to_numpy()
  return out


def _union(lexical: tuple[np.ndarray, ...], semantic: tuple[np.ndarray, ...]) -> tuple[np.ndarray, ...]:
  """The pairs of either search, each once, with the higher of its similarities, and whether
  only the embeddings found it."""
  i, j, cosine = (np.concatenate([a, b]) for a, b in zip(lexical, semantic))
  only_semantic = np.concatenate([np.zeros(len(lexical[0]), bool), np.ones(len(semantic[0]), bool)])
  frame = pd.DataFrame({"i": i, "j": j, "cosine": cosine, "semantic": only_semantic})
  frame = frame.groupby(["i", "j"], sort=True).agg(cosine=("cosine", "max"), semantic=("semantic", "all")).reset_index()
  return (
    frame["i"].to_numpy(np.int64),
    frame["j"].to_numpy(np.int64),
    frame["cosine"].to_numpy(np.float64),
    frame["semantic"].to_numpy(bool),
  )


def text_signals(
  prompts: pd.Series,
  references: pd.Series,
  greedy: pd.Series | None,
  cfg: SignalConfig,
  corpus_documents: retrieval.Corpus | None = None,
  embeddings: np.ndarray | None = None,
  answers: AnswersConfig = AnswersConfig(),
  answer_embeddings: np.ndarray | None = None,
) -> pd.DataFrame:
  """Near-duplicate prompts whose targets are not equivalent (III; `ilp.scoring.equivalence` with
  `answers`, fitted to `references`: paraphrased long answers that say the same do not disagree;
  a long answer counts and pools by the facts it adds to its prompt), the rarity of the prompt
  pattern and of the answer (V), and, given the pre-training corpus, what it states about each example (I, II).
  `greedy` (the fine-tuned model's greedy answers) tells which side of a contradiction it learned;
  `embeddings` (one row per prompt) find paraphrases that share few words; `answer_embeddings`
  (one row per reference) let the equivalence compare answers by embedding too."""
  n = len(prompts)
  tokenized = [similarity.words(t) for t in prompts]
  found = similarity.patterns(tokenized, cfg.filler_df(n))
  slot_vocab = {w: k for k, w in enumerate(sorted({w for row in found.slots for w in row}))}
  slots = similarity.binary_matrix(found.slots, slot_vocab)
  vectors = similarity.tfidf(tokenized, cfg.ngram)
  lexical = similarity.near_duplicate_pairs(vectors, cfg.similarity_threshold, cfg.max_df, slots)
  semantic = (
    similarity.embedding_pairs(embeddings, cfg.embedding_threshold, slots, cfg.max_neighbours)
    if embeddings is not None
    else tuple(np.zeros(0, t) for t in (np.int64, np.int64, np.float64))
  )
  i, j, cosine, by_embedding = _union(lexical, semantic)
  fitted = Answers(answers, references)
  if answer_embeddings is not None:
    fitted = fitted.with_embeddings(references.tolist(), answer_embeddings)
  answer_keys = np.asarray([fitted.key(r, p) for p, r in zip(prompts, references)], dtype=object)
  answer_words = [fitted.content(r, p) for p, r in zip(prompts, references)]
  kinds = similarity.answer_kinds(found.templates, answer_keys)
  if cfg.same_answer_kind:  # "where was p born?" and "what is p's job?" are not one question
    same = kinds[i] == kinds[j]
    i, j, cosine, by_embedding = i[same], j[same], cosine[same], by_embedding[same]
  disagree = ~fitted.pairwise(references.to_numpy()[i], references.to_numpy()[j])
  src, dst = np.concatenate([i, j]), np.concatenate([j, i])
  sim, dis = np.concatenate([cosine, cosine]), np.concatenate([disagree, disagree])
  out = pd.DataFrame(index=prompts.index)
  group, size = similarity.groups(n, i, j)
  out[col.DUPLICATE_GROUP] = group
  out[col.DUPLICATE_GROUP_SIZE] = size
  out[col.NEAR_DUPLICATES] = np.bincount(src, minlength=n)
  out[col.EMBEDDING_DUPLICATES] = np.bincount(
    np.concatenate([i, j]), np.tile(by_embedding, 2).astype(float), minlength=n
  ).astype(int)
  out[col.DISAGREEING_DUPLICATES] = np.bincount(src, dis.astype(float), minlength=n).astype(int)
  out[col.DUPLICATE_SIMILARITY] = _group_max(src, sim, n)
  out[col.DISAGREEING_SIMILARITY] = _group_max(src[dis], sim[dis], n)
  out[col.DUPLICATE_AGREEMENT] = np.where(
    out[col.NEAR_DUPLICATES] > 0, 1 - out[col.DISAGREEING_DUPLICATES] / out[col.NEAR_DUPLICATES].clip(lower=1), np.nan
  )
  if greedy is not None:
    said, targets = greedy.to_numpy(), references.to_numpy()
    partner = np.zeros(n, bool)
    np.logical_or.at(partner, src[dis], fitted.pairwise(said[src[dis]], targets[dst[dis]]))
    out[col.ANSWERS_PARTNER_TARGET] = partner
  keys = pd.Series(found.templates, index=prompts.index)
  out[col.TEMPLATE_SIZE] = keys.map(keys.value_counts()).to_numpy()
  out[col.TEMPLATE_SHARE] = out[col.TEMPLATE_SIZE] / n
  out[col.ANSWER_FREQUENCY] = pd.Series(answer_keys).map(pd.Series(answer_keys).value_counts()).to_numpy()
  out[col.RESPONSE_WORDS] = [len(similarity.words(r)) for r in references]
  if corpus_documents is not None:
    for name, values in corpus.evidence(found, answer_words, kinds, corpus_documents, cfg.corpus_top_k).items():
      out[name] = values.to_numpy()
  return out


def _group_max(index: np.ndarray, values: np.ndarray, n: int) -> np.ndarray:
  out = np.zeros(n)
  np.maximum.at(out, index, values)
  return out


DETECTION_COLUMNS = (
  (col.DATASET, col.PHASE)
  + col.LABELLED
  + (
    col.GREEDY_CORRECT,
    col.P_EXIST,
    col.BASE_MC_ACCURACY,
    col.BASE_MC_CORRECT,
    col.BASE_P_TRUE,
    col.BASE_CONF_WRONG,
    col.BASE_HIGH_CONF_ERROR,
    col.JSD_BASE_SFT,
    col.BASE_PASS_AT_N,
    col.BASE_BLIND,
    col.BASE_GREEDY_CORRECT,
    col.BASE_ENTITY_LIFT,
    col.SFT_P_BASE_BELIEF,
    col.PREREQUISITES,
    col.PREREQUISITES_KNOWN,
    col.SFT_P_TRUE,
  )
  + tuple(col.of(p, col.UNLEARNED) for p in col.PROTOCOLS)
)  # carried into the attribution table


def compute(
  detection: pd.DataFrame,
  prompts: pd.Series,
  dynamics: pd.DataFrame,
  cfg: SignalConfig,
  corpus_documents: retrieval.Corpus | None = None,
  answers: AnswersConfig = AnswersConfig(),
) -> pd.DataFrame:
  """All signals, one row per example of the detection table (indexed and ordered by its ids).

  `prompts` maps id -> prompt text; detection columns missing from a run (no base model, no
  multiple-choice probe) and corpus evidence without `corpus_documents` are simply absent, and
  the rules fall back to what is there (docs/method.md "Diagnosis").
  """
  table = detection.set_index(col.ID)
  ids = table.index
  missing = ids.difference(prompts.index)
  if len(missing):
    raise ValueError(f"no prompt text for {len(missing)} detected example(s), e.g. '{missing[0]}'")
  out = table[[c for c in DETECTION_COLUMNS if c in table]].copy()
  stacked = lambda name: np.stack(table[name].to_numpy()) if name in table else None
  out = out.join(
    text_signals(
      prompts.reindex(ids),
      table[col.REFERENCE],
      table[col.GREEDY_TEXT] if col.GREEDY_TEXT in table else None,
      cfg,
      corpus_documents,
      stacked(col.PROMPT_EMBEDDING),
      answers,
      stacked(col.RESPONSE_EMBEDDING),
    )
  )
  return out.join(dynamics_signals(dynamics, ids, cfg.slope_passes, cfg.improvement_window))
