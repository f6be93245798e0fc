"""The training loop's side concerns as hooks: small callables run after every optimizer step, in
the order they were added, each on its own cadence.

As Levanter's `trainer.add_hook(fn, every=N)`, a cadence is a step count (its multiples, and the
stream's last step, where Levanter forces every hook); it may also be a predicate, because here
cadences follow the planned stream too: its evaluation points, epoch and phase ends, the steps a
dev-set control watches. Every hook reads the stream through one `Plan`, which a control may
rewrite or shorten while training runs; what a resumed run needs to repeat the decisions taken so
far (the controls' states, the stop step, token counts, epoch losses) goes into every checkpoint.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import time
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np
import pandas as pd

from ilp import fileio, parallel
from ilp.data import batches as batching
from ilp.model import checkpoint, flops
from ilp.model.config import ModelConfig
from ilp.scoring.evaluator import ExampleEvaluator
from ilp.train import checkpointing, dynamics, metrics
from ilp.train import controls as controls_lib
from ilp.train import convergence as convergence_lib

if TYPE_CHECKING:
  from ilp.online.warning import Watch
  from ilp.train.loop import DevData, TrainData

log = logging.getLogger(__name__)


@dataclasses.dataclass
class StepInfo:
  """What the hooks see of one optimizer step."""

  step: int  # optimizer steps taken, this one included
  batch: batching.PlannedBatch
  host: dict[str, np.ndarray]  # the batch's arrays as assembled on the host
  metrics: dict[str, Any]  # loss, tokens, learning_rate, grad_norm (on the host)
  state: Any  # the train state after the step
  device_stats: Any = None  # per-row statistics (with the dynamics log), still on the devices
  controlled: bool = False  # a dev-set control acted after this step (`Controls`)

  @functools.cached_property
  def stats(self) -> dict[str, np.ndarray]:
    """The per-row statistics on the host, fetched once (by the first hook that reads them)."""
    return parallel.to_host(self.device_stats)

  def visits(self, datasets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The batch's real rows (a mask) and the data set of each, given every example's `datasets`."""
    real = self.batch.rows >= 0
    return real, datasets[self.batch.rows[real]]


Hook = Callable[[StepInfo], None]
Cadence = Callable[[StepInfo], bool]


def on_examples(info: StepInfo) -> bool:
  """The cadence of the per-example hooks: steps on SFT examples (replay batches have no dynamics rows)."""
  return not info.batch.replay


class Plan:
  """The planned stream as the dev-set controls left it: its length, evaluation points, epoch ends
  and learning-rate schedule (re-read when training to convergence replans it), and the step a
  control stopped training at."""

  def __init__(
    self, stream: batching.Stream, controls: Sequence[controls_lib.Control], convergence: convergence_lib.Control | None
  ):
    self.stream, self.controls, self.convergence = stream, tuple(controls), convergence
    self.stopped: int | None = None
    self.reread()

  @property
  def total(self) -> int:
    return len(self.stream.batches)

  def reread(self) -> None:
    """Evaluation points by step, the steps that end an epoch (checkpoints follow them) and the
    schedule (steps per phase and, training to convergence, each phase's decay steps; see
    `optim.make_schedule`); controls that watch the stream's epochs re-read it too."""
    self.evals_at: dict[int, list[batching.EvalPoint]] = {}
    for point in self.stream.eval_points:
      self.evals_at.setdefault(point.step, []).append(point)
    for control in self.controls:
      if hasattr(control, "watch"):
        control.watch(self.stream)
    self.epoch_ends = {p.step for p in self.stream.eval_points if p.step > 0 and not p.name.startswith("step")}
    phases = sorted({b.phase for b in self.stream.batches})
    steps = tuple(sum(b.phase == p for b in self.stream.batches) for p in phases)
    self.schedule = (
      steps,
      (tuple(self.convergence.decay_steps(self.stream, p) for p in phases) if self.convergence else None),
    )

  def replanned(self) -> None:
    """After training to convergence replanned the stream: the other controls replay their
    decisions onto it, and it is re-read."""
    for control in self.controls:
      if control is not self.convergence:
        control.restore(control.state(), self.stream)
    self.reread()

  def ends_phase(self, info: StepInfo) -> bool:
    """Whether the step ends a phase other than the last."""
    return info.step < self.total and self.stream.batches[info.step].phase != info.batch.phase

  def state(self) -> dict[str, Any]:
    return {"controls": [c.state() for c in self.controls], "stopped": self.stopped}

  def restore(self, meta: dict[str, Any]) -> None:
    """Replays a checkpoint's decisions onto the freshly planned stream."""
    for control, control_state in zip(self.controls, meta.get("controls", [])):
      control.restore(control_state, self.stream)
    self.stopped = meta.get("stopped")
    self.reread()


