"""Why was each unlearned example not learned? (paper §3–4)

Joins the per-example signals (`signals`) with the attribution (`attribution`) into one table and
summarises it by cause, data set and phase. Rendering lives in `ilp.report.diagnosis`.
"""

from __future__ import annotations

import dataclasses

import pandas as pd

from ilp.data import loaders, retrieval
from ilp.data.config import DataConfig
from ilp.detection import columns as col
from ilp.diagnosis import attribution, signals
from ilp.diagnosis.attribution import RuleConfig
from ilp.diagnosis.signals import SignalConfig
from ilp.scoring.equivalence import AnswersConfig
from ilp.typed import check

GROUPS = attribution.CAUSES + (attribution.UNATTRIBUTED,)


@dataclasses.dataclass(frozen=True)
class DiagnoseConfig:
  """Diagnosis settings (config section `diagnose`). The paper gives JSD 0.3 and the blind-fact
  pass rate (`detect.threshold`); every other value is ours (docs/method.md, "Diagnosis")."""

  protocol: str = "multiple_choice"  # whose unlearned label is explained: "multiple_choice" (paper) or "generative"
  signals: SignalConfig = SignalConfig()  # the per-example evidence: near-duplicates, templates, corpus, dynamics
  rules: RuleConfig = RuleConfig()  # the thresholds and order of the cause attribution rules
  corpus_evidence: bool = True  # check answers against data.corpora, the pre-training text (paper §6)
  typical_examples: int = 3  # examples per cause shown in the report

  def __post_init__(self):
    check(self.protocol in col.PROTOCOLS, "protocol", f"'{self.protocol}' is not one of {col.PROTOCOLS}")
    check(self.typical_examples >= 0, "typical_examples", f"must be >= 0, got {self.typical_examples}")


def corpus_documents(diagnose: DiagnoseConfig, data: DataConfig) -> retrieval.Corpus | None:
  """The pre-training documents (their index kept in `data.index_dir`), when corpus evidence is
  on and `data.corpora` has any."""
  if not (diagnose.corpus_evidence and data.corpora):
    return None
  texts = [d.text for d in loaders.load_corpus([source for source, _ in data.corpus_sources()])]
  return retrieval.Corpus(texts, data.index_directory)


def labelled(detection: pd.DataFrame, protocol: str) -> pd.DataFrame:
  """The detection table with `protocol`'s numbers under the generic names the signals and rules
  read (`columns.LABELLED`: unlearned, pass_at_n, error_consistency, severity_rank, top_candidate)."""
  if col.of(protocol, col.UNLEARNED) not in detection:
    raise ValueError(
      f"config field 'diagnose.protocol': the detection table has no {protocol} protocol columns "
      f"(set detect.protocol to run it)"
    )
  return detection.assign(**{name: detection[col.of(protocol, name)] for name in col.LABELLED})


def diagnose(
  detection: pd.DataFrame,
  examples: pd.DataFrame,
  log_frame: pd.DataFrame,
  diagnose: DiagnoseConfig,
  documents: retrieval.Corpus | None = None,
  answers: AnswersConfig = AnswersConfig(),
) -> pd.DataFrame:
  """Signals joined with the attribution, one row per detected example, with its prompt, target
  and greedy answer; `unlearned` is the label of `diagnose.protocol`.

  Args:
    detection: the detection table.
    examples: the examples table (prompt text per id).
    log_frame: the SFT dynamics log.
    diagnose: the protocol, signal and rule settings.
    documents: the pre-training corpus, for corpus evidence (None: none).
    answers: when two answers say the same (`detect.answers`, shared with detection).
  """
  detection = labelled(detection, diagnose.protocol)
  prompts = pd.Series(examples["prompt"].to_numpy(), index=examples["id"], dtype=object)
  table = signals.compute(detection, prompts, log_frame, diagnose.signals, documents, answers)
  table = table.join(attribution.attribute(table, diagnose.rules)).reset_index()
  shown = [c for c in (col.REFERENCE, col.GREEDY_TEXT) if c in detection and c not in table]
  table = table.merge(detection[[col.ID] + shown], on=col.ID)
  table[col.PROMPT] = prompts.reindex(table[col.ID]).to_numpy()
  return table


def _counts(frame: pd.DataFrame) -> dict:
  """Per cause: its unlearned examples and its share of them, and the same among the top-K
  candidates (the paper's denominator)."""
  unlearned = frame[frame[col.UNLEARNED].astype(bool)]
  top = unlearned[unlearned[col.TOP_CANDIDATE].astype(bool)]
  counts, top_counts = unlearned[col.CAUSE].value_counts(), top[col.CAUSE].value_counts()
  return {
    c: {
      "count": int(counts.get(c, 0)),
      "share_of_unlearned": float(counts.get(c, 0) / max(len(unlearned), 1)),
      "top_k_count": int(top_counts.get(c, 0)),
      "share_of_top_k": float(top_counts.get(c, 0) / max(len(top), 1)),
    }
    for c in GROUPS
  }


def summarize(table: pd.DataFrame, protocol: str) -> dict:
  """Counts and shares of the unlearned examples by cause, overall, per data set and per phase,
  over all unlearned examples and over the top-K candidates."""
  unlearned = int(table[col.UNLEARNED].sum())
  return {
    "protocol": protocol,
    "examples": int(len(table)),
    "unlearned": unlearned,
    "top_candidates": int((table[col.UNLEARNED].astype(bool) & table[col.TOP_CANDIDATE].astype(bool)).sum()),
    "by_cause": _counts(table),
    "unattributed_share": float((table[col.CAUSE] == attribution.UNATTRIBUTED).sum() / max(unlearned, 1)),
    "by_dataset": {str(k): _counts(g) for k, g in table.groupby(col.DATASET)},
    "by_phase": {str(k): _counts(g) for k, g in table.groupby(col.PHASE)},
  }
