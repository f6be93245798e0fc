"""The `interventions` config section: which arms run, each an intervention with its settings.

An intervention is one module of this package (`INTERVENTIONS` names them) holding a frozen
`Settings` dataclass and a `prepare` function; an arm picks one and overrides its settings, so
one intervention can run as several arms (e.g. conflict resolution by deletion, by bucketing,
and both: the paper's Table 8 ablation).
"""

from __future__ import annotations

import dataclasses
import importlib
import re
from types import ModuleType
from typing import Any

from ilp import typed
from ilp.typed import check

INTERVENTIONS = {
  "knowledge": "ilp.interventions.knowledge",  # M-I: knowledge-injecting continual pre-training
  "calibration": "ilp.interventions.calibration",  # M-II: calibrating continual pre-training
  "conflict": "ilp.interventions.conflict",  # M-III: deletion and/or bucketing of conflicting groups
  "shuffle": "ilp.interventions.shuffle",  # M-IV: global shuffle + dynamic resampling
  "progressive": "ilp.interventions.progressive",  # M-V: progressive epochs + early stopping
  "epochs": "ilp.interventions.epochs",  # control arm: the baseline with more epochs
  "online": "ilp.interventions.online",  # the early warning acting during SFT (no baseline needed)
}


def module(intervention: str) -> ModuleType:
  return importlib.import_module(INTERVENTIONS[intervention])


@dataclasses.dataclass(frozen=True)
class ArmConfig:
  """One arm: a name (its directory `arms/<name>/`), the intervention, and overrides of that
  intervention's `Settings` fields."""

  name: str  # its directory arms/<name>/: letters, digits, _ . -
  intervention: str  # one of INTERVENTIONS
  settings: dict = dataclasses.field(default_factory=dict)  # {field: value} over the intervention's Settings

  def __post_init__(self):
    check(
      bool(re.fullmatch(r"[A-Za-z0-9_.-]+", self.name)) and self.name not in (".", ".."),
      "name",
      f"'{self.name}' must be a non-empty directory name (letters, digits, _ . -; not '.' or '..')",
    )
    check(
      self.intervention in INTERVENTIONS, "intervention", f"'{self.intervention}' is not one of {tuple(INTERVENTIONS)}"
    )
    typed.build(module(self.intervention).Settings, self.settings, "settings")

  def typed_settings(self) -> Any:
    return typed.build(module(self.intervention).Settings, self.settings, "settings")


CONTROL_PREFIX = "more_epochs.e"  # derived equal-compute controls: arms/more_epochs.e<epochs>/ (reserved)
ROUNDINGS = ("nearest", "up")  # how a budget becomes epochs (`ilp.interventions.equal_compute`)


@dataclasses.dataclass(frozen=True)
class InterventionsConfig:
  """Arms run by the `arms` stage after the baseline; `compare` measures each against it with
  `bootstrap_samples` paired bootstrap resamples (95% intervals), and each mitigation also
  against "more epochs" of the baseline at the mitigation's compute (`ilp.interventions.equal_compute`)."""

  arms: tuple[ArmConfig, ...] = ()  # the arms, by distinct names, run in this order
  bootstrap_samples: int = 1000  # resamples of each paired bootstrap (>= 100)
  equal_compute: bool = True  # derive and compare an equal-compute "more epochs" control per mitigation
  equal_compute_rounding: str = "nearest"  # control epochs: "nearest" the arm's tokens, or "up" (never fewer)
  # arms run at once, each in a process of its own (> 1: a CPU machine whose cores one small run
  # cannot keep busy; the arms' results do not depend on it; 1 in a multi-process job)
  workers: int = 1

  def __post_init__(self):
    names = [arm.name for arm in self.arms]
    check(len(set(names)) == len(names), "arms", f"arm names repeat: {names}")
    reserved = [name for name in names if name.startswith(CONTROL_PREFIX) or name == "baseline"]
    check(
      not reserved,
      "arms",
      f"arm names {reserved} are reserved: 'baseline' names the baseline run, "
      f"'{CONTROL_PREFIX}<epochs>' the derived equal-compute controls",
    )
    check(self.workers >= 1, "workers", f"must be >= 1, got {self.workers}")
    check(self.bootstrap_samples >= 100, "bootstrap_samples", f"must be >= 100, got {self.bootstrap_samples}")
    check(
      self.equal_compute_rounding in ROUNDINGS,
      "equal_compute_rounding",
      f"'{self.equal_compute_rounding}' is not one of {ROUNDINGS}",
    )