class Hooks:
  """A run's hooks, run after each step in the order added (the order of their log lines)."""

  def __init__(self, plan: Plan):
    self.plan = plan
    self._hooks: list[tuple[Hook, Cadence]] = []

  def add(self, hook: Hook, every: int | Cadence = 1) -> None:
    """Runs `hook` after the steps `every` names: with a count n, every n-th step and the stream's
    last (as the stream stands when the hook's turn comes); with a predicate, the steps it accepts."""
    if isinstance(every, int):
      n = every
      every = lambda info: info.step % n == 0 or info.step == self.plan.total
    self._hooks.append((hook, every))

  def __call__(self, info: StepInfo) -> None:
    for hook, due in self._hooks:
      if due(info):
        hook(info)


class Tokens:
  """Counts the tokens trained on: real, padded, with loss, and of replay batches (the summary and
  checkpoints carry them; the interventions compare arms at equal compute)."""

  KINDS = ("real", "padded", "loss", "replay")

  def __init__(self):
    self.counts = dict.fromkeys(self.KINDS, 0)

  def __call__(self, info: StepInfo) -> None:
    real = int(info.host["mask"].sum())
    self.counts["real"] += real
    self.counts["padded"] += int(info.host["tokens"].size)
    self.counts["loss"] += int(info.host["loss_mask"].sum())
    self.counts["replay"] += real if info.batch.replay else 0

  def restore(self, meta: dict[str, Any]) -> None:
    saved = meta.get("tokens", {})
    self.counts = {k: int(saved.get(k, 0)) for k in self.KINDS}


class Progress:
  """The progress line and its TensorBoard scalars over the steps since the last line: training
  loss, learning rate, gradient norm, throughput and MFU (replay batches' loss apart), the rows
  controls put into the batches (`control/rows_placed_per_step`: resampling, the online replay),
  with an ETA."""

  def __init__(self, writer: metrics.MetricWriter, cfg: ModelConfig, peak_flops: float, plan: Plan, start: int):
    self.writer, self.cfg, self.peak_flops, self.plan, self.start = writer, cfg, peak_flops, plan, start
    self.began = time.time()
    self._reset()

  def _reset(self) -> None:
    self.window_start, self.nll, self.tokens, self.real_tokens, self.flops = time.time(), 0.0, 0.0, 0, 0.0
    self.replay, self.replay_steps, self.placed, self.steps = 0.0, 0, 0, 0

  def add(self, info: StepInfo) -> None:
    self.real_tokens += int(info.host["mask"].sum())
    self.flops += flops.training_flops_per_token(self.cfg, info.batch.length) * info.host["tokens"].size
    self.placed, self.steps = self.placed + info.batch.placed, self.steps + 1
    if info.batch.replay:  # replayed records: their own loss curve
      self.replay += float(info.metrics["loss"])
      self.replay_steps += 1
    else:
      self.nll += float(info.metrics["loss"]) * float(info.metrics["tokens"])
      self.tokens += float(info.metrics["tokens"])

  def write(self, info: StepInfo) -> None:
    elapsed = max(time.time() - self.window_start, 1e-9)
    scalars = {
      "train/loss": self.nll / max(self.tokens, 1),
      "train/learning_rate": info.metrics["learning_rate"],
      "train/grad_norm": info.metrics["grad_norm"],
      "perf/tokens_per_sec": self.real_tokens / elapsed,
      "perf/mfu": self.flops / elapsed / self.peak_flops,
      "control/rows_placed_per_step": self.placed / max(self.steps, 1),
    }
    if self.replay_steps:
      scalars["train/replay_loss"] = self.replay / self.replay_steps
    self.writer.scalars(info.step, scalars)
    eta = (time.time() - self.began) / (info.step - self.start) * (self.plan.total - info.step)
    log.info(
      "step %6d/%d  loss %.4f  lr %.2e  grad %.3f  %.0f tok/s  MFU %.1f%%  ETA %s",
      info.step,
      self.plan.total,
      scalars["train/loss"],
      scalars["train/learning_rate"],
      scalars["train/grad_norm"],
      scalars["perf/tokens_per_sec"],
      100 * scalars["perf/mfu"],
      time.strftime("%H:%M:%S", time.gmtime(eta)),
    )
    self._reset()


