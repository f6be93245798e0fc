"""When has SFT converged? The paper measures ILP only *after* convergence (§3.1: the training
loss is watched to exclude under-training), so every phase is judged, and a phase can be trained
until it holds.

The criterion, per phase and per data set within it: the token-weighted mean response loss of
each epoch, taken from the training visits the loop already scores (the loss of every example in
the forward pass of the step that used it), and the relative improvement of the last epoch over
the one before, r = (L[e-1] - L[e]) / L[e-1] (with `window` w > 1: the mean of the last w epochs
against the mean of the w before them). A learning rate that has decayed makes any loss look
flat, so r is divided by the epoch's mean learning rate relative to the phase's peak (the
schedule's end taken into account); the phase has converged when that adjusted improvement is
below `delta` for every data set (or the loss moved by less than `min_delta` nats, a loss already
near zero). The figures go to `sft/summary.json`; `detect.require_converged` refuses a model whose
last phase did not converge.

Training until convergence (`max_epochs` > 0) uses a warmup-stable-decay schedule, which stays
well defined when the number of epochs is not known in advance (Hägele et al. 2024, "Scaling
Laws and Compute-Optimal Training Beyond Fixed Training Durations"; MiniCPM): warmup, then the
peak learning rate held while the phase runs its epochs one at a time; after each epoch (from the
phase's `epochs` on) the criterion is checked at the constant rate, and once it holds (or
`max_epochs` is reached) the phase runs `cooldown_epochs` more with the rate decayed linearly to
`end_lr_ratio` of the peak, then ends. The decision is part of the checkpoint, so a resumed run
stops exactly where the uninterrupted one did.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

import numpy as np

from ilp.data import batches as batching
from ilp.typed import ConfigError, check


@dataclasses.dataclass(frozen=True)
class ConvergenceConfig:
  """The convergence criterion and training to convergence (config section `sft.convergence`)."""

  delta: float = 0.02  # converged: relative improvement of the epoch loss, per unit of relative LR, below this
  min_delta: float = 1e-3  # ... or an absolute improvement below this many nats per token (a loss near zero)
  max_epochs: int = 0  # > 0: every phase runs until converged, at least its `epochs`, at most this many
  cooldown_epochs: int = 1  # epochs of linear learning-rate decay after the plateau (training to convergence)
  window: int = 1  # epochs averaged on each side of the comparison (> 1 smooths a noisy epoch loss)
  # per phase, the epoch its plateau ends at, decided in advance instead of by the criterion (a
  # converged run's schedule replayed: its decisions' `plateau_epoch`s); () = the criterion decides
  plateaus: tuple[int, ...] = ()

  def __post_init__(self):
    check(self.delta > 0, "delta", f"must be > 0, got {self.delta}")
    check(self.min_delta >= 0, "min_delta", f"must be >= 0, got {self.min_delta}")
    check(self.max_epochs >= 0, "max_epochs", f"must be >= 0 (0: fixed epochs), got {self.max_epochs}")
    check(self.cooldown_epochs >= 0, "cooldown_epochs", f"must be >= 0, got {self.cooldown_epochs}")
    check(self.window >= 1, "window", f"must be >= 1, got {self.window}")
    check(all(p >= 1 for p in self.plateaus), "plateaus", f"each must be >= 1, got {self.plateaus}")
    check(
      not self.plateaus or max(self.plateaus) <= self.max_epochs,
      "plateaus",
      f"{self.plateaus} must lie within max_epochs={self.max_epochs} (training to convergence plans that many)",
    )


@dataclasses.dataclass(frozen=True)
class ExtendConfig:
  """Extending a run trained to convergence (config section `sft.extend`): this run starts from that
  run's train state at its last phase's plateau (`checkpoint`: the step at which the criterion held,
  which the loop keeps) and trains the last phase `epochs` in all, at the peak learning rate up to
  `epochs` - `cooldown_epochs`, then the cooldown: the run as it would have gone had the criterion
  held later. A warmup-stable-decay run branches from its stable trunk at any length (Hägele et al.
  2024), so "more epochs" of a converged run costs only the epochs added; the interventions'
  "more epochs" controls use it (`ilp.interventions.epochs`). Same data and config as that run:
  the checkpoint's stream fingerprint is checked as on any resume."""

  checkpoint: str = ""  # a step directory of the converged run's sft/checkpoints (absolute; empty: off)
  epochs: int = 0  # the last phase's epochs in all: more than the checkpoint's epoch + cooldown_epochs

  def __post_init__(self):
    check(not self.checkpoint or self.epochs >= 1, "epochs", f"must be >= 1 with a checkpoint, got {self.epochs}")


