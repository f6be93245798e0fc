"""AdamW with warmup + decay per stage, gradient clipping, and the sharded train state.

Each stage of sequential SFT gets its own warmup and decay (as separate SFT runs would), while
the optimizer moments carry over. Weight decay applies to matrices only, not norms or biases.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from ilp.train.step import TrainState

DECAYS = ("cosine", "linear", "constant")


def stage_schedule(lr: float, steps: int, warmup_steps: int, decay: str, end_ratio: float) -> optax.Schedule:
  if decay not in DECAYS:
    raise ValueError(f"optimizer.decay '{decay}' is not one of {DECAYS}")
  warmup = min(warmup_steps, max(steps - 1, 0))
  rest = max(steps - warmup, 1)
  if decay == "cosine":
    after = optax.cosine_decay_schedule(lr, rest, alpha=end_ratio)
  elif decay == "linear":
    after = optax.linear_schedule(lr, lr * end_ratio, rest)
  else:
    after = optax.constant_schedule(lr)
  if warmup == 0:
    return after
  return optax.join_schedules([optax.linear_schedule(0.0, lr, warmup), after], [warmup])


def make_schedule(cfg: ml_collections.ConfigDict, stage_steps: Sequence[int]) -> optax.Schedule:
  """One warmup + decay per stage, joined at the stage boundaries."""
  def warmup(steps: int) -> int:
    return cfg.warmup_steps if cfg.warmup_steps >= 0 else int(round(cfg.warmup_ratio * steps))
  parts = [stage_schedule(cfg.learning_rate, n, warmup(n), cfg.decay, cfg.end_lr_ratio) for n in stage_steps]
  boundaries = [int(b) for b in jnp.cumsum(jnp.asarray(stage_steps))[:-1]]
  return parts[0] if len(parts) == 1 else optax.join_schedules(parts, boundaries)


def make_optimizer(cfg: ml_collections.ConfigDict, schedule: optax.Schedule) -> optax.GradientTransformation:
  decay_mask: Callable[[Any], Any] = lambda params: jax.tree.map(lambda p: p.ndim >= 2, params)
  return optax.chain(
      optax.clip_by_global_norm(cfg.grad_clip_norm) if cfg.grad_clip_norm > 0 else optax.identity(),
      optax.adamw(schedule, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps, weight_decay=cfg.weight_decay, mask=decay_mask))


def state_shardings(params_shardings: nnx.State, optimizer: optax.GradientTransformation,
                    abstract_params: nnx.State, mesh: Mesh) -> TrainState:
  """Shardings for the whole train state: optimizer moments follow their parameters."""
  replicated = NamedSharding(mesh, PartitionSpec())
  abstract_opt = jax.eval_shape(optimizer.init, abstract_params)
  opt = optax.tree_map_params(optimizer, lambda _, s: s, abstract_opt, params_shardings,
                              transform_non_params=lambda _: replicated,
                              is_leaf=lambda x: isinstance(x, nnx.Variable))
  return TrainState(step=replicated, params=params_shardings, opt_state=opt)


def create_state(params: nnx.State, optimizer: optax.GradientTransformation,
                 shardings: TrainState) -> TrainState:
  """A fresh train state around `params`, every array created with its sharding."""
  init = jax.jit(lambda p: TrainState(jnp.zeros((), jnp.int32), p, optimizer.init(p)),
                 out_shardings=shardings, donate_argnums=0)
  return init(params)
