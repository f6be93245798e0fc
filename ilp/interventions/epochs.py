"""The "more epochs" control arm (the paper's Table 4): the baseline with a larger epoch budget,
to tell what an intervention adds beyond longer training. It targets no cause."""
from __future__ import annotations

import dataclasses
from typing import Any

from ilp.typed import check


@dataclasses.dataclass(frozen=True)
class Settings:
  causes: tuple[str, ...] = ()
  epochs: int = 10
  phases: tuple[str, ...] = ()   # names of `sft.phases` entries to raise (empty: every phase)

  def __post_init__(self):
    check(self.epochs >= 1, "epochs", f"must be >= 1, got {self.epochs}")


def _names(sft: Any) -> list[str]:
  return [p.name or f"phase{k + 1}" for k, p in enumerate(sft.phases)]


def check_config(config: Any, settings: Settings) -> None:
  if not config.sft.phases:
    check(not settings.phases, "settings.phases", "sft.phases is empty: name no phases (sft.epochs is raised)")
  unknown = sorted(set(settings.phases) - set(_names(config.sft)))
  check(not unknown, "settings.phases", f"unknown phase(s) {unknown} (sft.phases has {_names(config.sft)})")


def prepare(context: Any, settings: Settings, config: Any) -> Any:
  del context
  sft = config.sft
  if not sft.phases:
    return dataclasses.replace(config, sft=dataclasses.replace(sft, epochs=settings.epochs))
  phases = tuple(dataclasses.replace(p, epochs=settings.epochs) if not settings.phases or n in settings.phases else p
                 for p, n in zip(sft.phases, _names(sft)))
  return dataclasses.replace(config, sft=dataclasses.replace(sft, phases=phases))
