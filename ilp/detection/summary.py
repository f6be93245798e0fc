"""What needs the whole detection table: severity ranks and top candidates (columns), and the
stage's summary (per protocol its unlearned rate, Cohen's kappa between its runs, and, when both
protocols ran, their agreement)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from ilp.detection import columns as col
from ilp.detection.columns import GENERATIVE, MULTIPLE_CHOICE
from ilp.detection.config import DetectConfig
from ilp.scoring import estimators


def _severity(frame: pd.DataFrame, protocol: str, top_candidates: int) -> None:
  """`<p>severity_rank` (1 = most severe unlearned example, 0 for learned ones) and
  `<p>top_candidate` (the first `top_candidates`: what the paper diagnoses). Severity is the error
  consistency over all runs; ties go to the example the model is most confident about (the
  generative protocol's mean log-prob of its samples; the MC protocol's lowest P(true option))."""
  unlearned, rank = col.of(protocol, col.UNLEARNED), col.of(protocol, col.SEVERITY_RANK)
  tie = frame[col.of(GENERATIVE, col.MEAN_LOGPROB)] if protocol == GENERATIVE else -frame[col.SFT_P_TRUE]
  order = (
    frame.assign(_tie=tie)
    .sort_values(
      [unlearned, col.of(protocol, col.ERROR_CONSISTENCY), "_tie", col.ID],
      ascending=[False, False, False, True],
      kind="stable",
    )
    .index
  )
  ranks = pd.Series(np.arange(1, len(frame) + 1), index=order)
  frame[rank] = np.where(frame[unlearned], ranks.reindex(frame.index), 0)
  frame[col.of(protocol, col.TOP_CANDIDATE)] = frame[unlearned] & (frame[rank] <= top_candidates)


def finish(frame: pd.DataFrame, detect: DetectConfig) -> tuple[pd.DataFrame, dict]:
  """The severity columns and the summary: per protocol its unlearned rate (overall, per data set,
  per phase), Cohen's kappa between its runs, and, when both ran, their agreement."""
  summary: dict[str, Any] = {"examples": int(len(frame)), "protocols": list(detect.protocols)}
  for protocol in detect.protocols:
    unlearned = col.of(protocol, col.UNLEARNED)
    _severity(frame, protocol, detect.top_candidates)
    labels = np.asarray(frame[col.of(protocol, col.UNLEARNED_RUNS)].tolist(), bool).T
    rate = lambda g: {str(k): float(v) for k, v in frame.groupby(g)[unlearned].mean().items()}
    summary[protocol] = {
      "unlearned": int(frame[unlearned].sum()),
      "unlearned_rate": float(frame[unlearned].mean()),
      "unlearned_rate_by_dataset": rate(col.DATASET),
      "unlearned_rate_by_phase": rate(col.PHASE),
      "kappa_between_runs": estimators.mean_pairwise_kappa(labels) if labels.shape[0] >= 2 else None,
      "runs": int(labels.shape[0]),
      "repeat_rule": detect.repeat_rule,
      "label": detect.label,
      "top_candidates": int(frame[col.of(protocol, col.TOP_CANDIDATE)].sum()),
      "mean_pass_at_n": float(frame[col.of(protocol, col.PASS_AT_N)].mean()),
    }
  if len(detect.protocols) == 2:
    summary["kappa_between_protocols"] = estimators.cohen_kappa(
      frame[col.of(MULTIPLE_CHOICE, col.UNLEARNED)], frame[col.of(GENERATIVE, col.UNLEARNED)]
    )
  truncated = col.of(GENERATIVE, col.TRUNCATED)
  if truncated in frame:
    summary[GENERATIVE]["truncated_sample_rate"] = float(
      frame[truncated].sum() / frame[col.of(GENERATIVE, col.N)].sum()
    )
  if col.P_EXIST in frame:
    summary.update(
      p_exist_rate=float(frame[col.P_EXIST].mean()),
      base_high_conf_error_rate=float(frame[col.BASE_HIGH_CONF_ERROR].mean()),
      mean_jsd_base_sft_bits=float(frame[col.JSD_BASE_SFT].mean()),
    )
  if col.BASE_BLIND in frame:
    summary["base_blind_rate"] = float(frame[col.BASE_BLIND].mean())
  if col.options_from("base") in frame:  # how plausible the distractors were: wrong options per example by source
    summary["mc_mean_options_from"] = {s: float(frame[col.options_from(s)].mean()) for s in col.SOURCES}
  return frame, summary