class DatasetLoss:
  """Each data set's training loss over the steps since the last progress line
  (`train/loss_by_dataset/<name>`), from the visits' per-example statistics."""

  def __init__(self, datasets: np.ndarray, writer: metrics.MetricWriter):
    self.datasets, self.writer = datasets, writer
    self.sums: dict[str, list[float]] = {}  # data set -> [nll, tokens]

  def add(self, info: StepInfo) -> None:
    real, names = info.visits(self.datasets)
    for name in np.unique(names):
      sel = names == name
      acc = self.sums.setdefault(str(name), [0.0, 0.0])
      acc[0] += float(info.stats["nll_sum"][real][sel].sum())
      acc[1] += float(info.stats["tokens"][real][sel].sum())

  def write(self, info: StepInfo) -> None:
    self.writer.scalars(info.step, {f"train/loss_by_dataset/{k}": v[0] / max(v[1], 1) for k, v in self.sums.items()})
    self.sums = {}


class EpochLosses:
  """Feeds the convergence monitor every visit's response loss, by phase, epoch and data set."""

  def __init__(self, monitor: convergence_lib.Monitor, datasets: np.ndarray):
    self.monitor, self.datasets = monitor, datasets

  def __call__(self, info: StepInfo) -> None:
    real, names = info.visits(self.datasets)
    self.monitor.add(
      info.batch.phase,
      info.batch.epoch,
      names,
      info.stats["nll_sum"][real],
      info.stats["tokens"][real],
      float(info.metrics["learning_rate"]),
    )


class DynamicsLog:
  """Every training visit's statistics into the dynamics log. Rows are written out with each
  checkpoint (`flush` shares its cadence) and files past the restored step are dropped, so a
  resumed run's log holds exactly the steps its state has taken."""

  def __init__(self, directory: str, table: pd.DataFrame, start: int, enabled: bool):
    self.writer = dynamics.DynamicsWriter(directory, table, enabled=enabled)
    self.writer.discard_after(start)

  def __call__(self, info: StepInfo) -> None:
    b = info.batch
    self.writer.add_batch(info.step, b.phase, b.epoch, b.rows, b.positions, info.stats)

  def flush(self, info: StepInfo) -> None:
    del info
    self.writer.flush()