def extended(meta: dict[str, Any], phase: int, epochs: int, cooldown: int, source: str) -> dict[str, Any]:
  """A checkpoint's metadata `meta`, taken during `phase` (the last), with that phase decided anew:
  `epochs` in all, its plateau at `epochs` - `cooldown` (the decision a resumed run replays,
  `Control.restore`; the convergence control's state comes first in `meta["controls"]`)."""
  plateau = epochs - cooldown
  if meta.get("phase") != phase or plateau <= int(meta.get("epoch", 0)):
    raise ValueError(
      f"{source}: taken after epoch {meta.get('epoch')} of phase {meta.get('phase')}; extending the last "
      f"phase ({phase}) to {epochs} epochs needs a checkpoint of that phase before epoch {plateau}"
    )
  controls = [dict(c) for c in meta.get("controls", [])] or [{}]
  decisions = {
    **controls[0].get("decisions", {}),
    str(phase): {"plateau_epoch": plateau, "epochs": epochs, "step": int(meta["step"]), "reason": "extended"},
  }
  controls[0] = {**controls[0], "decisions": decisions}
  return {**meta, "controls": controls}


class Monitor:
  """Per (phase, epoch, data set): response-loss sums of the training visits, and the mean
  learning rate of the epoch's steps. Small and JSON-serialisable (it rides in the checkpoint)."""

  def __init__(self, config: ConvergenceConfig):
    self.config = config
    self.sums: dict[str, list[float]] = {}  # "phase/epoch/dataset" -> [nll, tokens]
    self.rates: dict[str, list[float]] = {}  # "phase/epoch" -> [sum of learning rates, steps]

  def add(
    self, phase: int, epoch: int, datasets: np.ndarray, nll_sum: np.ndarray, tokens: np.ndarray, learning_rate: float
  ) -> None:
    """One step's real rows: their data sets, response NLL sums and response token counts."""
    for name in np.unique(datasets):
      sel = datasets == name
      acc = self.sums.setdefault(f"{phase}/{epoch}/{name}", [0.0, 0.0])
      acc[0] += float(nll_sum[sel].sum())
      acc[1] += float(tokens[sel].sum())
    rate = self.rates.setdefault(f"{phase}/{epoch}", [0.0, 0.0])
    rate[0] += float(learning_rate)
    rate[1] += 1

  def losses(self, phase: int) -> dict[str, dict[int, float]]:
    """Data set -> epoch -> mean response loss of the phase's visits in that epoch."""
    out: dict[str, dict[int, float]] = {}
    for key, (nll, tokens) in self.sums.items():
      p, e, name = key.split("/", 2)
      if int(p) == phase and tokens > 0:
        out.setdefault(name, {})[int(e)] = nll / tokens
    return out

  def learning_rates(self, phase: int) -> dict[int, float]:
    """Epoch -> mean learning rate of the phase's steps in that epoch."""
    return {int(k.split("/")[1]): s / n for k, (s, n) in self.rates.items() if int(k.split("/")[0]) == phase and n}

  def state(self) -> dict[str, Any]:
    return {"sums": {k: list(v) for k, v in self.sums.items()}, "rates": {k: list(v) for k, v in self.rates.items()}}

  def restore(self, state: dict[str, Any]) -> None:
    self.sums = {k: [float(x) for x in v] for k, v in state.get("sums", {}).items()}
    self.rates = {k: [float(x) for x in v] for k, v in state.get("rates", {}).items()}


def judge(
  losses: dict[str, dict[int, float]], rates: dict[int, float], config: ConvergenceConfig, epoch: int | None = None
) -> dict[str, Any]:
  """Whether a phase has converged at `epoch` (default: its last), with the figures: the mean
  loss of the `window` epochs ending at `epoch` against the mean of the `window` before them.

  Args:
    losses: data set -> epoch -> mean response loss (`Monitor.losses`).
    rates: epoch -> mean learning rate (`Monitor.learning_rates`).
    config: delta, min_delta and window.
    epoch: the last epoch judged.
  """
  epochs = sorted({e for by_epoch in losses.values() for e in by_epoch})
  epoch = epochs[-1] if epoch is None and epochs else epoch
  w = config.window
  recent = [] if epoch is None else list(range(epoch - w + 1, epoch + 1))
  earlier = [e - w for e in recent]
  mean = lambda values: float(np.mean(values)) if values and None not in values else None
  peak = max(rates.values()) if rates else 0.0
  recent_lr = mean([rates.get(e) for e in recent])
  relative_lr = recent_lr / peak if peak > 0 and recent_lr is not None else 0.0
  datasets = {}
  for name, by_epoch in sorted(losses.items()):
    last, before = mean([by_epoch.get(e) for e in recent]), mean([by_epoch.get(e) for e in earlier])
    if last is None or before is None:
      datasets[name] = {
        "loss": last,
        "previous_loss": before,
        "converged": False,
        "reason": f"fewer than {2 * w} epochs to compare",
      }
      continue
    gain = before - last
    relative = gain / before if before > 0 else 0.0
    adjusted = relative / relative_lr if relative_lr > 0 else float("inf")
    converged = bool(adjusted < config.delta or abs(gain) < config.min_delta)
    datasets[name] = {
      "loss": last,
      "previous_loss": before,
      "relative_improvement": relative,
      "adjusted_improvement": adjusted,
      "converged": converged,
    }
  return {
    "epoch": epoch,
    "relative_lr": relative_lr,
    "delta": config.delta,
    "min_delta": config.min_delta,
    "window": w,
    "converged": bool(datasets) and all(d["converged"] for d in datasets.values()),
    "datasets": datasets,
    "loss_by_epoch": {name: {str(e): v for e, v in sorted(by_epoch.items())} for name, by_epoch in losses.items()},
  }


