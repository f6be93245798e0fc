"""M-II, calibrating continual pre-training: for the examples the baseline attributed to a
conflict with pre-training (II), retrieve documents and keep only those that state the
supervised answer (`selection.states`); documents that do not, e.g. the pre-training's competing
fact, are excluded. Pre-training on them, mixed with general text, moves the base model's belief
to the supervised answer before SFT is redone, as the baseline trained it (to convergence when it
is on; see `ilp.interventions.cpt`)."""

from __future__ import annotations

import dataclasses
from typing import Any

import pandas as pd

from ilp.interventions import cpt, selection


@dataclasses.dataclass(frozen=True)
class Settings(cpt.CPTSettings):
  causes: tuple[str, ...] = ("II",)  # documents are retrieved for the baseline's examples of these causes


check_config = cpt.check_config


def prepare(context: Any, settings: Settings, config: Any) -> Any:
  accept = lambda hits: pd.Series(
    [selection.states(t, r) for t, r in zip(hits["text"], hits["reference"])], index=hits.index, dtype=bool
  )
  return cpt.prepare(context, settings, config, accept)
