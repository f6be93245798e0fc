"""The training loop shared by SFT (all phases) and continual pre-training.

One pass over a precomputed stream of batches: each step is `jax.jit` with the state's and the
batch's named shardings (state donated), every example's statistics go to the dynamics log,
full evaluation passes run at the stream's evaluation points, and checkpoints (state + data
position via the step) make a killed run resume to the same parameters and log.
"""
from __future__ import annotations

import dataclasses
import logging
import re
import time
from typing import Any, Callable, Sequence

import jax
import numpy as np
import pandas as pd
from jax.sharding import NamedSharding, PartitionSpec

from ilp import fileio, parallel
from ilp.data import batches as batching
from ilp.layout import Layout
from ilp.model import build, checkpoint
from ilp.model.config import resolve_compute_dtype
from ilp.scoring.evaluator import ExampleEvaluator
from ilp.train import checkpointing, controls as controls_lib, convergence as convergence_lib, dynamics, metrics, optim
from ilp.train.step import compiler_options, make_train_step
from ilp.typed import check

COMPUTE_DTYPES = ("auto", "float32", "bfloat16")

log = logging.getLogger(__name__)


class TrainingDivergedError(RuntimeError):
  """The loss became NaN or infinite; the last good checkpoint is kept."""


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """What the `pretrain` and `sft` sections share (the same loop runs both)."""
  init_from: str = "model_init"    # "model_init", "pretrain" (sft only) or an absolute checkpoint path
  batch_size: int = 16             # global batch (sequences per optimizer step)
  grad_accum_steps: int = 1        # micro-batches per step; batch_size must divide evenly
  compute_dtype: str = "auto"      # "bfloat16": bf16 compute over float32 master weights; "auto": bf16 on accelerators
  ynnpack_dots: bool = False       # XLA:CPU's YNNPACK dot fusions in the training step (off: its steps run ~1.2x faster)
  log_every_steps: int = 10
  peak_flops: float = 0.0          # peak FLOP/s of all devices for MFU; 0 = the data sheet's (known accelerators) or a timed matmul
  trainable: tuple[str, ...] = ()  # regexes over parameter paths ("layers/0/attn/q"): only matches train (empty: all)
  optimizer: optim.OptimizerConfig = optim.OptimizerConfig()
  checkpoint: checkpointing.CheckpointConfig = checkpointing.CheckpointConfig()

  def __post_init__(self):
    check(bool(self.init_from), "init_from", "must name 'model_init', 'pretrain' or a checkpoint path")
    check(self.batch_size >= 1, "batch_size", f"must be >= 1, got {self.batch_size}")
    check(self.grad_accum_steps >= 1, "grad_accum_steps", f"must be >= 1, got {self.grad_accum_steps}")
    check(self.batch_size % self.grad_accum_steps == 0, "batch_size",
          f"{self.batch_size} is not divisible by grad_accum_steps={self.grad_accum_steps}")
    check(self.compute_dtype in COMPUTE_DTYPES, "compute_dtype", f"'{self.compute_dtype}' is not one of {COMPUTE_DTYPES}")
    check(self.log_every_steps >= 1, "log_every_steps", f"must be >= 1, got {self.log_every_steps}")
    check(self.peak_flops >= 0, "peak_flops", f"must be >= 0, got {self.peak_flops}")
    for pattern in self.trainable:
      try:
        re.compile(pattern)
      except re.error as e:
        check(False, "trainable", f"'{pattern}' is not a regular expression: {e}")


@dataclasses.dataclass
class TrainData:
  """What the loop trains on: a stream plan and a way to turn planned rows into arrays.

  `table` (id, dataset, phase, meta per example) enables the per-example dynamics log and
  evaluation passes; continual pre-training leaves it None.
  """
  stream: batching.Stream
  batch_size: int
  arrays: Callable[[np.ndarray, int], dict[str, np.ndarray]]  # (rows, length) -> host arrays
  lengths: np.ndarray | None = None
  buckets: tuple[int, ...] = ()
  table: pd.DataFrame | None = None
  dev: "DevData | None" = None                           # held-out examples the controls watch
  controls: tuple[controls_lib.Control, ...] = ()        # training to convergence, resampling, early stopping
  monitor: convergence_lib.Monitor | None = None         # epoch losses per phase, judged in the summary
  convergence: convergence_lib.Control | None = None     # training to convergence (also in `controls`)
  phase_names: tuple[str, ...] = ()                      # the phases' names, in order
  replay_arrays: Callable[[np.ndarray, int], dict[str, np.ndarray]] | None = None  # replay batches' arrays


@dataclasses.dataclass
class DevData:
  """The held-out dev examples: batches of them, their lengths and data sets."""
  arrays: Callable[[np.ndarray, int], dict[str, np.ndarray]]
  lengths: np.ndarray
  datasets: np.ndarray


