"""M-V, progressive epochs with early stopping: the last SFT phase starts at one epoch and adds
one at a time, up to `max_epochs`, stopping after epoch e when the dev loss
L_val(e) > L_val(e-1) + `delta` (`sft.progressive`).

Progressive epochs and training to convergence both decide how long the last phase runs, so the
arm turns convergence off: the earlier phases train the epochs the baseline actually trained
(`Context.trained_phases`), the last one progressively."""

from __future__ import annotations

import dataclasses
from typing import Any

from ilp.interventions import arms, watched
from ilp.train.controls import ProgressiveConfig
from ilp.typed import check


@dataclasses.dataclass(frozen=True)
class Settings:
  causes: tuple[str, ...] = ("V",)  # the causes the arm is measured on (it changes the whole SFT run)
  max_epochs: int = 10  # the most epochs the last phase runs
  delta: float = 0.01  # the paper's δ
  dev_fraction: float = 0.1  # held out when the data has no `data.dev`

  def __post_init__(self):
    check(0 < self.dev_fraction < 1, "dev_fraction", f"must be in (0, 1), got {self.dev_fraction}")
    ProgressiveConfig(True, self.max_epochs, self.delta)


def prepare(context: Any, settings: Settings, config: Any) -> Any:
  progressive = ProgressiveConfig(True, settings.max_epochs, settings.delta)
  config = watched.with_dev(arms.exact_epochs(config, context.trained_phases()), settings.dev_fraction)
  return dataclasses.replace(config, sft=dataclasses.replace(config.sft, progressive=progressive))
