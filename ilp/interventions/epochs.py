"""The "more epochs" control arm (the paper's Table 4): the baseline with a larger epoch budget,
to tell what an intervention adds beyond longer training. It targets no cause.

The raised phases train `epochs` (or, with `extra` > 0, the epochs the baseline trained them plus
`extra`: the paper's "ten more epochs on the converged baseline"), every other phase the epochs
the baseline actually trained (`Context.trained_phases`), which is what the equal-compute
controls' token counts assume (`ilp.interventions.equal_compute`).

How. When the baseline trained to convergence and the control raises its last phase (the world's
case), the control *continues the baseline* (`continue_baseline`, `sft.extend`): it starts from
the baseline's train state at the last phase's plateau, where the criterion held, and trains that
phase at the same constant learning rate up to the new length, then the same cooldown. Everything
before the plateau is the baseline's own run, so the control differs from the baseline by the added
epochs alone, and costs only them. Otherwise (or with `continue_baseline=False`) it trains from
the base model with training to convergence off, each phase for its fixed epochs under the
optimizer's configured decay (`arms.exact_epochs`).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from ilp import fileio
from ilp.interventions import arms, equal_compute
from ilp.train.convergence import ExtendConfig
from ilp.typed import check


@dataclasses.dataclass(frozen=True)
class Settings:
  causes: tuple[str, ...] = ()  # none: a control arm targets no cause
  epochs: int = 10  # the raised phases' epochs (unused when `extra` > 0)
  extra: int = 0  # > 0: the raised phases train the baseline's trained epochs plus this many
  phases: tuple[str, ...] = ()  # names of `sft.phases` entries to raise (empty: every phase)
  continue_baseline: bool = True  # raising a converged baseline's last phase: continue it from its plateau

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
  last = phases[-1]
  extends = (
    settings.continue_baseline
    and context.config.sft.convergence.max_epochs > 0
    and tuple(settings.phases or [p.name for p in phases]) == (last.name,)
  )
  if not extends:
    return arms.exact_epochs(config, phases)
  plateau = equal_compute.plateau_checkpoint(context.baseline)
  if plateau is None:
    raise fileio.ResumeError(
      f"{context.baseline.checkpoints('sft')}: the baseline kept no checkpoint at its last phase's plateau "
      "(trained before such checkpoints were kept?); set the arm's settings continue_baseline=False "
      "to train the control from the base model instead"
    )
  return dataclasses.replace(
    config,
    sft=dataclasses.replace(config.sft, extend=ExtendConfig(plateau, last.epochs)),
    detect=dataclasses.replace(config.detect, require_converged=False),  # judged at the new plateau, decided
  )