class Evaluation:
  """Full passes over the training set at the stream's evaluation points: every example's
  statistics into the dynamics log, their distribution and means to TensorBoard."""

  def __init__(
    self,
    evaluator: ExampleEvaluator,
    data: TrainData,
    dynamics_writer: dynamics.DynamicsWriter,
    writer: metrics.MetricWriter,
    plan: Plan,
  ):
    self.evaluator, self.data, self.dynamics_writer = evaluator, data, dynamics_writer
    self.writer, self.plan = writer, plan

  def __call__(self, info: StepInfo) -> None:
    self.at(info.step, info.state.params)

  def at(self, step: int, params: Any) -> None:
    """The passes of the evaluation points after `step` optimizer steps (none: nothing)."""
    for point in self.plan.evals_at.get(step, []):
      t0 = time.time()
      stats = self.evaluator(params, self.data.arrays, self.data.lengths, self.data.buckets)
      self.dynamics_writer.write_eval(point, np.arange(len(self.data.lengths)), stats)
      loss = stats["nll_sum"] / np.maximum(stats["tokens"], 1)
      self.writer.histogram(point.step, "eval/example_loss", loss)
      self.writer.histogram(point.step, "eval/example_margin_min", stats["margin_min"])
      self.writer.scalars(
        point.step, {"eval/loss": float(loss.mean()), "eval/exact_match": float(stats["exact_match"].mean())}
      )
      log.info(
        "eval %-16s step %6d: mean loss %.4f, exact match %.1f%% (%.1fs)",
        point.name,
        point.step,
        loss.mean(),
        100 * stats["exact_match"].mean(),
        time.time() - t0,
      )


class EarlyWarningView:
  """The early-warning score after evaluation passes (`sft.online`): how many examples are at
  risk of ending unlearned, overall and by provisional cause, and the at-risk share per data set,
  to TensorBoard (`online/...`) and the log; its time goes into the summary (`online.seconds`)."""

  def __init__(self, online: "Watch", log: dynamics.DynamicsWriter, writer: metrics.MetricWriter, plan: Plan):
    self.online, self.log, self.writer, self.plan = online, log, writer, plan
    self.last = -online.config.every_steps  # the step last scored (the first pass is always scored)

  def due(self, info: StepInfo) -> bool:
    """At an evaluation pass `sft.online.every_steps` or more after the last one scored."""
    if info.step not in self.plan.evals_at or info.step - self.last < self.online.config.every_steps:
      return False
    self.last = info.step
    return True

  def __call__(self, info: StepInfo) -> None:
    from ilp.online import warning

    t0 = time.time()
    o = self.online
    at_risk, causes = o.assess(self.log.frame(), info.step)
    values = {"online/predicted_unlearned": int(at_risk.sum())}
    values.update({f"online/predicted_unlearned/{c}": int((at_risk & (causes == c)).sum()) for c in warning.CAUSES})
    share = pd.Series(at_risk, index=o.data.index).groupby(o.datasets.reindex(o.data.index)).mean()
    values.update({f"online/at_risk_share/{name}": float(v) for name, v in share.items()})
    self.writer.scalars(info.step, values)
    o.seconds, o.calls = o.seconds + time.time() - t0, o.calls + 1
    by_cause = ", ".join(f"{c} {values[f'online/predicted_unlearned/{c}']}" for c in warning.CAUSES)
    log.info("early warning at step %d: %d examples at risk (%s)", info.step, at_risk.sum(), by_cause)


class DevCheck:
  """The held-out dev set evaluated for the controls: loss and accuracy per data set, also to
  TensorBoard (`dev/<metric>/<data set>`) and the log."""

  def __init__(self, evaluator: ExampleEvaluator, dev: DevData, buckets: tuple[int, ...], writer: metrics.MetricWriter):
    self.evaluator, self.dev, self.buckets, self.writer = evaluator, dev, buckets, writer

  def __call__(self, step: int, params: Any) -> controls_lib.Dev:
    stats = self.evaluator(params, self.dev.arrays, self.dev.lengths, self.buckets)
    results = controls_lib.dev_results(stats, self.dev.datasets)
    self.writer.scalars(
      step,
      {f"dev/{metric}/{name}": values[metric] for name, values in results.items() for metric in ("loss", "accuracy")},
    )
    log.info(
      "dev step %6d: loss %.4f, accuracy %s",
      step,
      results["all"]["loss"],
      ", ".join(f"{k} {v['accuracy']:.3f}" for k, v in results.items()),
    )
    return results


