"""The early-warning model: from the FEATURES of each example at step t of SFT, the probability that
it ends unlearned, and a provisional cause.

The score is a logistic regression (scikit-learn) on standardised features, each read by default
as its percentile among the run's examples at that step (`transformed`: a world of sentence
answers, whose losses have another scale, then reads like one of one-word answers), fitted on
finished runs (their features at several points of SFT against the final detection label) and
stored as plain numbers (`save`/`load`), so scoring needs no scikit-learn object and is exact to reproduce.
A model is never used on the data it was fitted on: it records a key of every example it was
fitted on (`keys`: a short SHA-256 of its prompt and response) and `check_unseen` refuses a run
sharing more than `SHARED_LIMIT` of its examples with them: the same data, a subset of it (an arm
that deleted examples), or the same world with a few records changed.

The provisional cause reads the same features, its rules tried in turn: contradicting
near-duplicates (III); learned in an earlier phase and lost since (IV); a base model that prefers
another answer (II); still improving at the end of the budget so far (V); otherwise missing
knowledge (I), which early in training has no evidence of its own. Its thresholds are `ilp.online.config.CauseRules`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any, Sequence

import numpy as np
import pandas as pd

from ilp import fileio
from ilp.data import examples as examples_lib
from ilp.data import loaders
from ilp.data.config import DataConfig
from ilp.diagnosis.attribution import CAUSES
from ilp.diagnosis.signals import SignalConfig
from ilp.online import features
from ilp.online.config import CauseRules, OnlineConfig
from ilp.online.features import FEATURES
from ilp.scoring import dynamics_log
from ilp.typed import ConfigError


def provisional_cause(features: pd.DataFrame, rules: CauseRules = CauseRules()) -> np.ndarray:
  """One of I..V per example (as the final diagnosis would name it), from its features now."""
  f = features
  conditions = [
    ("III", f["contradicting_duplicates"] > 0),
    ("IV", (f["earlier_phase"] > 0) & ((f["learned_then_lost"] > 0) | (f["boundary_drop"] > rules.forgetting_drop))),
    ("II", f["initial_margin"] < rules.conflict_margin),
    ("V", f["recent_improvement"] > rules.improvement),
  ]
  return np.select([c.to_numpy() for _, c in conditions], [name for name, _ in conditions], default=CAUSES[0])


# the share of a run's examples a model may have been fitted on; two seeds of the world share ~2%
# of their (prompt, response) pairs by chance, a subset or a re-run of the same data 100%
SHARED_LIMIT = 0.25


def keys(examples: pd.DataFrame) -> tuple[str, ...]:
  """Per example (table order), 16 hex digits of the SHA-256 of its (prompt, response)."""
  pairs = zip(examples["prompt"].astype(str), examples["response"].astype(str))
  return tuple(hashlib.sha256(json.dumps(pair).encode()).hexdigest()[:16] for pair in pairs)


TRANSFORMS = ("none", "rank")


def transformed(features: pd.DataFrame, transform: str) -> pd.DataFrame:
  """The features a score reads: as they are ("none"), or each as its percentile among the run's
  examples at that step ("rank", ties averaged), which no scale difference between runs survives
  (a world of sentence answers has other loss values than one of one-word answers)."""
  return features.rank(pct=True) if transform == "rank" else features


@dataclasses.dataclass(frozen=True)
class EarlyWarning:
  """A fitted score: P(unlearned at the end) = sigmoid(((x - mean) / scale) . coef + intercept),
  x the features `transformed` as it was fitted."""

  mean: tuple[float, ...]
  scale: tuple[float, ...]
  coef: tuple[float, ...]
  intercept: float
  fitted_on: tuple[str, ...]  # `keys` of the examples it was fitted on, sorted
  features: tuple[str, ...] = FEATURES
  transform: str = "none"  # one of TRANSFORMS

  def score(self, features: pd.DataFrame) -> np.ndarray:
    """Per example of one run at one step (`features`: every example, as `ilp.online.features.at_step`)."""
    x = transformed(features[list(self.features)], self.transform).to_numpy(np.float64)
    z = ((x - np.asarray(self.mean)) / np.asarray(self.scale)) @ np.asarray(self.coef) + self.intercept
    return 1.0 / (1.0 + np.exp(-z))

  def check_unseen(self, examples: Sequence[str], field: str = "sft.online.model") -> None:
    """Refuses to score a run (`examples`: its `keys`) more than `SHARED_LIMIT` of whose examples
    the model was fitted on (its score would be optimistic)."""
    shared = float(np.isin(np.asarray(examples), np.asarray(self.fitted_on)).mean()) if len(examples) else 0.0
    if shared > SHARED_LIMIT:
      raise ConfigError(
        field,
        f"the early-warning model was fitted on {100 * shared:.0f}% of this run's SFT examples "
        f"(at most {100 * SHARED_LIMIT:.0f}%); fit it on other runs",
      )

  def save(self, path: str) -> None:
    fileio.write_json_atomic(path, dataclasses.asdict(self))

  @classmethod
  def load(cls, path: str) -> "EarlyWarning":
    with open(path) as f:
      raw = json.load(f)
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()})


def fit(
  features: Sequence[pd.DataFrame],
  labels: Sequence[np.ndarray],
  examples: Sequence[str],
  c: float = 1.0,
  transform: str = "rank",
) -> EarlyWarning:
  """Fits the score on the pooled rows of several (features, final label) tables, each one run at
  one step (class-balanced weights: unlearned examples are the minority); `examples`: the `keys`
  of the runs' examples; `transform`: how features are read (`transformed`, per table)."""
  from sklearn.linear_model import LogisticRegression
  from sklearn.preprocessing import StandardScaler

  if transform not in TRANSFORMS:
    raise ValueError(f"transform '{transform}' is not one of {TRANSFORMS}")
  x = pd.concat([transformed(f[list(FEATURES)], transform) for f in features]).to_numpy(np.float64)
  y = np.concatenate(labels).astype(bool)
  scaler = StandardScaler().fit(x)
  scale = np.where(scaler.scale_ > 0, scaler.scale_, 1.0)
  model = LogisticRegression(C=c, class_weight="balanced", max_iter=1000).fit((x - scaler.mean_) / scale, y)
  return EarlyWarning(
    tuple(scaler.mean_.tolist()),
    tuple(scale.tolist()),
    tuple(model.coef_[0].tolist()),
    float(model.intercept_[0]),
    tuple(sorted(set(examples))),
    transform=transform,
  )


