"""How much the diagnosis depends on each rule threshold (`scripts/sensitivity.py`): macro-F1
against the world's planted causes as each threshold moves to 0.75x and 1.25x its default (a
cosine or share is capped at 1), all else at the defaults, on finished world runs. Detection is
not redone: the blind-fact rule is re-applied to the base model's stored pass rates and BoN
accuracies, the signals and rules to the stored tables (seconds per run).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Iterator

import numpy as np
import pandas as pd

from ilp.data import examples
from ilp.detection import columns as col
from ilp.diagnosis import diagnose
from ilp.layout import Layout
from ilp.scoring import dynamics_log, estimators
from ilp.world import diagnosis_validation as validation

FACTORS = (0.75, 1.25)
THRESHOLDS = (
  "signals.similarity_threshold",
  "signals.embedding_threshold",
  "blind",
  "rules.jsd",
  "rules.prior_persists",
  "rules.prerequisites_known",
  "rules.corpus_coverage",
  "rules.entity_lift",
  "rules.forgetting_drop",
  "rules.improvement",
)
CAPPED = {
  "signals.similarity_threshold",
  "signals.embedding_threshold",
  "rules.prior_persists",
  "rules.prerequisites_known",
  "rules.corpus_coverage",
  "rules.jsd",
  "rules.forgetting_drop",
}


def moved(settings: diagnose.DiagnoseConfig, name: str, factor: float) -> tuple[diagnose.DiagnoseConfig, float]:
  """`settings` with one threshold (`section.field`) scaled, and its new value."""
  section, field = name.split(".")
  part = getattr(settings, section)
  value = getattr(part, field) * factor
  value = min(value, 1.0) if name in CAPPED else value
  return dataclasses.replace(settings, **{section: dataclasses.replace(part, **{field: value})}), value


class Run:
  """One world run's stored tables, diagnosed again under changed thresholds: `protocol`'s label
  (`label`, as in `diagnosis_validation.LABELS`) explained with `evidence` (`EVIDENCE`)."""

  def __init__(self, layout: Layout, config: Any, protocol: str, label: str = "as_run", evidence: str = "as_run"):
    self.layout, self.config = layout, config
    self.detection = validation.with_evidence(
      pd.read_parquet(layout.detection), protocol, label, evidence, config.detect.threshold
    )
    self.examples = examples.read(layout.examples)
    self.dynamics = dynamics_log.load(layout.dynamics())
    self.documents = validation.corpus_documents(defaults(protocol), config.data, evidence)

  def macro_f1(self, settings: diagnose.DiagnoseConfig, blind_factor: float = 1.0) -> float:
    """Macro-F1 of the diagnosis under `settings`, the blind-fact thresholds scaled by `blind_factor`."""
    detection = self.detection
    if blind_factor != 1.0 and col.BASE_BON_AT_BLIND_K in detection:
      detect = self.config.detect
      detection = detection.assign(
        **{
          col.BASE_BLIND: estimators.blind(
            detection[col.BASE_PASS_AT_N].to_numpy(),
            detection[col.BASE_BON_AT_BLIND_K].to_numpy(),
            min(detect.threshold * blind_factor, 1.0),
            min(detect.blind_bon * blind_factor, 1.0),
          )
        }
      )
    table = diagnose.diagnose(
      detection, self.examples, self.dynamics, settings, self.documents, self.config.detect.answers
    )
    return validation.validate(self.layout, table)["macro_f1"]


def defaults(protocol: str) -> diagnose.DiagnoseConfig:
  """The default diagnosis settings, explaining `protocol`'s label: what each threshold moves from."""
  return dataclasses.replace(diagnose.DiagnoseConfig(), protocol=protocol)


def threshold_rows(runs: list[Run], protocol: str, base: list[float]) -> Iterator[str]:
  """One Markdown row per threshold: its default and, at each factor, the moved value and the
  macro-F1 change from `base` (each run's default macro-F1), worst over the runs (mean in brackets)."""
  default = defaults(protocol)
  detect = runs[0].config.detect
  for name in THRESHOLDS:
    changes, values = [], []
    for factor in FACTORS:
      if name == "blind":
        values.append(f"pass < {detect.threshold * factor:.2f}, BoN < {detect.blind_bon * factor:.3f}")
        scores = [r.macro_f1(default, factor) for r in runs]
      else:
        settings, v = moved(default, name, factor)
        values.append(f"{v:g}")
        scores = [r.macro_f1(settings) for r in runs]
      changes.append(np.asarray(scores) - np.asarray(base))
    section, field = name.split(".") if "." in name else ("", name)
    start = (
      getattr(getattr(default, section), field)
      if section
      else f"pass < {detect.threshold}, BoN-{detect.blind_bon_k} < {detect.blind_bon}"
    )
    yield (
      f"| `{name}` | {start} | {values[0]} | {changes[0].min():+.3f} ({changes[0].mean():+.3f}) | "
      f"{values[1]} | {changes[1].min():+.3f} ({changes[1].mean():+.3f}) |"
    )


def table(rows: list[str], base: list[float], protocol: str, label: str, evidence: str) -> str:
  """The Markdown table of `rows`, under a line naming the setting and the default macro-F1 per run."""
  lines = [
    f"Macro-F1 change ({protocol} protocol, {label} label, evidence {evidence}; worst over {len(base)} runs, "
    f"mean in brackets); default macro-F1 {', '.join(f'{f:.3f}' for f in base)}.",
    "",
    "| threshold | default | 0.75x | change | 1.25x | change |",
    "|---|---|---|---|---|---|",
  ] + rows
  return "\n".join(lines) + "\n"
