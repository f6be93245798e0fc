"""The "more epochs" control arm (the paper's Table 4): the baseline with a larger epoch budget,
to tell what an intervention adds beyond longer training. It targets no cause.

A control must train exactly the epochs it asks for, so training to convergence is off: the
raised phases train `epochs` (or, with `extra` > 0, the epochs the baseline trained them plus
`extra`: the paper's "ten more epochs on the converged baseline"), every other phase the epochs
the baseline actually trained (`Context.trained_phases`), which is what the equal-compute
controls' token counts assume (`ilp.interventions.equal_compute`).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from ilp.interventions import arms
from ilp.typed import check


@dataclasses.dataclass(frozen=True)
class Settings:
  causes: tuple[str, ...] = ()  # none: a control arm targets no cause
  epochs: int = 10  # the raised phases' epochs (unused when `extra` > 0)
  extra: int = 0  # > 0: the raised phases train the baseline's trained epochs plus this many
  phases: tuple[str, ...] = ()  # names of `sft.phases` entries to raise (empty: every phase)

  def __post_init__(self):
    check(self.epochs >= 1, "epochs", f"must be >= 1, got {self.epochs}")
    check(self.extra >= 0, "extra", f"must be >= 0 (0: `epochs` instead), got {self.extra}")


def _names(sft: Any) -> list[str]:
  return [p.name or f"phase{k + 1}" for k, p in enumerate(sft.phases)]


def check_config(config: Any, settings: Settings) -> None:
  if not config.sft.phases:
    check(not settings.phases, "settings.phases", "sft.phases is empty: name no phases (every phase is raised)")
  unknown = sorted(set(settings.phases) - set(_names(config.sft)))
  check(not unknown, "settings.phases", f"unknown phase(s) {unknown} (sft.phases has {_names(config.sft)})")


def prepare(context: Any, settings: Settings, config: Any) -> Any:
  raised = lambda p: p.epochs + settings.extra if settings.extra else settings.epochs
  phases = tuple(
    dataclasses.replace(p, epochs=raised(p)) if not settings.phases or p.name in settings.phases else p
    for p in context.trained_phases()
  )
  return arms.exact_epochs(config, phases)
