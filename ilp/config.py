"""The run's typed config: every section as a frozen dataclass, built and checked once.

`configs/base.py` turns `Config()` into the ml_collections ConfigDict that config files override;
`load` turns the result back into a `Config` at pipeline start, so a bad field (unknown key, wrong
type, value out of range, inconsistent combination) is one `ConfigError` naming it before any
file is written. Every default lives in these dataclasses: the root below, and the sections of
the library packages (`ModelConfig`, `DataConfig`, `TrainConfig`, `DetectConfig`, ...), each in a
module that imports no JAX (`ilp.model.config`, `ilp.train.config`, `ilp.machine`, ...): a config
is built and checked, and documented (`ilp.describe`), without starting JAX.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from typing import Any

import ml_collections

from ilp import typed
from ilp.data.batches import PhaseConfig
from ilp.data.config import WORKDIR, DataConfig
from ilp.data.replay import ReplayConfig
from ilp.detection.config import DetectConfig
from ilp.diagnosis.diagnose import DiagnoseConfig
from ilp.interventions import config as interventions
from ilp.interventions.config import InterventionsConfig
from ilp.machine import DistributedConfig, MachineConfig, MeshConfig
from ilp.model.config import DTYPES, ModelConfig
from ilp.online.config import OnlineConfig
from ilp.train.config import TrainConfig
from ilp.train.controls import ProgressiveConfig, ResampleConfig
from ilp.train.convergence import ConvergenceConfig, ExtendConfig
from ilp.typed import ConfigError, check
from ilp.world.config import WorldConfig

log = logging.getLogger(__name__)

STARTS = ("model_init", "pretrain")  # stages whose model a training stage may start from
MODELS = ("model_init", "pretrain", "sft")  # stages whose model detection may probe


@dataclasses.dataclass(frozen=True)
class InitConfig:
  """Where the starting model comes from (section `init`): a local HF directory (config.json +
  safetensors + tokenizer), or random initialisation from `model` when `hf_dir` is empty."""

  hf_dir: str = ""  # local HF checkpoint directory ('': random initialisation from the root's `model`)
  param_dtype: str = "float32"  # one of DTYPES: the dtype its parameters are stored and trained in
  dtype: str = "float32"  # one of DTYPES: the dtype it computes in (training uses its own `compute_dtype`)

  def __post_init__(self):
    for name in ("param_dtype", "dtype"):
      check(getattr(self, name) in DTYPES, name, f"'{getattr(self, name)}' is not one of {sorted(DTYPES)}")


ORDERS = ("sequential", "global")


@dataclasses.dataclass(frozen=True)
class SpreadConfig:
  """Near-duplicate groups kept apart (`sft.spread`, the paper's bucketing): `groups` is a JSON
  file of id lists (empty: off); members are dealt over `buckets` buckets of batches so no two
  share a mini-batch, re-dealt every `every_steps` steps (`ilp.data.spread`; the paper gives
  neither number)."""

  groups: str = ""  # JSON file of lists of record ids, one list per group ('': off)
  buckets: int = 4  # batch j of a window is in bucket j mod this; a group's members get distinct buckets
  every_steps: int = 50  # window length in steps: the members are dealt to buckets afresh in every window

  def __post_init__(self):
    check(self.buckets >= 2, "buckets", f"must be >= 2, got {self.buckets}")
    check(self.every_steps >= 1, "every_steps", f"must be >= 1, got {self.every_steps}")


@dataclasses.dataclass(frozen=True)
class SFTConfig(TrainConfig):
  """Supervised fine-tuning (section `sft`). Phases run in sequence (`order`="global": their
  visits interleaved in one shuffled stream); with `phases` empty, records form one phase per
  value of their `phase` field, each of `epochs` epochs."""

  epochs: int = 2  # epochs of each phase formed from the records' `phase` field (`phases` empty)
  phases: tuple[PhaseConfig, ...] = ()  # the phases in the order they run (empty: one per `phase` value)
  eval_every_steps: int = 0  # extra full evaluation passes every K steps (0: start and epoch ends only)
  order: str = "sequential"  # one of ORDERS
  spread: SpreadConfig = SpreadConfig()  # near-duplicate groups kept out of each other's batches
  resample: ResampleConfig = ResampleConfig()  # dynamic resampling of data sets whose dev accuracy fell
  progressive: ProgressiveConfig = ProgressiveConfig()  # progressive epochs of the last phase, stopped early
  convergence: ConvergenceConfig = ConvergenceConfig()  # the criterion judged per phase; training until it holds
  replay: ReplayConfig = ReplayConfig()  # language modelling on `data.replay` between SFT steps
  extend: ExtendConfig = ExtendConfig()  # continue a converged run's last phase from its plateau checkpoint
  online: OnlineConfig = OnlineConfig()  # the early warning scored at every evaluation pass (TensorBoard)

  def __post_init__(self):
    super().__post_init__()
    check(self.epochs >= 1, "epochs", f"must be >= 1, got {self.epochs}")
    if self.convergence.max_epochs:
      for k, phase in enumerate(self.phases):
        check(
          phase.epochs <= self.convergence.max_epochs,
          "convergence.max_epochs",
          f"{self.convergence.max_epochs} is below phases[{k}].epochs={phase.epochs} (the least a phase runs)",
        )
      check(
        self.phases or self.epochs <= self.convergence.max_epochs,
        "convergence.max_epochs",
        f"{self.convergence.max_epochs} is below epochs={self.epochs} (the least a phase runs)",
      )
      check(
        not self.progressive.enabled,
        "convergence.max_epochs",
        "training to convergence and progressive epochs both decide how long the last phase runs: use one",
      )
      check(
        not self.convergence.plateaus or not self.phases or len(self.convergence.plateaus) == len(self.phases),
        "convergence.plateaus",
        f"{self.convergence.plateaus}: one plateau epoch per phase ({len(self.phases)})",
      )
      check(
        self.order == "sequential",
        "convergence.max_epochs",
        f"training to convergence needs order='sequential' (global rounds interleave every phase), got '{self.order}'",
      )
    check(
      not self.extend.checkpoint or self.convergence.max_epochs > 0,
      "extend.checkpoint",
      "extends a run trained to convergence: set convergence.max_epochs as that run did",
    )
    check(self.eval_every_steps >= 0, "eval_every_steps", f"must be >= 0, got {self.eval_every_steps}")
    check(self.order in ORDERS, "order", f"'{self.order}' is not one of {ORDERS}")


@dataclasses.dataclass(frozen=True)
class PretrainConfig(TrainConfig):
  """Continual pre-training on `data.corpora` mixed by weight, LM loss on every token (section `pretrain`)."""

  steps: int = 1000  # optimizer steps
  seq_length: int = 128  # tokens per packed sequence: the corpora's documents concatenated, each ending in EOS

  def __post_init__(self):
    super().__post_init__()
    check(self.steps >= 1, "steps", f"must be >= 1, got {self.steps}")
    check(self.seq_length >= 2, "seq_length", f"must be >= 2, got {self.seq_length}")


DEFAULT_MODEL = ModelConfig(
  family="llama",
  vocab_size=256,
  hidden_size=64,
  intermediate_size=176,
  num_layers=2,
  num_heads=4,
  num_kv_heads=2,
  head_dim=16,
  max_position_embeddings=512,
)


def _model_name(value: str, allowed: tuple[str, ...]) -> bool:
  return value in allowed or os.path.isabs(value)


@dataclasses.dataclass(frozen=True)
class Config:
  """The root: which stages run, and one section per part of the pipeline."""

  stages: tuple[str, ...] = ("init_model",)  # run in order; a stage whose outputs exist is skipped
  seed: int = 0  # random init, data order and every sampled or drawn choice
  model: ModelConfig = DEFAULT_MODEL  # architecture for a random init (vocab_size 0: the tokenizer's)
  init: InitConfig = InitConfig()  # where the starting model comes from (`init_model` stage)
  data: DataConfig = DataConfig()  # the data sources, tokenizer and tokenisation
  sft: SFTConfig = SFTConfig()  # supervised fine-tuning (`sft` stage)
  pretrain: PretrainConfig = PretrainConfig()  # continual pre-training (`pretrain` stage)
  detect: DetectConfig = DetectConfig()  # which examples the model did not learn (`detect` stage)
  diagnose: DiagnoseConfig = DiagnoseConfig()  # why: signals and cause attribution (`diagnose` stage)
  mesh: MeshConfig = MeshConfig()  # the device mesh and the logical-axis rules
  distributed: DistributedConfig = DistributedConfig()  # JAX's multi-process runtime
  machine: MachineConfig = MachineConfig()  # knobs tuning the run for its machine (in no stage's provenance)
  world: WorldConfig | None = None  # the synthetic world (the `world` stage)
  interventions: InterventionsConfig = InterventionsConfig()  # the arms (the `arms` stage)

  def __post_init__(self):
    for name, allowed in (("sft", STARTS), ("pretrain", ("model_init",))):
      start = getattr(self, name).init_from
      check(
        _model_name(start, allowed),
        f"{name}.init_from",
        f"'{start}' is none of {allowed} and not an absolute checkpoint path",
      )
    check(
      _model_name(self.detect.model, MODELS),
      "detect.model",
      f"'{self.detect.model}' is none of {MODELS} and not an absolute checkpoint path",
    )
    check(
      not self.detect.base or _model_name(self.detect.base, MODELS),
      "detect.base",
      f"'{self.detect.base}' is none of {MODELS}, '' (no base probes) or an absolute checkpoint path",
    )
    check(
      not self.detect.require_converged or self.detect.model == "sft",
      "detect.require_converged",
      f"judges this run's SFT (sft/summary.json), but detect.model='{self.detect.model}' has no dynamics to judge",
    )
    check(
      "diagnose" not in self.stages or self.detect.model == "sft",
      "detect.model",
      f"is '{self.detect.model}', but the diagnosis reads the training dynamics of this run's SFT (V's loss "
      "trend, IV's forgetting, III's oscillation): diagnose the model it fine-tuned ('sft'), or drop the "
      "diagnose stage",
    )
    check(
      "diagnose" not in self.stages or self.diagnose.protocol in self.detect.protocols,
      "diagnose.protocol",
      f"'{self.diagnose.protocol}' is not run by detect.protocol='{self.detect.protocol}'",
    )
    check("world" not in self.stages or self.world is not None, "world", "the world stage needs a `world` section")
    check(
      "pretrain" not in self.stages or bool(self.data.corpora),
      "data.corpora",
      "the pretrain stage needs at least one corpus",
    )
    check("sft" not in self.stages or bool(self.data.sft), "data.sft", "the sft stage needs at least one source")
    check(
      not self.sft.replay.every_steps or bool(self.data.replay),
      "data.replay",
      "sft.replay.every_steps > 0 replays text between SFT steps: give data.replay sources",
    )
    watched = self.sft.resample.every_steps > 0 or self.sft.progressive.enabled
    check(
      not watched or bool(self.data.dev) or self.data.dev_fraction > 0,
      "data.dev",
      "sft.resample and sft.progressive watch a dev set: give data.dev or data.dev_fraction > 0",
    )
    check(
      "capability" not in self.stages or bool(self.data.heldout) or bool(self.data.heldout_text),
      "data.heldout",
      "the capability stage needs data.heldout or data.heldout_text",
    )
    check(
      bool(self.init.hf_dir) or self.model.vocab_size > 0 or bool(self.data.tokenizer),
      "model.vocab_size",
      "is 0 (take it from the tokenizer) but 'data.tokenizer' is empty",
    )
    check(self.model.vocab_size >= 0, "model.vocab_size", f"must be >= 0, got {self.model.vocab_size}")
    self._check_positions()
    check(
      self.interventions.workers == 1 or not self.distributed.enabled,
      "interventions.workers",
      f"is {self.interventions.workers}, but a multi-process run (distributed.enabled) runs its arms one at a time",
    )
    for k, arm in enumerate(self.interventions.arms):
      checker = getattr(interventions.module(arm.intervention), "check_config", None)
      try:
        if checker:
          checker(self, arm.typed_settings())
      except ConfigError as e:
        field = f"interventions.arms[{k}].{e.field}" if e.field.startswith("settings") else e.field
        raise ConfigError(field, f"(arm '{arm.name}') {e.message}") from None

  def _check_positions(self) -> None:
    """A random init positions every token of the longest sequence it will see."""
    lengths = {"data.buckets' largest": self.data.max_length}
    if "pretrain" in self.stages:
      lengths["pretrain.seq_length"] = self.pretrain.seq_length
    longest = max(lengths, key=lengths.get)
    check(
      bool(self.init.hf_dir) or self.model.max_position_embeddings >= lengths[longest],
      "model.max_position_embeddings",
      f"is {self.model.max_position_embeddings}, shorter than the longest sequence ({longest}: {lengths[longest]})",
    )


def check_paths(config: Config) -> None:
  """The directories the config names outside the work directory exist, and a random init's
  vocabulary holds its tokenizer (checked before any work, not when the stage that reads them starts)."""
  named = [("data.tokenizer", config.data.tokenizer), ("init.hf_dir", config.init.hf_dir)]
  named += [
    (field, path)
    for field, path in (
      ("sft.init_from", config.sft.init_from),
      ("pretrain.init_from", config.pretrain.init_from),
      ("detect.model", config.detect.model),
      ("detect.base", config.detect.base),
    )
    if os.path.isabs(path)
  ]
  for field, path in named:
    if path and WORKDIR not in path:
      check(os.path.isdir(path), field, f"{path}: no such directory")
  model = config.sft.online.model
  if "sft" in config.stages and model:
    check(
      os.path.isfile(model), "sft.online.model", f"{model}: no such file (scripts/early_warning.py --save writes one)"
    )
  tokenizer = config.data.tokenizer
  if "init_model" in config.stages and not config.init.hf_dir and tokenizer and WORKDIR not in tokenizer:
    from ilp.model import hf

    config.model.for_tokenizer(hf.load_tokenizer(tokenizer))  # a vocabulary too small for it is refused


def load(config: ml_collections.ConfigDict | dict[str, Any] | Config) -> Config:
  """The typed, checked config; raises ConfigError naming the first bad field. The mesh is checked
  against the devices here, at pipeline start, once a multi-process runtime is up (`launch.py`):
  the one check that needs JAX, imported here so that importing this module does not start it."""
  import jax

  loaded = typed.build(Config, config)
  try:
    loaded.mesh.check_devices(jax.device_count())
  except ConfigError as e:
    raise ConfigError(f"mesh.{e.field}", e.message) from None
  return loaded


def read(path: str) -> Config:
  """The config a run recorded (`Layout.config`), typed and checked again: what the evaluation
  scripts hand the library. Fields this version of the config no longer has (a run recorded
  before they were removed or moved) are dropped with a warning naming them; nothing else is."""
  with open(path) as f:
    recorded, dropped = typed.known_fields(Config, json.load(f))
  if dropped:
    log.warning("%s: recorded fields this version no longer has, ignored: %s", path, ", ".join(dropped))
  return load(recorded)


def config_dict(config: Config | None = None) -> ml_collections.ConfigDict:
  """The ConfigDict that config files start from (defaults: `Config()`)."""
  return typed.config_dict(config or Config())


__all__ = ["Config", "ConfigError", "load", "read", "config_dict"]
