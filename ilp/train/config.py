"""The training sections the `pretrain` and `sft` config sections share: the loop's settings
(`TrainConfig`), the optimizer and its schedule, and train-state checkpoints.

JAX-free, so a config is built and checked without starting JAX (`ilp.config`); `ilp.train.loop`,
`optim` and `checkpointing` act on them.
"""

from __future__ import annotations

import dataclasses
import re

from ilp.typed import check

COMPUTE_DTYPES = ("auto", "float32", "bfloat16")
DECAYS = ("cosine", "linear", "constant")
DECAY_TARGETS = ("zero", "init")


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
  """AdamW and its learning-rate schedule (config sections `sft.optimizer`, `pretrain.optimizer`)."""

  learning_rate: float = 1e-4  # the peak, reached after the warmup (every phase has its own schedule)
  warmup_steps: int = -1  # >= 0 overrides warmup_ratio
  warmup_ratio: float = 0.03  # share of each phase's steps spent warming up
  decay: str = "cosine"  # one of DECAYS, after the warmup
  end_lr_ratio: float = 0.1  # final learning rate / peak
  b1: float = 0.9  # AdamW's decay rate of the first moment
  b2: float = 0.95  # AdamW's decay rate of the second moment
  eps: float = 1e-8  # AdamW's epsilon in the update's denominator
  weight_decay: float = 0.0  # matrices only
  decay_to: str = "zero"  # one of DECAY_TARGETS: "init" decays toward the starting weights
  grad_clip_norm: float = 1.0  # global-norm clipping; 0 turns it off

  def __post_init__(self):
    check(self.learning_rate > 0, "learning_rate", f"must be > 0, got {self.learning_rate}")
    check(self.warmup_steps >= -1, "warmup_steps", f"must be >= 0 (or -1: use warmup_ratio), got {self.warmup_steps}")
    check(0 <= self.warmup_ratio <= 1, "warmup_ratio", f"must lie in [0, 1], got {self.warmup_ratio}")
    check(self.decay in DECAYS, "decay", f"'{self.decay}' is not one of {DECAYS}")
    check(0 <= self.end_lr_ratio <= 1, "end_lr_ratio", f"must lie in [0, 1], got {self.end_lr_ratio}")
    for name in ("b1", "b2"):
      check(0 <= getattr(self, name) < 1, name, f"must lie in [0, 1), got {getattr(self, name)}")
    check(self.eps > 0, "eps", f"must be > 0, got {self.eps}")
    check(self.weight_decay >= 0, "weight_decay", f"must be >= 0, got {self.weight_decay}")
    check(self.decay_to in DECAY_TARGETS, "decay_to", f"'{self.decay_to}' is not one of {DECAY_TARGETS}")
    check(self.grad_clip_norm >= 0, "grad_clip_norm", f"must be >= 0, got {self.grad_clip_norm}")


@dataclasses.dataclass(frozen=True)
class CheckpointConfig:
  """When train-state checkpoints are written (config sections `sft.checkpoint`, `pretrain.checkpoint`);
  phase and epoch ends and the last step are always saved."""

  every_steps: int = 200  # steps between saves, besides phase and epoch ends and the last step
  max_to_keep: int = 2  # train-state checkpoints kept, newest first (the final model is separate)
  async_save: bool = True  # write a checkpoint in the background while training goes on
  phase_models: bool = False  # also export the model at the end of every phase but the last (`<stage>/phase<k>/`)

  def __post_init__(self):
    check(self.every_steps >= 1, "every_steps", f"must be >= 1, got {self.every_steps}")
    check(self.max_to_keep >= 1, "max_to_keep", f"must be >= 1, got {self.max_to_keep}")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """What the `pretrain` and `sft` sections share (the same loop runs both)."""

  init_from: str = "model_init"  # "model_init", "pretrain" (sft only) or an absolute checkpoint path
  batch_size: int = 16  # global batch (sequences per optimizer step)
  grad_accum_steps: int = 1  # micro-batches per step; batch_size must divide evenly
  compute_dtype: str = "auto"  # "bfloat16": bf16 compute over float32 master weights; "auto": bf16 on accelerators
  log_every_steps: int = 10  # steps between progress lines and TensorBoard scalars
  trainable: tuple[str, ...] = ()  # regexes over parameter paths ("layers/0/attn/q"): only matches train (empty: all)
  optimizer: OptimizerConfig = OptimizerConfig()  # AdamW and its learning-rate schedule per phase
  checkpoint: CheckpointConfig = CheckpointConfig()  # when train-state checkpoints are written

  def __post_init__(self):
    check(bool(self.init_from), "init_from", "must name 'model_init', 'pretrain' or a checkpoint path")
    check(self.batch_size >= 1, "batch_size", f"must be >= 1, got {self.batch_size}")
    check(self.grad_accum_steps >= 1, "grad_accum_steps", f"must be >= 1, got {self.grad_accum_steps}")
    check(
      self.batch_size % self.grad_accum_steps == 0,
      "batch_size",
      f"{self.batch_size} is not divisible by grad_accum_steps={self.grad_accum_steps}",
    )
    check(
      self.compute_dtype in COMPUTE_DTYPES, "compute_dtype", f"'{self.compute_dtype}' is not one of {COMPUTE_DTYPES}"
    )
    check(self.log_every_steps >= 1, "log_every_steps", f"must be >= 1, got {self.log_every_steps}")
    for pattern in self.trainable:
      try:
        re.compile(pattern)
      except re.error as e:
        check(False, "trainable", f"'{pattern}' is not a regular expression: {e}")