def check(config: Any, data: DataConfig) -> None:
  """Before any stage runs: the early-warning model (`sft.online.model`) loads, and was not fitted
  on the SFT records that exist already (`{workdir}` ones are checked when SFT starts, `Watch.of`)."""
  if not config.sft.online.model:
    return
  model = EarlyWarning.load(config.sft.online.model)
  records = loaders.load_sft(data.sft, data.extra_fields) if data.sft else []
  if records:
    prompts = [examples_lib.prompt_text(r.prompt_messages) for r in records]
    model.check_unseen(keys(pd.DataFrame({"prompt": prompts, "response": [r.response for r in records]})))


@dataclasses.dataclass
class Watch:
  """What the training loop's early-warning view scores with (`sft.online`), and what it spent."""

  model: EarlyWarning
  data: pd.DataFrame  # `features.data_signals` of the examples, indexed by id
  datasets: pd.Series  # id -> data set
  config: OnlineConfig
  signals: SignalConfig  # how the features are computed (the diagnosis's settings)
  seconds: float = 0.0  # spent scoring so far (in the summary: the view's overhead)
  calls: int = 0

  @classmethod
  def of(cls, examples: pd.DataFrame, config: OnlineConfig, signals: SignalConfig) -> "Watch":
    """The view of a run training on `examples` (the examples table); refuses a model fitted on
    this data, before any training."""
    model = EarlyWarning.load(config.model)
    model.check_unseen(keys(examples))
    return cls(model, features.data_signals(examples, signals), examples.set_index("id")["dataset"], config, signals)

  def assess(self, dynamics: pd.DataFrame, step: int) -> tuple[np.ndarray, np.ndarray]:
    """Per example (the examples table's order): at risk (score >= threshold) and its provisional
    cause, from the dynamics log's rows up to `step`; nothing is at risk while the log holds only
    the base model's pass (no training to read yet)."""
    if not (dynamics_log.rows(dynamics, dynamics_log.EVAL)["step"] > 0).any():
      return np.zeros(len(self.data), bool), np.full(len(self.data), "")
    found = features.at_step(dynamics, self.data, step, self.signals)
    return self.model.score(found) >= self.config.threshold, provisional_cause(found, self.config.causes)
