"""Controls that react to a held-out dev set while training: dynamic resampling (the paper's M-IV)
and progressive epochs with early stopping (M-V).

The loop evaluates the dev set at the steps a control asks for and hands it the per-data-set
results. A control may rewrite the *coming* batches of the planned stream (same rows count and
padded length, so the train step never recompiles) or stop training. Its decisions are part of
the checkpoint (`state`), and `restore` replays them onto a freshly planned stream, so a resumed
run trains on exactly the batches the uninterrupted run did.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Protocol, Sequence

import numpy as np

from ilp.data import batches as batching
from ilp.typed import check

Dev = dict[str, dict[str, float]]  # data set (and "all") -> {"loss", "accuracy", "examples"}


@dataclasses.dataclass(frozen=True)
class ResampleConfig:
  """Dynamic resampling (`sft.resample`): every `every_steps` steps (0: off; the paper: 500) each
  data set's dev accuracy is compared with the previous check; a data set whose accuracy fell by
  more than `drop` (relative; the paper: 5%) gets `share` of the rows of each of the next
  `every_steps` batches (the paper does not give the share)."""

  every_steps: int = 0  # steps between dev-accuracy checks (0: off)
  drop: float = 0.05  # resample a data set whose dev accuracy fell more than this (relative) since the last check
  share: float = 0.25  # share of the rows of each of the next `every_steps` batches a resampled data set gets

  def __post_init__(self):
    check(self.every_steps >= 0, "every_steps", f"must be >= 0, got {self.every_steps}")
    check(0 < self.drop < 1, "drop", f"must be in (0, 1), got {self.drop}")
    check(0 < self.share <= 1, "share", f"must be in (0, 1], got {self.share}")


@dataclasses.dataclass(frozen=True)
class ProgressiveConfig:
  """Progressive epochs with early stopping (`sft.progressive`): the last phase runs up to
  `max_epochs` epochs, one at a time, and stops after epoch e when L_val(e) > L_val(e-1) + `delta`
  (the paper's rule, δ = 0.01). The model of the stopping epoch is kept (no rollback, as Keras'
  EarlyStopping by default)."""

  enabled: bool = False  # run the last phase by progressive epochs with early stopping
  max_epochs: int = 10  # the most epochs the last phase runs
  delta: float = 0.01  # stop after an epoch whose dev loss exceeds the previous epoch's by more than this

  def __post_init__(self):
    check(self.max_epochs >= 1, "max_epochs", f"must be >= 1, got {self.max_epochs}")
    check(self.delta >= 0, "delta", f"must be >= 0, got {self.delta}")


class Control(Protocol):
  """What the loop asks of a control."""

  def due(self, step: int) -> bool:
    """Whether the dev set is evaluated for this control after `step` optimizer steps."""

  def update(self, step: int, dev: Dev, stream: batching.Stream) -> bool:
    """Acts on the dev results after `step`; True stops training."""

  def state(self) -> dict[str, Any]:
    """JSON-serialisable decisions so far (stored in the checkpoint)."""

  def restore(self, state: dict[str, Any], stream: batching.Stream) -> None:
    """Replays `state`'s decisions onto the freshly planned `stream`."""


