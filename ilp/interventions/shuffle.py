"""M-IV, global shuffle with dynamic resampling: the visits of all SFT phases interleaved in one
shuffled stream (each example keeps its number of visits; `sft.order="global"`), and every
`every_steps` steps each data set's dev accuracy is checked, a data set whose accuracy fell by
more than `drop` (relative) being resampled into the coming batches (`sft.resample`).

Training to convergence decides each phase's end in sequence and so refuses a global order: the
arm turns it off and trains every phase for the epochs the baseline actually trained
(`Context.trained_phases`), so it reorders the baseline's visits and changes nothing else."""

from __future__ import annotations

import dataclasses
from typing import Any

from ilp.interventions import arms, watched
from ilp.train.controls import ResampleConfig
from ilp.typed import check


@dataclasses.dataclass(frozen=True)
class Settings:
  causes: tuple[str, ...] = ("IV",)  # the causes the arm is measured on (it changes the whole SFT run)
  every_steps: int = 500  # the paper's check interval; 0 turns resampling off (shuffle only)
  drop: float = 0.05  # the paper's 5% relative drop
  share: float = 0.25  # rows of each coming batch given to the dropped data set
  dev_fraction: float = 0.1  # held out when the data has no `data.dev`

  def __post_init__(self):
    check(0 < self.dev_fraction < 1, "dev_fraction", f"must be in (0, 1), got {self.dev_fraction}")
    ResampleConfig(self.every_steps, self.drop, self.share)


def prepare(context: Any, settings: Settings, config: Any) -> Any:
  resample = ResampleConfig(settings.every_steps, settings.drop, settings.share)
  config = arms.exact_epochs(config, context.trained_phases())
  config = watched.with_dev(config, settings.dev_fraction) if settings.every_steps else config
  return dataclasses.replace(config, sft=dataclasses.replace(config.sft, order="global", resample=resample))
