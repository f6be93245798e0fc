"""M-I, knowledge-injecting continual pre-training: for the examples the baseline attributed to
missing knowledge (I), retrieve background documents about their subjects and answers (and
their prerequisite facts) and pre-train the base model on them, mixed with general text, before
redoing SFT on the original data, as the baseline trained it (to convergence when it is on; see
`ilp.interventions.cpt`)."""

from __future__ import annotations

import dataclasses
from typing import Any

import pandas as pd

from ilp.interventions import cpt


@dataclasses.dataclass(frozen=True)
class Settings(cpt.CPTSettings):
  causes: tuple[str, ...] = ("I",)  # documents are retrieved for the baseline's examples of these causes


check_config = cpt.check_config


def prepare(context: Any, settings: Settings, config: Any) -> Any:
  return cpt.prepare(context, settings, config, lambda hits: pd.Series(True, index=hits.index))
