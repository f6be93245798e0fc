"""The work-directory layout: the one place that names every artifact path of a run.

Stages, the report and the scripts reach each other's outputs only through a `Layout`, so moving
an artifact is a one-line change here. A run nested in another run's work directory (an
intervention arm under `arms/<name>/`) is `Layout(root).arm(name)`: the same layout one level down.
"""

from __future__ import annotations

import dataclasses
import functools
import glob
import os
from typing import Callable

FINAL = "final"  # the trained model inside a training stage's directory


def component_problem(name: str) -> str:
  """Why `name` (an arm's or a data set's) could not be one directory name on every platform
  ('' when it can): arms are directories, and data-set names go into file and TensorBoard names."""
  if name in ("", ".", ".."):
    return f"{name!r} is not a directory name"
  bad = sorted({c for c in name if c in '/\\:*?"<>|' or ord(c) < 32 or ord(c) == 127})
  if bad:
    return f"{name!r} holds {', '.join(map(repr, bad))}, which a directory name cannot"
  if len(name.encode("utf-8", "surrogatepass")) > 255:
    return f"{name[:20]!r}... is longer than a directory name may be (255 bytes)"
  return ""


@dataclasses.dataclass(frozen=True)
class TrainingPaths:
  """What one training stage writes (`Layout.training_paths`): the training loop is handed these
  and never sees the work directory's layout."""

  directory: str  # the stage's directory: deleting it starts the stage over
  checkpoints: str
  tensorboard: str
  dynamics: str
  final: str
  summary: str
  phase_model: Callable[[int], str]  # phase number -> the model exported at its end


@dataclasses.dataclass(frozen=True)
class Layout:
  """Paths under the work directory `root` (absolute)."""

  root: str

  def __post_init__(self):
    object.__setattr__(self, "root", os.path.abspath(self.root))

  def path(self, *parts: str) -> str:
    return os.path.join(self.root, *parts)

  def arm(self, name: str) -> "Layout":
    """The layout of intervention arm `name`, nested in this run."""
    return Layout(self.path("arms", name))

  # The run itself.
  @property
  def config(self) -> str:
    return self.path("config.json")

  @property
  def provenance(self) -> str:
    """The settings each stage ran with (`ilp.provenance`)."""
    return self.path("provenance.json")

  # world: the synthetic world's generated inputs.
  @property
  def world(self) -> str:
    return self.path("world")

  # init_model: the starting model and its smoke-test summary.
  @property
  def model_init(self) -> str:
    return self.path("model_init")

  @property
  def model_init_summary(self) -> str:
    return self.path("model_init.json")

  def model(self, name: str) -> str:
    """The model directory a config names: a stage's ("model_init", "pretrain", "sft") or an
    absolute checkpoint path (the config checks which names a field allows)."""
    if name == "model_init":
      return self.model_init
    if name in ("pretrain", "sft"):
      return self.final(name)
    return name

  # Training stages (pretrain, sft): checkpoints, logs and the final model.
  def training(self, stage: str) -> str:
    return self.path(stage)

  def final(self, stage: str) -> str:
    return self.path(stage, FINAL)

  def phase_model(self, stage: str, phase: int) -> str:
    """The model at the end of `phase` (`sft.checkpoint.phase_models`)."""
    return self.path(stage, f"phase{phase}")

  def phase_models(self, stage: str) -> list[str]:
    """Every phase model `stage` has exported so far."""
    return sorted(glob.glob(self.path(stage, "phase[0-9]*")))

  def checkpoints(self, stage: str) -> str:
    return self.path(stage, "checkpoints")

  def tensorboard(self, stage: str) -> str:
    return self.path(stage, "tensorboard")

  def summary(self, stage: str) -> str:
    return self.path(stage, "summary.json")

  def dynamics(self, stage: str = "sft") -> str:
    """The per-example dynamics log of a training stage."""
    return self.path(stage, "dynamics")

  def training_paths(self, stage: str) -> TrainingPaths:
    """Everything the training loop writes for `stage`."""
    return TrainingPaths(
      self.training(stage),
      self.checkpoints(stage),
      self.tensorboard(stage),
      self.dynamics(stage),
      self.final(stage),
      self.summary(stage),
      functools.partial(self.phase_model, stage),
    )

  @property
  def examples(self) -> str:
    """The SFT examples as trained on (ids, text, tokens), written once by the sft stage (or by
    detect, for a model trained elsewhere)."""
    return self.path("examples.parquet")

  # detect
  @property
  def detect(self) -> str:
    return self.path("detect")

  @property
  def detection(self) -> str:
    return self.path("detect", "detection.parquet")

  @property
  def detection_summary(self) -> str:
    return self.path("detect", "summary.json")

  @property
  def detection_parts(self) -> str:
    return self.path("detect", "parts")

  # diagnose
  @property
  def diagnosis(self) -> str:
    return self.path("diagnosis")

  @property
  def attribution(self) -> str:
    return self.path("diagnosis", "attribution.parquet")

  @property
  def diagnosis_summary(self) -> str:
    return self.path("diagnosis", "summary.json")

  # capability, arms, compare
  @property
  def capability(self) -> str:
    return self.path("capability.json")

  @property
  def arms_index(self) -> str:
    """Every arm the arms stage ran, with the digest of its provenance (what its outputs are)."""
    return self.path("arms", "arms.json")

  @property
  def intervention(self) -> str:
    """An arm's own inputs, written from the baseline's diagnosis (retrieved corpus, edited records)."""
    return self.path("intervention")

  @property
  def compare(self) -> str:
    return self.path("compare")

  @property
  def comparison(self) -> str:
    return self.path("compare", "comparison.parquet")

  @property
  def compare_summary(self) -> str:
    return self.path("compare", "summary.json")

  @property
  def compare_report(self) -> str:
    return self.path("compare", "comparison.md")

  # report, and the evaluation scripts' outputs (worlds only).
  @property
  def report(self) -> str:
    return self.path("report")

  @property
  def world_evaluation(self) -> str:
    return self.path("world_eval.json")

  @property
  def world_evaluation_dir(self) -> str:
    return self.path("evaluation")

  @property
  def diagnosis_validation(self) -> str:
    return self.path("diagnosis_validation.json")

  @property
  def retest(self) -> str:
    return self.path("retest.json")

  @property
  def interventions_evaluation(self) -> str:
    return self.path("interventions_eval.json")
