"""How early the warning is right: a finished run read as if at a share of its SFT budget, scored
against its final label (ROC-AUC and average precision, scikit-learn) and its final diagnosis
(Cohen's kappa of the provisional cause), always by a model fitted on other runs."""

from __future__ import annotations

import dataclasses
import os
from typing import Sequence

import numpy as np
import pandas as pd

from ilp.data import examples as examples_lib
from ilp.detection import columns as col
from ilp.layout import Layout
from ilp.online import features, warning
from ilp.scoring import dynamics_log

FIT_FRACTIONS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)  # the points of SFT a model is fitted at


@dataclasses.dataclass(frozen=True)
class Run:
  """A finished run's features at points of its SFT, its final label and diagnosis."""

  name: str
  keys: tuple[str, ...]  # `warning.keys` of its examples
  at: dict[float, pd.DataFrame]  # share of the SFT steps -> features
  unlearned: np.ndarray  # the final label, per example (features' row order)
  cause: np.ndarray  # the final diagnosis's cause, per example ("" without a diagnosis)


def read(workdir: str, fractions: Sequence[float], protocol: str = col.GENERATIVE) -> Run:
  layout = Layout(workdir)
  table = examples_lib.read(layout.examples)
  data = features.data_signals(table)
  dynamics = dynamics_log.load(layout.dynamics())
  steps = int(dynamics["step"].max())
  at = {f: features.at_step(dynamics, data, int(round(f * steps))) for f in fractions}
  detection = pd.read_parquet(layout.detection).set_index(col.ID).reindex(data.index)
  cause = np.full(len(data), "")
  if os.path.exists(layout.attribution):
    causes = pd.read_parquet(layout.attribution).set_index(col.ID)[col.CAUSE]
    cause = causes.reindex(data.index).fillna("").to_numpy(str)
  return Run(workdir, warning.keys(table), at, detection[col.of(protocol, col.UNLEARNED)].to_numpy(bool), cause)


def fit_on(runs: Sequence[Run], transform: str = "rank") -> warning.EarlyWarning:
  """The model fitted on every point of every run in `runs` (`transform`: `warning.TRANSFORMS`)."""
  tables = [(r.at[f], r.unlearned) for r in runs for f in r.at]
  keys = [k for r in runs for k in r.keys]
  return warning.fit([t for t, _ in tables], [y for _, y in tables], keys, transform=transform)


def score(model: warning.EarlyWarning, run: Run) -> dict[str, dict]:
  """Per share of SFT: ROC-AUC and average precision (and the ROC-AUC of the current loss alone),
  and the provisional cause's agreement with the final diagnosis on the examples it attributes to a
  cause (kappa; None without a diagnosis)."""
  from sklearn.metrics import average_precision_score, cohen_kappa_score, roc_auc_score

  model.check_unseen(run.keys, field="--workdirs")
  out = {}
  attributed = np.isin(run.cause, warning.CAUSES) & run.unlearned
  for f, table in sorted(run.at.items()):
    p = model.score(table)
    provisional = warning.provisional_cause(table)
    both = run.unlearned.any() and not run.unlearned.all()
    out[f"{f:g}"] = {
      "examples": int(len(p)),
      "unlearned": int(run.unlearned.sum()),
      "roc_auc": float(roc_auc_score(run.unlearned, p)) if both else None,
      "average_precision": float(average_precision_score(run.unlearned, p)) if both else None,
      # the same ranking by the current loss alone: what the model adds over the obvious signal
      "loss_roc_auc": float(roc_auc_score(run.unlearned, table["loss"])) if both else None,
      "cause_kappa": float(cohen_kappa_score(run.cause[attributed], provisional[attributed]))
      if attributed.sum() > 1
      else None,
      "cause_agreement": float((run.cause[attributed] == provisional[attributed]).mean()) if attributed.any() else None,
    }
  return out
