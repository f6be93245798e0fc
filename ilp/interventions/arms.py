"""The `arms` stage's library: each arm is the baseline's config changed by one intervention,
run into `arms/<name>/` from the baseline's world, base model and diagnosis.

An arm runs only what its intervention changes: continual pre-training when it has one, then
SFT, detection, diagnosis and the capability check. Its config keeps the baseline's seed, data
(paths resolved against the baseline's work directory) and settings, so the arm and the baseline
differ by the intervention alone; with it the baseline's detect section, so an arm's own SFT must
pass the same `detect.require_converged` check. A mitigation that trains more than the baseline is
followed by its equal-compute "more epochs" control (`ilp.interventions.equal_compute`), run the
same way. Re-running resumes: each arm's pipeline skips finished stages.

Arms that change only the data keep the baseline's training to convergence. "More epochs" of a
converged baseline's last phase continues the baseline from its plateau (`ilp.interventions.epochs`).
Arms that otherwise set how long SFT trains (progressive epochs, more epochs of other phases) or
order it globally (which training to convergence refuses) train a fixed number of epochs instead:
every phase they do not change at the epochs the baseline actually trained
(`Context.trained_phases`, `exact_epochs`).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import logging
import multiprocessing
import os
from typing import Any, Callable

import pandas as pd
from absl import logging as absl_logging

from ilp import console, fileio, provenance
from ilp.data.batches import PhaseConfig
from ilp.detection import columns as col
from ilp.interventions import equal_compute
from ilp.interventions.config import ArmConfig, InterventionsConfig, module
from ilp.layout import Layout

log = logging.getLogger(__name__)

FOLLOW_STAGES = ("sft", "detect", "diagnose", "capability")  # what every arm redoes, in order
PREPARED = "arm_config.json"  # in a multi-process run: the arm's config as process 0 prepared it


@dataclasses.dataclass(frozen=True)
class Context:
  """What an intervention's `prepare` reads: the baseline's config and outputs, and the arm."""

  config: Any  # the baseline's `ilp.config.Config`, data paths resolved
  baseline: Layout
  arm: Layout
  attribution: pd.DataFrame  # the baseline's diagnosis, one row per example

  @property
  def base_model(self) -> str:
    """The model the baseline's SFT started from (absolute): every arm starts there too."""
    return self.baseline.model(self.config.sft.init_from)

  def selected(self, causes: tuple[str, ...]) -> pd.DataFrame:
    """The baseline's examples attributed to one of `causes` (the intervention's targets)."""
    return self.attribution[self.attribution[col.CAUSE].isin(causes)]

  def trained_phases(self) -> tuple[PhaseConfig, ...]:
    """The baseline's SFT phases as named `sft.phases` entries, each at the epochs it trained: its
    summary's `trained_epochs` where it trained until converged (`equal_compute.trained_epochs`),
    else its config's. Phases formed from the records' `phase` field (`sft.phases` empty) become
    one entry per value in the baseline's examples table: the same phases, names and order."""
    sft = self.config.sft
    if sft.phases:
      phases = [dataclasses.replace(p, name=p.name or f"phase{k + 1}") for k, p in enumerate(sft.phases)]
    else:
      values = sorted(pd.read_parquet(self.baseline.examples, columns=["phase"])["phase"].unique())
      phases = [PhaseConfig(sft.epochs, name=f"phase{v}", phase=int(v)) for v in values]
    trained = equal_compute.trained_epochs(self.baseline)
    return tuple(dataclasses.replace(p, epochs=trained.get(p.name, p.epochs)) for p in phases)


def exact_epochs(config: Any, phases: tuple[PhaseConfig, ...]) -> Any:
  """`config` training `phases` for exactly their epochs: training to convergence off, and so is
  detection's convergence requirement: such an arm is defined by its budget (more epochs, an
  equal-compute control) or by its own schedule (global order, progressive epochs), and its last
  epoch runs at the end of a decayed learning rate, where the criterion cannot judge it."""
  sft = config.sft
  return dataclasses.replace(
    config,
    sft=dataclasses.replace(sft, phases=phases, convergence=dataclasses.replace(sft.convergence, max_epochs=0)),
    detect=dataclasses.replace(config.detect, require_converged=False),
  )


