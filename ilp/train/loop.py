"""The training loop shared by SFT (all phases) and continual pre-training.

One pass over a precomputed stream of batches: each step is `jax.jit` with the state's and the
batch's named shardings (state donated). Everything else a step leads to is a hook
(`ilp.train.hooks`) on its own cadence: progress logs, token counts, per-dataset loss, the
dynamics log, evaluation passes, the dev-set controls, phase models, and checkpoints (state +
data position via the step) that make a killed run resume to the same parameters and log. The
stage hands the loop its output paths (`TrainingPaths`), not the work directory's layout.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from typing import Any, Callable

import jax
import numpy as np
import pandas as pd
from jax.sharding import NamedSharding, PartitionSpec

from ilp import fileio, parallel
from ilp.data import batches as batching
from ilp.layout import TrainingPaths
from ilp.machine import MachineConfig, MeshConfig
from ilp.model import build, checkpoint
from ilp.scoring.evaluator import ExampleEvaluator
from ilp.train import checkpointing, hooks, metrics, optim
from ilp.train import controls as controls_lib
from ilp.train import convergence as convergence_lib
from ilp.train.config import TrainConfig
from ilp.train.step import compiler_options, make_train_step

log = logging.getLogger(__name__)


class TrainingDivergedError(RuntimeError):
  """The loss became NaN or infinite; the last good checkpoint is kept."""


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
  dev: "DevData | None" = None  # held-out examples the controls watch
  controls: tuple[controls_lib.Control, ...] = ()  # training to convergence, resampling, early stopping
  monitor: convergence_lib.Monitor | None = None  # epoch losses per phase, judged in the summary
  convergence: convergence_lib.Control | None = None  # training to convergence (also in `controls`)
  phase_names: tuple[str, ...] = ()  # the phases' names, in order
  replay_arrays: Callable[[np.ndarray, int], dict[str, np.ndarray]] | None = None  # replay batches' arrays
  online: Any = None  # ilp.online.warning.Watch: the early warning scored at every evaluation pass (`sft.online`)


@dataclasses.dataclass
class DevData:
  """The held-out dev examples: batches of them, their lengths and data sets."""

  arrays: Callable[[np.ndarray, int], dict[str, np.ndarray]]
  lengths: np.ndarray
  datasets: np.ndarray


class _Stepper:
  """The sharded train state and its jitted step, rebuilt when the plan's learning-rate schedule
  changes (training to convergence shortens a phase)."""

  def __init__(
    self,
    section: TrainConfig,
    mesh_config: MeshConfig,
    machine: MachineConfig,
    init_dir: str,
    batch_size: int,
    plan: hooks.Plan,
    with_stats: bool,
  ):
    self.section, self.batch_size, self.plan, self.with_stats = section, batch_size, plan, with_stats
    self.ynnpack_dots = machine.ynnpack_dots
    self.mesh, self.rules = parallel.make_mesh(mesh_config.shape), mesh_config.rules
    self.dtype = build.resolve_compute_dtype(section.compute_dtype)
    self.cfg, self.graphdef, params = checkpoint.load_params(init_dir, self.mesh, self.rules, dtype=self.dtype)
    schedule = optim.make_schedule(section.optimizer, *plan.schedule)
    optimizer = optim.make_optimizer(section.optimizer, schedule, section.trainable)
    _, abstract = build.abstract_model(self.cfg)
    param_shardings = parallel.state_shardings(abstract, self.mesh, self.rules)
    self.shardings = optim.state_shardings(param_shardings, optimizer, abstract, self.mesh)
    self.batch_sharding = parallel.batch_sharding(self.mesh, (batch_size, 1), self.rules)
    self.stats_sharding = parallel.batch_sharding(self.mesh, (batch_size,), self.rules)
    self.rows = parallel.local_rows(self.batch_sharding, (batch_size, 1))
    self.state = optim.create_state(params, optimizer, self.shardings)
    self.lengths: set[int] = set()  # the padded lengths stepped: one compiled step variant each
    self._compiled: tuple[tuple, Callable] | None = None  # (schedule plan, its jitted step)

  def __call__(self, planned: batching.PlannedBatch, host: dict[str, np.ndarray]) -> tuple[dict[str, Any], Any]:
    """One optimizer step on a planned batch's host arrays: its metrics (on the host) and per-row statistics."""
    if self._compiled is None or self._compiled[0] != self.plan.schedule:
      self._compiled = self.plan.schedule, self._compile(self.plan.schedule)
    self.lengths.add(planned.length)
    with parallel.sharding_context(self.mesh, self.rules):
      self.state, step_metrics, stats = self._compiled[1](
        self.state, parallel.global_batch(host, self.batch_sharding, self.rows)
      )
    return jax.device_get(step_metrics), stats

  def _compile(self, plan: tuple) -> Callable:
    section = self.section
    schedule = optim.make_schedule(section.optimizer, *plan)
    replicated = NamedSharding(self.mesh, PartitionSpec())
    with parallel.sharding_context(self.mesh, self.rules):
      return jax.jit(
        make_train_step(
          self.graphdef,
          optim.make_optimizer(section.optimizer, schedule, section.trainable),
          schedule,
          section.grad_accum_steps,
          with_stats=self.with_stats,
          ynnpack_dots=self.ynnpack_dots,
        ),
        in_shardings=(self.shardings, self.batch_sharding),
        out_shardings=(self.shardings, replicated, self.stats_sharding if self.with_stats else replicated),
        donate_argnums=0,
        compiler_options=compiler_options(self.ynnpack_dots),
      )

  @functools.cached_property
  def evaluator(self) -> ExampleEvaluator:
    """One evaluator for the evaluation passes and the dev set (built when one of them first needs it)."""
    return ExampleEvaluator(self.graphdef, self.cfg, self.mesh, self.batch_size, self.rules)


