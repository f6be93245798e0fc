"""The online control (`sft.online.replay_share` > 0): acts on the early warning while SFT runs.

At the evaluation passes the view scores (`sft.online.every_steps` apart), the examples at risk
whose provisional cause training itself can mend (`sft.online.replay_causes`; by default V,
still improving: slow learning, and IV, learned in an earlier phase and lost since) are replayed:
they take `replay_share` of the rows of each of the next `every_steps` batches (rows of examples
that are not at risk, and only examples that fit the batch's padded length, so the step never
recompiles). The batches keep their count and shape, so the run trains exactly the steps and
tokens it planned: the compute is the baseline's. At-risk examples of III (a near-duplicate with
another answer) and II (a base model that prefers another answer) are flagged for the report
(`flagged`, `ilp.report.online`), not replayed: more visits would hammer a contradiction. Every
decision (the step, the rows chosen) goes into the checkpoint (`state`) and is replayed onto a
freshly planned stream on resume (`restore`), as the dev-set controls do.

It reads the dynamics log's written files (the rows since the last checkpoint are not yet on disk,
and the pass of the step it acts at is evaluated after it): what a resumed run reads at the same
step too.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ilp.data import batches as batching
from ilp.online.config import FLAGGED
from ilp.online.warning import Watch
from ilp.scoring import dynamics_log
from ilp.train.controls import put_rows
from ilp.typed import ConfigError

KIND = "online"  # marks the control's state among the run's controls


class OnlineReplay:
  """The `ilp.train.controls.Control` of the early warning (see the module docstring)."""

  needs_dev = False  # it reads the training set's own evaluation passes, not the dev set

  def __init__(self, watch: Watch, dynamics: str, lengths: np.ndarray, stream: batching.Stream, seed: int):
    self.warned, self.dynamics, self.lengths, self.stream, self.seed = watch, dynamics, lengths, stream, seed
    self.config = watch.config
    self.last = -self.config.every_steps
    self.events: list[dict[str, Any]] = []
    self.read: dict[str, Any] = {}  # the log's files read so far (`dynamics_log.load`'s cache)
    steps = np.bincount([b.phase for b in stream.batches if not b.replay])
    shortest = int(steps[steps > 0].min()) if len(stream.batches) else 0
    if self.config.every_steps > shortest:
      raise ConfigError(
        "sft.online.every_steps",
        f"{self.config.every_steps} is longer than the shortest phase ({shortest} steps): its replays would spill over",
      )

  def due(self, step: int) -> bool:
    """At an evaluation pass (of the stream as now planned) `every_steps` or more after the last."""
    if step - self.last < self.config.every_steps or all(p.step != step for p in self.stream.eval_points):
      return False
    self.last = step
    return True

  def update(self, step: int, dev: Any, stream: batching.Stream) -> bool:
    del dev
    at_risk, causes = self.warned.assess(dynamics_log.load(self.dynamics, self.read), step)
    replayed = at_risk & np.isin(causes, self.config.replay_causes)
    event = {
      "step": step,
      "replay": np.flatnonzero(replayed).tolist(),  # example rows (table order)
      "flagged": {c: np.flatnonzero(at_risk & (causes == c)).tolist() for c in FLAGGED},  # for the report
    }
    event["rows"] = self._apply(event, stream)
    self.events.append(event)
    return False

  def _apply(self, event: dict[str, Any], stream: batching.Stream) -> int:
    """Puts the event's examples into `replay_share` of the rows of the next `every_steps` batches."""
    rng = np.random.default_rng([self.seed, 29, event["step"]])
    pool = np.asarray(event["replay"], np.int64)
    count = max(self.config.every_steps, 1)
    return put_rows(stream, event["step"], count, pool, self.lengths, self.config.replay_share, rng)

  def state(self) -> dict[str, Any]:
    return {"kind": KIND, "last": self.last, "events": [dict(e) for e in self.events]}

  def restore(self, state: dict[str, Any], stream: batching.Stream) -> None:
    self.last = state.get("last", -self.config.every_steps)
    self.events = []
    for event in state.get("events", []):
      self._apply(event, stream)
      self.events.append(dict(event))


def flagged(summary: dict[str, Any]) -> dict[str, list[int]] | None:
  """The examples (table rows) an SFT run's online control flagged at its last decision, by
  provisional cause (`sft/summary.json`'s controls); None when it ran without the control."""
  state = next((c for c in summary.get("controls", []) if c.get("kind") == KIND), None)
  if state is None:
    return None
  return dict(state["events"][-1]["flagged"]) if state["events"] else {c: [] for c in FLAGGED}


def build(
  examples: Any, config: Any, dynamics: str, stream: batching.Stream, lengths: np.ndarray
) -> tuple[Watch | None, OnlineReplay | None]:
  """The early warning's view of a run training on `examples` (None: `config.sft.online.model`
  unset) and, with `sft.online.replay_share`, its control; both refuse bad settings before training."""
  online = config.sft.online
  if not online.model:
    return None, None
  watch = Watch.of(examples, online, config.diagnose.signals)
  return watch, OnlineReplay(watch, dynamics, lengths, stream, config.seed) if online.replay_share else None