class Resampler:
  """Dynamic resampling of data sets whose dev accuracy dropped (see `ResampleConfig`)."""

  def __init__(self, config: ResampleConfig, datasets: np.ndarray, lengths: np.ndarray, seed: int):
    self.config, self.datasets, self.lengths, self.seed = config, datasets, lengths, seed
    self.last: dict[str, float] = {}
    self.events: list[dict[str, Any]] = []

  def due(self, step: int) -> bool:
    return step % self.config.every_steps == 0

  def update(self, step: int, dev: Dev, stream: batching.Stream) -> bool:
    for name in sorted(k for k in dev if k != "all"):
      accuracy = dev[name]["accuracy"]
      before = self.last.get(name)
      if before is not None and before > 0 and (before - accuracy) / before > self.config.drop:
        event = {"step": step, "dataset": name, "before": before, "after": accuracy}
        event["rows"] = self._apply(event, stream)
        self.events.append(event)
      self.last[name] = accuracy
    return False

  def _apply(self, event: dict[str, Any], stream: batching.Stream) -> int:
    """Gives the event's data set `share` of the rows of the next `every_steps` batches."""
    rng = np.random.default_rng([self.seed, 11, event["step"]])
    pool = np.flatnonzero(self.datasets == event["dataset"])
    return put_rows(stream, event["step"], self.config.every_steps, pool, self.lengths, self.config.share, rng)

  def state(self) -> dict[str, Any]:
    return {"last": dict(self.last), "events": [dict(e) for e in self.events]}

  def restore(self, state: dict[str, Any], stream: batching.Stream) -> None:
    self.last = dict(state.get("last", {}))
    self.events = []
    for event in state.get("events", []):
      self._apply(event, stream)
      self.events.append(dict(event))


def put_rows(
  stream: batching.Stream, first: int, count: int, pool: np.ndarray, lengths: np.ndarray, share: float, rng: Any
) -> int:
  """Replaces `share` of the real rows of batches first..first+count-1 (rows not from `pool`) with
  examples of `pool` that fit the batch's padded length (so the step never recompiles); packed
  replay batches are left alone. Returns how many rows were replaced."""
  replaced = 0
  for i in range(first, min(first + count, len(stream.batches))):
    planned = stream.batches[i]
    if planned.replay or not len(pool):
      continue
    fits = pool[lengths[pool] <= planned.length]
    slots = np.flatnonzero((planned.rows >= 0) & ~np.isin(planned.rows, pool))
    take = min(len(slots), int(round(share * (planned.rows >= 0).sum())))
    if not len(fits) or not take:
      continue
    rows = planned.rows.copy()
    rows[rng.choice(slots, take, replace=False)] = rng.choice(fits, take)
    stream.batches[i] = dataclasses.replace(planned, rows=rows, placed=planned.placed + take)
    replaced += take
  return replaced


class EarlyStop:
  """Progressive epochs: stop after the first epoch end (of the steps given) whose dev loss
  exceeds the previous epoch end's by more than `delta`."""

  def __init__(self, config: ProgressiveConfig, epoch_ends: Sequence[int]):
    self.config, self.epoch_ends = config, set(epoch_ends)
    self.losses: list[tuple[int, float]] = []
    self.stopped_at: int | None = None

  def due(self, step: int) -> bool:
    return step in self.epoch_ends

  def update(self, step: int, dev: Dev, stream: batching.Stream) -> bool:
    del stream
    loss = dev["all"]["loss"]
    if self.losses and loss > self.losses[-1][1] + self.config.delta:
      self.stopped_at = step
    self.losses.append((step, loss))
    return self.stopped_at is not None

  def state(self) -> dict[str, Any]:
    return {"losses": [list(x) for x in self.losses], "stopped_at": self.stopped_at}

  def restore(self, state: dict[str, Any], stream: batching.Stream) -> None:
    del stream
    self.losses = [(int(s), float(v)) for s, v in state.get("losses", [])]
    self.stopped_at = state.get("stopped_at")


def dev_results(stats: dict[str, np.ndarray], datasets: np.ndarray) -> Dev:
  """Token-weighted dev loss and exact-match accuracy, per data set and over all ("all")."""
  out = {}
  for name in ["all", *sorted(set(datasets.tolist()))]:
    sel = np.ones(len(datasets), bool) if name == "all" else datasets == name
    out[name] = {
      "loss": float(stats["nll_sum"][sel].sum() / max(stats["tokens"][sel].sum(), 1)),
      "accuracy": float(stats["exact_match"][sel].mean()),
      "examples": int(sel.sum()),
    }
  return out