def _check_finite(step_metrics: dict[str, Any], step: int, ckpt: checkpointing.TrainCheckpointer) -> None:
  """Stops a run whose loss or gradient norm became NaN or infinite, naming the last good checkpoint."""
  if not (np.isfinite(step_metrics["loss"]) and np.isfinite(step_metrics["grad_norm"])):
    ckpt.wait()  # an asynchronous save in flight is finished (or failed) before naming the last good one
    raise TrainingDivergedError(
      f"non-finite loss ({step_metrics['loss']}) or gradient norm "
      f"({step_metrics['grad_norm']}) at step {step}; the last good "
      f"checkpoint (step {ckpt.latest_step()}) in {ckpt.directory} is kept"
    )


def _hooks(
  section: TrainConfig,
  machine: MachineConfig,
  data: TrainData,
  model: _Stepper,
  plan: hooks.Plan,
  writer: metrics.MetricWriter,
  saver: hooks.Checkpoint,
  dynamics_log: hooks.DynamicsLog | None,
  evaluation: hooks.Evaluation | None,
  export: hooks.PhaseModels | None,
  start: int,
) -> hooks.Hooks:
  """The hooks in the order they run after a step: what the step trained on, then the progress
  line, the controls, evaluation, phase models and the checkpoint (the log lines keep this order)."""
  run = hooks.Hooks(plan)
  run.add(saver.tokens)
  progress = hooks.Progress(
    writer, model.cfg, machine.peak_flops or metrics.device_peak_flops(model.dtype) * jax.device_count(), plan, start
  )
  run.add(progress.add)
  by_dataset = None
  if dynamics_log is not None:
    datasets = data.table["dataset"].to_numpy()
    by_dataset = hooks.DatasetLoss(datasets, writer)
    run.add(dynamics_log, every=hooks.on_examples)
    run.add(by_dataset.add, every=hooks.on_examples)
    if data.monitor is not None:
      run.add(hooks.EpochLosses(data.monitor, datasets), every=hooks.on_examples)
  run.add(progress.write, every=section.log_every_steps)
  if by_dataset is not None:
    run.add(by_dataset.write, every=section.log_every_steps)
  run.add(hooks.Controls(plan, hooks.DevCheck(model.evaluator, data.dev, data.buckets, writer) if data.dev else None))
  if evaluation is not None:
    run.add(evaluation)
    if data.online is not None and dynamics_log.writer.enabled:
      view = hooks.EarlyWarningView(data.online, dynamics_log.writer, writer, plan)
      run.add(view, every=view.due)
  if export is not None:
    run.add(export, every=plan.ends_phase)
  if dynamics_log is not None:
    run.add(dynamics_log.flush, every=saver.due)
  run.add(saver, every=saver.due)
  run.add(lambda info: writer.flush(), every=saver.due)
  return run