def baseline_schedule(config: Any, context: Context, extra: int = 0) -> Any:
  """`config` training on the baseline's own schedule: where the baseline trained to convergence,
  each phase's plateau fixed at the epoch the baseline's criterion held there
  (`sft.convergence.plateaus`), the same cooldown, so the steps, tokens and learning rate of every
  step are the baseline's (detection's convergence requirement off: the baseline's run decided the
  end); otherwise its fixed epochs (`exact_epochs`). An arm that changes only which rows a step
  trains then differs from the baseline by those rows alone. `extra` > 0 trains the last phase that
  many epochs more (its plateau later, or its fixed epochs more)."""
  phases = context.trained_phases()
  plateaus = equal_compute.plateau_epochs(context.baseline)
  if not config.sft.convergence.max_epochs or any(p.name not in plateaus for p in phases):
    return exact_epochs(config, phases[:-1] + (dataclasses.replace(phases[-1], epochs=phases[-1].epochs + extra),))
  sft = config.sft
  at = [plateaus[p.name] for p in phases]
  at[-1] += extra
  max_epochs = max(sft.convergence.max_epochs, at[-1])
  fixed = dataclasses.replace(sft.convergence, plateaus=tuple(at), max_epochs=max_epochs)
  return dataclasses.replace(
    config,
    sft=dataclasses.replace(sft, convergence=fixed),
    detect=dataclasses.replace(config.detect, require_converged=False),
  )


def base_config(config: Any, baseline: Layout) -> Any:
  """The arm's starting point: the baseline's config re-pointed at the baseline's models, running
  only the stages an arm redoes."""
  absolute = lambda name: baseline.model(name) if name else ""
  stages = tuple(s for s in FOLLOW_STAGES if s in config.stages)
  return dataclasses.replace(
    config,
    stages=stages,
    world=None,
    interventions=InterventionsConfig(),
    sft=dataclasses.replace(config.sft, init_from=baseline.model(config.sft.init_from)),
    detect=dataclasses.replace(
      config.detect, base=absolute(config.detect.base), reference=absolute(config.detect.reference)
    ),
  )


def targets(arm: ArmConfig) -> tuple[str, ...]:
  """The causes an arm's intervention targets (empty for a control arm)."""
  return tuple(arm.typed_settings().causes)


def idle(arm: ArmConfig, attribution: pd.DataFrame) -> bool:
  """Whether a mitigation has nothing to act on: the baseline attributed no example to its causes
  (a converged baseline may have none for a cause). Such an arm is skipped, and the comparison
  says so, instead of failing the study."""
  causes = targets(arm)
  return bool(causes) and not attribution[col.CAUSE].isin(causes).any()


def _in_process(run_pipeline: Callable[[Any, str], None], config: Any, root: str) -> None:
  """An arm's pipeline in a worker process of its own (`interventions.workers` > 1). On a GPU, JAX
  would take 75% of its memory for each process: a worker takes what it uses."""
  os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
  absl_logging.use_absl_handler()  # the parent's log format (absl.app installs it there)
  console.configure_logging()
  run_pipeline(config, root)


def run(config: Any, layout: Layout, run_pipeline: Callable[[Any, str], None]) -> None:
  """Prepares and runs every configured arm (`run_pipeline` is `ilp.pipeline.run`), each mitigation
  followed by its equal-compute "more epochs" control (`equal_compute.plan`), which needs the
  mitigation's measured tokens; arms of one budget share their control.

  With `interventions.workers` > 1 the arms run that many at a time, each in a process of its own
  (spawned: a fresh JAX runtime); a control starts once its mitigation has finished. The arms are
  independent runs, so their results do not depend on how many run at once; on a machine whose
  cores one small run cannot keep busy (the world's 2-core CPU) two at a time finish sooner."""
  import jax  # here, not at import: the config sections import the interventions' modules without JAX

  started: set[str] = set()
  if config.interventions.arms:
    _run_arms(config, layout, run_pipeline, started)
  if jax.process_index() == 0:
    fileio.write_json_atomic(layout.arms_index, index(layout, sorted(started)))