def _schedule_plan(stream: batching.Stream, control: convergence_lib.Control | None
                   ) -> tuple[tuple[int, ...], tuple[int | None, ...] | None]:
  """Steps per phase and, when training to convergence, each phase's decay steps (see
  `optim.make_schedule`): what the learning-rate schedule is built from."""
  phases = sorted({b.phase for b in stream.batches})
  steps = tuple(sum(b.phase == p for b in stream.batches) for p in phases)
  return steps, (tuple(control.decay_steps(stream, p) for p in phases) if control else None)


def _points(stream: batching.Stream, controls: Sequence[Any]
            ) -> tuple[int, dict[int, list[batching.EvalPoint]], set[int]]:
  """The stream's length, its evaluation points by step and the steps that end an epoch (where
  checkpoints are saved); controls that watch the stream's epochs re-read it."""
  evals_at: dict[int, list[batching.EvalPoint]] = {}
  for point in stream.eval_points:
    evals_at.setdefault(point.step, []).append(point)
  for control in controls:
    if hasattr(control, "watch"):
      control.watch(stream)
  epoch_ends = {p.step for p in stream.eval_points if p.step > 0 and not p.name.startswith("step")}
  return len(stream.batches), evals_at, epoch_ends


class _Window:
  """Running sums between two log lines."""

  def __init__(self):
    self.reset()

  def reset(self) -> None:
    self.start, self.steps, self.nll, self.tokens, self.real_tokens, self.flops = time.time(), 0, 0.0, 0.0, 0, 0.0
    self.replay, self.replay_steps = 0.0, 0
    self.by_dataset: dict[str, list[float]] = {}