class Controls:
  """The dev-set controls (resampling, progressive epochs, training to convergence) after the
  steps they watch: the dev set is evaluated when one of them needs it, each acts on the plan
  (rewrites coming batches, stops training, drops a converged phase's remaining epochs), and the
  step is marked `controlled` so a checkpoint records the decisions."""

  def __init__(self, plan: Plan, dev: DevCheck | None):
    self.plan, self.dev = plan, dev

  def __call__(self, info: StepInfo) -> None:
    step, plan = info.step, self.plan
    due = [c for c in plan.controls if c.due(step)]
    if not due:
      return
    info.controlled = True
    dev = self.dev(step, info.state.params) if any(getattr(c, "needs_dev", True) for c in due) else None
    if any([c.update(step, dev, plan.stream) for c in due]):
      plan.stopped = step
      log.info("stopped at step %d by the dev-set control", step)
    if plan.convergence in due:
      schedule = plan.schedule
      plan.replanned()
      if plan.schedule != schedule:
        log.info("phase %d converged (or reached max_epochs): %d steps planned now", info.batch.phase, plan.total)


class PhaseModels:
  """Exports the model at the end of every phase but the last (`checkpoint.phase_models`); its
  cadence is `Plan.ends_phase`."""

  def __init__(self, directory: Callable[[int], str], cfg: ModelConfig, tokenizer: Any):
    self.directory, self.cfg, self.tokenizer = directory, cfg, tokenizer

  def __call__(self, info: StepInfo) -> None:
    checkpoint.save_params(self.directory(info.batch.phase), self.cfg, info.state.params, tokenizer=self.tokenizer)


class Checkpoint:
  """Train-state checkpoints (`due`: every `every` steps, at epoch ends, after a control acted and at
  the last step) with what a resumed run needs to take the same decisions (`resume`)."""

  def __init__(
    self,
    ckpt: checkpointing.TrainCheckpointer,
    every: int,
    plan: Plan,
    tokens: Tokens,
    monitor: convergence_lib.Monitor | None,
    stage_directory: str,
  ):
    self.ckpt, self.every, self.plan, self.tokens, self.monitor = ckpt, every, plan, tokens, monitor
    self.stage_directory = stage_directory
    self.fingerprint = plan.stream.fingerprint()  # of the plan as built, before any control rewrote it

  def due(self, info: StepInfo) -> bool:
    return (
      info.step % self.every == 0
      or info.step in self.plan.epoch_ends
      or info.step == self.plan.total
      or info.controlled
    )

  def __call__(self, info: StepInfo) -> None:
    self.ckpt.save(
      info.step,
      info.state,
      {
        "fingerprint": self.fingerprint,
        "step": info.step,
        "phase": info.batch.phase,
        "epoch": info.batch.epoch,
        **self.plan.state(),
        "tokens": self.tokens.counts,
        "monitor": self.monitor.state() if self.monitor is not None else {},
      },
    )
    self._keep_plateau()

  def _keep_plateau(self) -> None:
    """Keeps the checkpoint at which training to convergence decided the last phase (its
    plateau, before the cooldown): a run extends the converged one from there (`sft.extend`)."""
    convergence = self.plan.convergence
    decided = convergence.decisions.get(len(self.plan.schedule[0])) if convergence else None
    if decided:
      self.ckpt.keep(int(decided["step"]))

  def resume(self, state: Any) -> Any:
    """The newest good checkpoint's state (`state` when there is none), its decisions restored:
    the controls' onto the plan, the epoch losses and the token counts."""
    resumed = self.ckpt.restore_latest(state)
    if resumed is None:
      return state
    latest, state, meta = resumed
    if meta.get("fingerprint") != self.fingerprint:
      raise fileio.ResumeError(
        f"{self.ckpt.directory}: checkpoint {latest} was written for another data stream (fingerprint "
        f"{meta.get('fingerprint')} vs {self.fingerprint}); the data or batching config changed. "
        f"Use a new work directory or delete {self.stage_directory} to start over."
      )
    if self.monitor is not None:
      self.monitor.restore(meta.get("monitor", {}))
    self.plan.restore(meta)
    self.tokens.restore(meta)
    self._keep_plateau()
    log.info("resumed from step %d of %d", latest, self.plan.total)
    return state
