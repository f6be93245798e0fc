"""The online arm (issue 26): the baseline's SFT run again with the early warning acting during it
(`sft.online`, `ilp.online.control`): every `every_steps` steps the early-warning model scores every
example from its dynamics so far, and the at-risk examples of `replay_causes` take `share` of the
rows of the coming batches; III- and II-like ones are flagged in the report, not replayed.

It needs no baseline: it is what a user runs instead of SFT, detection, diagnosis and a second
training. To compare it at equal compute, it trains on the baseline's own schedule
(`arms.baseline_schedule`: each phase ends where the baseline's criterion held, same learning rate
at every step), so its steps and tokens are the baseline's and it differs from the baseline by the
rows the control placed; a post-hoc arm's total compute includes the baseline it needed first
(`ilp.interventions.equal_compute.totals`). The early-warning model must be fitted on other runs
(scripts/early_warning.py --save): one fitted on this world is refused before SFT."""

from __future__ import annotations

import dataclasses
from typing import Any

from ilp.interventions import arms
from ilp.online.config import OnlineConfig
from ilp.typed import check


@dataclasses.dataclass(frozen=True)
class Settings:
  """Defaults: the settings chosen on world seed 0 among six (docs/measurements.md, "The online arm")."""

  causes: tuple[str, ...] = ("I", "IV", "V")  # the causes the arm is measured on (the ones it replays)
  model: str = ""  # the early-warning model (scripts/early_warning.py --save), fitted on other runs (absolute path)
  share: float = 0.75  # of the rows of each coming batch, given to the at-risk examples (the compute budget)
  threshold: float = 0.5  # an example is at risk when its score reaches this
  every_steps: int = 50  # steps between the control's decisions
  replay_causes: tuple[str, ...] = ("I", "IV", "V")  # provisional causes replayed (III and II are flagged)
  # > 0: the last phase's plateau that many epochs later than the baseline's (more compute: to match
  # a post-hoc arm's total, the baseline's tokens included)
  extra_epochs: int = 0

  def __post_init__(self):
    check(bool(self.model), "model", "the online arm needs an early-warning model (scripts/early_warning.py --save)")
    check(0 < self.share <= 1, "share", f"must lie in (0, 1], got {self.share}")
    check(self.extra_epochs >= 0, "extra_epochs", f"must be >= 0, got {self.extra_epochs}")
    self.online()

  def online(self) -> OnlineConfig:
    return OnlineConfig(self.model, self.every_steps, self.threshold, self.share, self.replay_causes)


def prepare(context: Any, settings: Settings, config: Any) -> Any:
  config = arms.baseline_schedule(config, context, settings.extra_epochs)
  online = dataclasses.replace(settings.online(), causes=config.sft.online.causes)
  return dataclasses.replace(config, sft=dataclasses.replace(config.sft, online=online))