def report(monitor: Monitor, phases: Sequence[str], control: "Control | None" = None) -> dict[str, Any]:
  """`sft/summary.json`'s `convergence`: each phase judged (a phase trained to convergence at its
  plateau epoch, before the cooldown decay), and whether the last phase converged."""
  out: dict[str, Any] = {"phases": {}}
  for number, name in enumerate(phases, start=1):
    decided = control.decisions.get(number) if control else None
    at = decided["plateau_epoch"] if decided else None
    verdict = judge(monitor.losses(number), monitor.learning_rates(number), monitor.config, at)
    if decided:
      verdict.update(trained_epochs=decided["epochs"], stopped_by=decided["reason"], decided_at_step=decided["step"])
    out["phases"][name] = verdict
  out["converged"] = bool(phases) and out["phases"][phases[-1]]["converged"]
  out["last_phase"] = phases[-1] if phases else None
  return out


class Control:
  """Training to convergence (a loop control): at each epoch end of a phase, from its `epochs`
  on, judges the phase at its constant learning rate; once it converged (or reached `max_epochs`;
  with `plateaus`, once it reached its plateau epoch, the criterion not consulted)
  the phase keeps `cooldown_epochs` more epochs, which decay the learning rate, and the rest of
  its planned epochs are dropped from the stream (`replan`)."""

  needs_dev = False

  def __init__(self, monitor: Monitor, min_epochs: Sequence[int], replan: Callable[[dict[int, dict[str, Any]]], None]):
    """`monitor`: the loop's (the same object); `min_epochs`: per phase (1-based order), its
    configured `epochs`; `replan(decisions)` rewrites the stream in place for the decisions so far."""
    self.monitor, self.min_epochs, self.replan = monitor, list(min_epochs), replan
    self.config = monitor.config
    if self.config.plateaus and len(self.config.plateaus) != len(self.min_epochs):
      raise ConfigError(
        "sft.convergence.plateaus", f"{self.config.plateaus}: one plateau epoch per phase ({len(self.min_epochs)})"
      )
    self.decisions: dict[int, dict[str, Any]] = {}
    self.epoch_ends: dict[int, tuple[int, int]] = {}

  def watch(self, stream: batching.Stream) -> None:
    """Reads the steps that end an epoch of an undecided phase from the (re)planned stream."""
    self.epoch_ends = {
      p.step: (p.phase, p.epoch)
      for p in stream.eval_points
      if p.step > 0 and "/epoch" in p.name and p.phase not in self.decisions
    }

  def due(self, step: int) -> bool:
    return step in self.epoch_ends

  def update(self, step: int, dev: Any, stream: batching.Stream) -> bool:
    del dev, stream
    phase, epoch = self.epoch_ends[step]
    if self.config.plateaus:
      reason = "fixed" if epoch >= self.config.plateaus[phase - 1] else None
    elif epoch < self.min_epochs[phase - 1]:
      reason = None
    else:
      verdict = judge(self.monitor.losses(phase), self.monitor.learning_rates(phase), self.config, epoch)
      reason = "converged" if verdict["converged"] else "max_epochs" if epoch >= self.config.max_epochs else None
    if reason:
      self.decisions[phase] = {
        "plateau_epoch": epoch,
        "epochs": epoch + self.config.cooldown_epochs,
        "step": step,
        "reason": reason,
      }
      self.replan(self.decisions)
    return False

  def decay_steps(self, stream: batching.Stream, phase: int) -> int:
    """The phase's learning-rate decay steps: its cooldown epochs once decided, none before."""
    decided = self.decisions.get(phase)
    if not decided:
      return 0
    return sum(b.phase == phase and b.epoch > decided["plateau_epoch"] for b in stream.batches)

  def state(self) -> dict[str, Any]:
    return {"decisions": {str(k): dict(v) for k, v in self.decisions.items()}}

  def restore(self, state: dict[str, Any], stream: batching.Stream) -> None:
    """Replays the decisions (the loop restores the shared monitor itself)."""
    del stream
    self.decisions = {int(k): dict(v) for k, v in state.get("decisions", {}).items()}
    if self.decisions:
      self.replan(self.decisions)