def train(section: TrainConfig, mesh_config: parallel.MeshConfig, layout: Layout, stage: str, init_dir: str,
          data: TrainData, tokenizer: Any = None, notes: dict[str, Any] | None = None) -> dict[str, Any]:
  """Trains from the params checkpoint in `init_dir`; writes the stage's checkpoints, dynamics log
  (with `data.table`), TensorBoard logs, final model and summary where `layout` puts them.

  Args:
    section: the stage's training settings (the root config's `sft` or `pretrain`).
    mesh_config: the device mesh and its logical-axis rules.
    layout, stage: the work directory and the stage's name (`pretrain`, `sft`).
    init_dir: a params checkpoint to start from.
    data: the planned stream and how to build its batches.
    tokenizer: stored with the final model, so later stages need nothing else.
    notes: added to `summary.json` (e.g. the tokenisation counts).
  """
  is_writer = jax.process_index() == 0
  mesh = parallel.make_mesh(mesh_config.shape)
  rules = mesh_config.rules
  dtype = resolve_compute_dtype(section.compute_dtype)
  cfg, graphdef, params = checkpoint.load_params(init_dir, mesh, rules, dtype=dtype)
  stream, batch_size = data.stream, data.batch_size
  schedule = optim.make_schedule(section.optimizer, *_schedule_plan(stream, data.convergence))
  optimizer = optim.make_optimizer(section.optimizer, schedule, section.trainable)
  _, abstract = build.abstract_model(cfg)
  param_shardings = parallel.state_shardings(abstract, mesh, rules)
  shardings = optim.state_shardings(param_shardings, optimizer, abstract, mesh)
  batch_sharding = parallel.batch_sharding(mesh, (batch_size, 1), rules)
  stats_sharding = parallel.batch_sharding(mesh, (batch_size,), rules)
  replicated = NamedSharding(mesh, PartitionSpec())
  rows = parallel.local_rows(batch_sharding, (batch_size, 1))

  ckpt = checkpointing.TrainCheckpointer(layout.checkpoints(stage), section.checkpoint.max_to_keep,
                                         section.checkpoint.async_save)
  state = optim.create_state(params, optimizer, shardings)
  del params
  fingerprint = stream.fingerprint()  # of the plan as built, before any control rewrote it
  monitor = data.monitor
  stopped = None
  resumed = ckpt.restore_latest(state)
  if resumed is not None:
    latest, state, meta = resumed
    if meta.get("fingerprint") != fingerprint:
      raise fileio.ResumeError(
          f"{ckpt.directory}: checkpoint {latest} was written for another data stream (fingerprint "
          f"{meta.get('fingerprint')} vs {fingerprint}); the data or batching config changed. "
          f"Use a new work directory or delete {layout.training(stage)} to start over.")
    if monitor is not None:
      monitor.restore(meta.get("monitor", {}))
    for control, control_state in zip(data.controls, meta.get("controls", [])):
      control.restore(control_state, stream)
    stopped = meta.get("stopped")
    log.info("resumed from step %d of %d", latest, len(stream.batches))
  start = int(jax.device_get(state.step))

  writer = metrics.MetricWriter(layout.tensorboard(stage), enabled=is_writer)
  log_dyn = data.table is not None
  dyn = dynamics.DynamicsWriter(layout.dynamics(stage), data.table, enabled=is_writer) if log_dyn else None
  if dyn:
    dyn.discard_after(start)

  def compile_step(plan: tuple) -> Callable:
    """The jitted step for a schedule plan (rebuilt when training to convergence shortens a phase)."""
    schedule = optim.make_schedule(section.optimizer, *plan)
    with parallel.sharding_context(mesh, rules):
      return jax.jit(
          make_train_step(graphdef, optim.make_optimizer(section.optimizer, schedule, section.trainable), schedule,
                          section.grad_accum_steps, with_stats=log_dyn, ynnpack_dots=section.ynnpack_dots),
          in_shardings=(shardings, batch_sharding),
          out_shardings=(shardings, replicated, stats_sharding if log_dyn else replicated), donate_argnums=0,
          compiler_options=compiler_options(section.ynnpack_dots))

  plan = _schedule_plan(stream, data.convergence)
  train_step = compile_step(plan)

  evaluator = ExampleEvaluator(graphdef, cfg, mesh, batch_size, rules) if log_dyn or data.dev else None

  def run_eval(point: batching.EvalPoint) -> None:
    t0 = time.time()
    stats = evaluator(state.params, data.arrays, data.lengths, data.buckets)
    dyn.write_eval(point, np.arange(len(data.lengths)), stats)
    loss = stats["nll_sum"] / np.maximum(stats["tokens"], 1)
    writer.histogram(point.step, "eval/example_loss", loss)
    writer.histogram(point.step, "eval/example_margin_min", stats["margin_min"])
    writer.scalars(point.step, {"eval/loss": float(loss.mean()), "eval/exact_match": float(stats["exact_match"].mean())})
    log.info("eval %-16s step %6d: mean loss %.4f, exact match %.1f%% (%.1fs)", point.name, point.step,
             loss.mean(), 100 * stats["exact_match"].mean(), time.time() - t0)

  def run_dev(step: int) -> controls_lib.Dev:
    stats = evaluator(state.params, data.dev.arrays, data.dev.lengths, data.buckets)
    results = controls_lib.dev_results(stats, data.dev.datasets)
    writer.scalars(step, {f"dev/{metric}/{name}": values[metric] for name, values in results.items()
                          for metric in ("loss", "accuracy")})
    log.info("dev step %6d: loss %.4f, accuracy %s", step, results["all"]["loss"],
             ", ".join(f"{k} {v['accuracy']:.3f}" for k, v in results.items()))
    return results

  total, evals_at, epoch_ends = _points(stream, data.controls)
  if log_dyn and start == 0:
    for point in evals_at.get(0, []):
      run_eval(point)

  peak = section.peak_flops or metrics.device_peak_flops(dtype) * jax.device_count()
  window, compiled, run_start = _Window(), set(), time.time()
  tokens = dict(resumed[2].get("tokens", {})) if resumed is not None else {}
  tokens = {k: int(tokens.get(k, 0)) for k in ("real", "padded", "loss", "replay")}
  i = start
  while i < total and stopped is None:   # `total` shrinks when a phase converges early
    planned = stream.batches[i]
    host = (data.replay_arrays if planned.replay else data.arrays)(planned.rows, planned.length)
    compiled.add(planned.length)
    with parallel.sharding_context(mesh, rules):
      state, step_metrics, stats = train_step(state, parallel.global_batch(host, batch_sharding, rows))
    step = i = i + 1
    step_metrics = jax.device_get(step_metrics)
    if not (np.isfinite(step_metrics["loss"]) and np.isfinite(step_metrics["grad_norm"])):
      ckpt.wait()   # an asynchronous save in flight is finished (or failed) before naming the last good one
      raise TrainingDivergedError(f"non-finite loss ({step_metrics['loss']}) or gradient norm "
                                  f"({step_metrics['grad_norm']}) at step {step}; the last good "
                                  f"checkpoint (step {ckpt.latest_step()}) in {ckpt.directory} is kept")
    window.steps += 1
    window.real_tokens += int(host["mask"].sum())
    tokens["real"] += int(host["mask"].sum())
    tokens["padded"] += int(host["tokens"].size)
    tokens["loss"] += int(host["loss_mask"].sum())
    tokens["replay"] += int(host["mask"].sum()) if planned.replay else 0
    window.flops += metrics.training_flops_per_token(cfg, planned.length) * host["tokens"].size
    if planned.replay:   # replayed records: their own loss curve, no per-example statistics
      window.replay += float(step_metrics["loss"])
      window.replay_steps += 1
    else:
      window.nll += float(step_metrics["loss"]) * float(step_metrics["tokens"])
      window.tokens += float(step_metrics["tokens"])
    if log_dyn and not planned.replay:
      stats = parallel.to_host(stats)
      dyn.add_batch(step, planned.phase, planned.epoch, planned.rows, planned.positions, stats)
      real = planned.rows >= 0
      datasets = data.table["dataset"].to_numpy()[planned.rows[real]]
      for name in np.unique(datasets):
        sel = datasets == name
        acc = window.by_dataset.setdefault(str(name), [0.0, 0.0])
        acc[0] += float(stats["nll_sum"][real][sel].sum())
        acc[1] += float(stats["tokens"][real][sel].sum())
      if monitor is not None:
        monitor.add(planned.phase, planned.epoch, datasets, stats["nll_sum"][real], stats["tokens"][real],
                    float(step_metrics["learning_rate"]))

    if step % section.log_every_steps == 0 or step == total:
      elapsed = max(time.time() - window.start, 1e-9)
      scalars = {"train/loss": window.nll / max(window.tokens, 1), "train/learning_rate": step_metrics["learning_rate"],
                 "train/grad_norm": step_metrics["grad_norm"], "perf/tokens_per_sec": window.real_tokens / elapsed,
                 "perf/mfu": window.flops / elapsed / peak}
      scalars.update({f"train/loss_by_dataset/{k}": v[0] / max(v[1], 1) for k, v in window.by_dataset.items()})
      if window.replay_steps:
        scalars["train/replay_loss"] = window.replay / window.replay_steps
      writer.scalars(step, scalars)
      done = step - start
      eta = (time.time() - run_start) / done * (total - step)
      log.info("step %6d/%d  loss %.4f  lr %.2e  grad %.3f  %.0f tok/s  MFU %.1f%%  ETA %s", step, total,
               scalars["train/loss"], scalars["train/learning_rate"], scalars["train/grad_norm"],
               scalars["perf/tokens_per_sec"], 100 * scalars["perf/mfu"], time.strftime("%H:%M:%S", time.gmtime(eta)))
      window.reset()

    due = [c for c in data.controls if c.due(step)]
    if due:
      dev = run_dev(step) if any(getattr(c, "needs_dev", True) for c in due) else None
      if any([c.update(step, dev, stream) for c in due]):
        stopped = step
        log.info("stopped at step %d by the dev-set control", step)
      if data.convergence in due:   # a replanned stream: the other controls replay their decisions onto it
        for control in data.controls:
          if control is not data.convergence:
            control.restore(control.state(), stream)
        total, evals_at, epoch_ends = _points(stream, data.controls)
        if _schedule_plan(stream, data.convergence) != plan:
          plan = _schedule_plan(stream, data.convergence)
          train_step = compile_step(plan)
          log.info("phase %d converged (or reached max_epochs): %d steps planned now", planned.phase, total)
    if log_dyn:   # after the controls: a phase that converged ends here when it has no cooldown
      for point in evals_at.get(step, []):
        run_eval(point)
    if section.checkpoint.phase_models and step < total and stream.batches[step].phase != planned.phase:
      checkpoint.save_params(layout.phase_model(stage, planned.phase), cfg, state.params, tokenizer=tokenizer)
    if (step % section.checkpoint.every_steps == 0 or step in epoch_ends or step == total or due):
      if dyn:
        dyn.flush()
      ckpt.save(step, state, {"fingerprint": fingerprint, "step": step, "phase": planned.phase,
                              "epoch": planned.epoch, "controls": [c.state() for c in data.controls],
                              "stopped": stopped, "tokens": tokens,
                              "monitor": monitor.state() if monitor is not None else {}})
      writer.flush()

  ckpt.wait()
  ckpt.close()
  writer.close()
  checkpoint.save_params(layout.final(stage), cfg, state.params, tokenizer=tokenizer)
  if monitor is not None:
    notes = {**(notes or {}), "convergence": convergence_lib.report(monitor, data.phase_names, data.convergence)}
  summary = {"steps": int(jax.device_get(state.step)), "planned_steps": total, "stopped_at": stopped,
             "controls": [c.state() for c in data.controls], "resumed_from": start or None, "phases": len(plan[0]),
             "step_variants_compiled": len(compiled), "buckets": sorted(compiled), "tokens": tokens,
             "final_loss": float(step_metrics["loss"]) if total > start and stopped != start else None, **(notes or {})}
  if is_writer:
    fileio.write_json_atomic(layout.summary(stage), summary)
  log.info("training done: %d steps, %d step variants compiled (bucket lengths %s)", total, len(compiled),
           sorted(compiled))
  return summary