def train(
  section: TrainConfig,
  mesh_config: MeshConfig,
  machine: MachineConfig,
  paths: TrainingPaths,
  init_dir: str,
  data: TrainData,
  tokenizer: Any = None,
  notes: dict[str, Any] | None = None,
) -> dict[str, Any]:
  """Trains from the params checkpoint in `init_dir`; writes the stage's checkpoints, dynamics log
  (with `data.table`), TensorBoard logs, final model and summary to `paths`.

  Args:
    section: the stage's training settings (the root config's `sft` or `pretrain`).
    mesh_config: the device mesh and its logical-axis rules.
    machine: how the step compiles and the peak FLOP/s its MFU is measured against.
    paths: where the stage's outputs go (`Layout.training_paths`).
    init_dir: a params checkpoint to start from.
    data: the planned stream and how to build its batches.
    tokenizer: stored with the final model, so later stages need nothing else.
    notes: added to `summary.json` (e.g. the tokenisation counts).
  """
  is_writer = jax.process_index() == 0
  plan = hooks.Plan(data.stream, data.controls, data.convergence)
  model = _Stepper(section, mesh_config, machine, init_dir, data.batch_size, plan, with_stats=data.table is not None)
  ckpt = checkpointing.TrainCheckpointer(
    paths.checkpoints, section.checkpoint.max_to_keep, section.checkpoint.async_save
  )
  saver = hooks.Checkpoint(ckpt, section.checkpoint.every_steps, plan, hooks.Tokens(), data.monitor, paths.directory)
  model.state = saver.resume(model.state)
  start = step = int(jax.device_get(model.state.step))
  writer = metrics.MetricWriter(paths.tensorboard, enabled=is_writer)
  dynamics_log = hooks.DynamicsLog(paths.dynamics, data.table, start, is_writer) if data.table is not None else None
  evaluation = dynamics_log and hooks.Evaluation(model.evaluator, data, dynamics_log.writer, writer, plan)
  if evaluation and start == 0:
    evaluation.at(0, model.state.params)
  export = hooks.PhaseModels(paths.phase_model, model.cfg, tokenizer) if section.checkpoint.phase_models else None
  run = _hooks(section, machine, data, model, plan, writer, saver, dynamics_log, evaluation, export, start)
  step_metrics = None
  while step < plan.total and plan.stopped is None:  # the plan shrinks when a phase converges early
    planned = plan.stream.batches[step]
    host = (data.replay_arrays if planned.replay else data.arrays)(planned.rows, planned.length)
    step_metrics, stats = model(planned, host)
    step += 1
    _check_finite(step_metrics, step, ckpt)
    run(hooks.StepInfo(step, planned, host, step_metrics, model.state, stats))
  ckpt.wait()
  ckpt.close()
  writer.close()
  checkpoint.save_params(paths.final, model.cfg, model.state.params, tokenizer=tokenizer)
  summary = _summary(model, plan, data, saver.tokens, start, step_metrics, notes)
  if is_writer:
    fileio.write_json_atomic(paths.summary, summary)
  log.info("training done: %d steps, step variants compiled for bucket lengths %s", plan.total, summary["buckets"])
  return summary


def _summary(
  model: _Stepper,
  plan: hooks.Plan,
  data: TrainData,
  tokens: hooks.Tokens,
  start: int,
  step_metrics: dict[str, Any] | None,
  notes: dict[str, Any] | None,
) -> dict[str, Any]:
  """`summary.json`: what the run trained (steps, stopping, controls' decisions, compiled step
  variants, token counts, the last loss) and, when a phase was judged, the convergence verdict."""
  if data.monitor is not None:
    notes = {**(notes or {}), "convergence": convergence_lib.report(data.monitor, data.phase_names, data.convergence)}
  if data.online is not None:
    notes = {**(notes or {}), "online": {"seconds": data.online.seconds, "scored_passes": data.online.calls}}
  return {
    "steps": int(jax.device_get(model.state.step)),
    "planned_steps": plan.total,
    "stopped_at": plan.stopped,
    "controls": [c.state() for c in data.controls],
    "resumed_from": start or None,
    "phases": len(plan.schedule[0]),
    "step_variants_compiled": len(model.lengths),
    "buckets": sorted(model.lengths),
    "tokens": tokens.counts,
    "final_loss": None if step_metrics is None else float(step_metrics["loss"]),
    **(notes or {}),
  }