def index(layout: Layout, names: list[str]) -> dict[str, str]:
  """Each arm run with the digest of its provenance (settings and sealed outputs), so the arms
  stage's outputs change exactly when an arm's do."""
  return {name: provenance.Record(layout.arm(name).provenance, writer=False).digest() for name in names}


def _run_arms(config: Any, layout: Layout, run_pipeline: Callable[[Any, str], None], started: set[str]) -> None:
  """`run`'s work: `started` collects the name of every arm prepared (controls included)."""
  import jax

  from ilp import config as config_lib
  from ilp import parallel

  if not os.path.exists(layout.attribution):
    raise FileNotFoundError(f"{layout.attribution}: no baseline diagnosis; arms start from it (run the diagnose stage)")
  attribution = pd.read_parquet(layout.attribution)

  def prepared(arm: ArmConfig) -> tuple[Any, str] | None:
    """The arm's config and directory, once per name (None: started already)."""
    if arm.name in started:
      return None
    started.add(arm.name)
    arm_layout = layout.arm(arm.name)
    if jax.process_index() == 0:  # prepare writes the arm's inputs: once, by process 0
      context = Context(config, layout, arm_layout, attribution)
      arm_config = module(arm.intervention).prepare(context, arm.typed_settings(), base_config(config, layout))
    if jax.process_count() > 1:  # the other processes of the job read the config it made
      shared = os.path.join(arm_layout.intervention, PREPARED)
      if jax.process_index() == 0:
        fileio.write_json_atomic(shared, dataclasses.asdict(arm_config))
      parallel.sync(f"arm {arm.name} prepared")
      if jax.process_index() != 0:
        arm_config = config_lib.read(shared)
    log.info("arm %s (%s): stages %s", arm.name, arm.intervention, ", ".join(arm_config.stages))
    return arm_config, arm_layout.root

  def control_of(arm: ArmConfig) -> ArmConfig | None:
    control = equal_compute.plan(config, layout, arm)
    if control is None:
      return None
    log.info(
      "arm %s: %d real tokens (baseline %d); its equal-compute control: %s",
      arm.name,
      control.budget,
      control.baseline,
      control.name,
    )
    return control.arm

  active = [a for a in config.interventions.arms if not idle(a, attribution)]
  for arm in config.interventions.arms:
    if arm not in active:
      log.warning("arm %s skipped: the baseline attributed no example to %s", arm.name, ", ".join(targets(arm)))
  if config.interventions.workers == 1:

    def run_here(arm: ArmConfig | None) -> None:
      job = arm and prepared(arm)
      if job:
        run_pipeline(*job)

    for arm in active:
      run_here(arm)
      run_here(control_of(arm))  # planned from the arm's measured tokens
    return
  _run_in_workers(config.interventions.workers, active, prepared, control_of, run_pipeline)


def _run_in_workers(
  workers: int,
  active: list[ArmConfig],
  prepared: Callable[[ArmConfig], tuple[Any, str] | None],
  control_of: Callable[[ArmConfig], ArmConfig | None],
  run_pipeline: Callable[[Any, str], None],
) -> None:
  """Runs `active` arms `workers` at a time in spawned processes; each finished mitigation's
  control is queued behind the arms not started yet. The first failure stops the rest."""
  context = multiprocessing.get_context("spawn")
  with concurrent.futures.ProcessPoolExecutor(workers, mp_context=context) as pool:
    running: dict[concurrent.futures.Future, ArmConfig] = {}
    queue = list(active)
    while queue or running:
      while queue and len(running) < workers:
        arm = queue.pop(0)
        job = prepared(arm)
        if job:
          running[pool.submit(_in_process, run_pipeline, *job)] = arm
      if not running:
        continue
      done, _ = concurrent.futures.wait(running, return_when=concurrent.futures.FIRST_COMPLETED)
      for future in done:
        arm = running.pop(future)
        try:
          future.result()
        except BaseException:
          for other in running:
            other.cancel()
          log.error("arm %s failed; the arms still running are stopped", arm.name)
          for process in getattr(pool, "_processes", {}).values():
            process.terminate()
          raise
        control = control_of(arm)
        if control is not None:
          queue.append(control)
