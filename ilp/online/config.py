"""The online section of SFT (`sft.online`): which early-warning model watches training, and the
provisional cause's thresholds (no JAX, no scikit-learn: config sections import it)."""

from __future__ import annotations

import dataclasses

from ilp.typed import check

REPLAYABLE = ("I", "IV", "V")  # provisional causes more visits can mend
FLAGGED = ("III", "II")  # provisional causes more visits would hammer: reported, never replayed


@dataclasses.dataclass(frozen=True)
class CauseRules:
  """Thresholds of the provisional cause (`sft.online.causes`; ours: the paper diagnoses after
  training only)."""

  forgetting_drop: float = 0.2  # IV: gold-token probability lost since its own phase ended
  conflict_margin: float = -2.0  # II: the base model's mean gold-logit margin below this (it prefers another token)
  improvement: float = 0.05  # V: relative loss fall over the last passes above this (still learning)

  def __post_init__(self):
    check(0 <= self.forgetting_drop <= 1, "forgetting_drop", f"must lie in [0, 1], got {self.forgetting_drop}")
    check(self.improvement >= 0, "improvement", f"must be >= 0, got {self.improvement}")


@dataclasses.dataclass(frozen=True)
class OnlineConfig:
  """The early warning during SFT (section `sft.online`): at evaluation passes (`every_steps` apart
  at least, bounding its cost), the model in `model` scores every example, and TensorBoard gets
  `online/predicted_unlearned` (overall and by provisional cause) and
  `online/at_risk_share/<data set>`; with `replay_share`, the control acts on it
  (`ilp.online.control`)."""

  model: str = ""  # an early-warning model (scripts/early_warning.py --save), fitted on other runs ("": off)
  every_steps: int = 50  # score at the first evaluation pass at least this many steps after the last (0: every pass)
  threshold: float = 0.5  # an example is at risk when its score reaches this
  # act (ilp.online.control): at-risk V- and IV-like examples take this share of the rows of the
  # next every_steps batches (0: watch only; the batches keep their count and shape: equal compute)
  replay_share: float = 0.0
  # the provisional causes replayed: those more visits can mend (I: knowledge SFT itself teaches,
  # IV: forgotten, V: still improving); III and II are flagged, never replayed (more visits would
  # hammer a contradiction)
  replay_causes: tuple[str, ...] = ("V", "IV")
  causes: CauseRules = CauseRules()  # the provisional cause's thresholds

  def __post_init__(self):
    check(0 < self.threshold < 1, "threshold", f"must lie in (0, 1), got {self.threshold}")
    check(self.every_steps >= 0, "every_steps", f"must be >= 0, got {self.every_steps}")
    check(0 <= self.replay_share <= 1, "replay_share", f"must lie in [0, 1] (0: watch only), got {self.replay_share}")
    bad = [c for c in self.replay_causes if c not in REPLAYABLE]
    check(not bad, "replay_causes", f"{bad}: only {REPLAYABLE} can be replayed (III and II are flagged)")
