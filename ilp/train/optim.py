"""AdamW with warmup + decay per phase, gradient clipping, and the sharded train state.

Each phase of sequential SFT gets its own warmup and decay (as separate SFT runs would), while
the optimizer moments carry over. Weight decay applies to matrices only, not norms or biases,
and pulls either toward zero (AdamW) or toward the weights the run started from (`decay_to="init"`,
L2-SP: fine-tuning as a bounded move away from the base model).
"""

from __future__ import annotations

import re
from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from ilp import parallel
from ilp.train.config import OptimizerConfig
from ilp.train.step import TrainState


def phase_schedule(
  lr: float, steps: int, warmup_steps: int, decay: str, end_ratio: float, decay_steps: int | None = None
) -> optax.Schedule:
  """Linear warmup, then `decay` to `end_ratio` of the peak, over one phase of `steps`.

  `decay_steps` (a phase trained to convergence, `ilp.train.convergence`): the peak is held after
  the warmup and a linear decay to `end_ratio` runs over the phase's last `decay_steps` steps only
  (0: constant to the end), whatever `decay` says: warmup-stable-decay.
  """
  warmup = min(warmup_steps, max(steps - 1, 0))
  rest = max(steps - warmup, 1)
  if decay_steps is not None:
    cool = min(decay_steps, rest)
    parts = [optax.constant_schedule(lr)] + ([optax.linear_schedule(lr, lr * end_ratio, cool)] if cool else [])
    after = parts[0] if len(parts) == 1 else optax.join_schedules(parts, [rest - cool])
  elif decay == "cosine":
    after = optax.cosine_decay_schedule(lr, rest, alpha=end_ratio)
  elif decay == "linear":
    after = optax.linear_schedule(lr, lr * end_ratio, rest)
  else:
    after = optax.constant_schedule(lr)
  if warmup == 0:
    return after
  return optax.join_schedules([optax.linear_schedule(0.0, lr, warmup), after], [warmup])


def make_schedule(
  optimizer: OptimizerConfig, phase_steps: Sequence[int], decay_steps: Sequence[int | None] | None = None
) -> optax.Schedule:
  """One warmup + decay per phase, joined at the phase boundaries; `decay_steps` per phase (None:
  the configured decay over the whole phase), see `phase_schedule`."""

  def warmup(steps: int) -> int:
    return optimizer.warmup_steps if optimizer.warmup_steps >= 0 else int(round(optimizer.warmup_ratio * steps))

  decays = list(decay_steps) if decay_steps is not None else [None] * len(phase_steps)
  parts = [
    phase_schedule(optimizer.learning_rate, n, warmup(n), optimizer.decay, optimizer.end_lr_ratio, d)
    for n, d in zip(phase_steps, decays)
  ]
  boundaries = [int(b) for b in jnp.cumsum(jnp.asarray(phase_steps))[:-1]]
  return parts[0] if len(parts) == 1 else optax.join_schedules(parts, boundaries)


def decay_mask(params: nnx.State) -> Any:
  """Per variable, whether weight decay applies: to arrays of two or more dimensions besides a
  scanned model's `layers` axis, so a model decays the same parameters scanned or not."""

  def matrix(v: nnx.Variable) -> bool:
    return v.ndim - parallel.variable_axes(v).count("layers") >= 2

  return jax.tree.map(matrix, params, is_leaf=lambda x: isinstance(x, nnx.Variable))


def trainable_mask(params: nnx.State, patterns: Sequence[str]) -> Any:
  """Per variable, whether it trains: its path ("layers/0/attn/q", "embed", "lm_head", ...)
  matches one of the regular expressions `patterns` (`re.search`); every variable when empty."""
  if not patterns:
    return jax.tree.map(lambda _: True, params, is_leaf=lambda x: isinstance(x, nnx.Variable))
  compiled = [re.compile(p) for p in patterns]
  name = lambda path: "/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path)
  return jax.tree_util.tree_map_with_path(
    lambda path, _: any(c.search(name(path)) for c in compiled), params, is_leaf=lambda x: isinstance(x, nnx.Variable)
  )


class AnchorState(NamedTuple):
  anchor: Any  # the weights at initialisation, a params-shaped tree (sharded like the params)


def decay_toward_init(weight_decay: float, mask: Callable[[Any], Any]) -> optax.GradientTransformation:
  """Decoupled weight decay toward the weights the optimizer was initialised with (L2-SP, Li et al.
  2018), where AdamW's pulls toward zero: `update += weight_decay * (params - anchor)` on the
  variables `mask(params)` selects. optax has no anchored decay. The anchor is a full copy of the
  params (not `optax.masked`, whose partial state the sharding helpers cannot map onto the params).
  """

  def init(params):
    return AnchorState(anchor=jax.tree.map(jnp.copy, params))

  def update(updates, state, params=None):
    if params is None:
      raise ValueError("decay_toward_init needs the params")
    leaves, treedef = jax.tree.flatten(updates)  # the mask has one flag per variable, i.e. per leaf
    pulled = [
      u + weight_decay * (p - a) if m else u
      for u, p, a, m in zip(
        leaves, jax.tree.leaves(params), jax.tree.leaves(state.anchor), jax.tree.leaves(mask(params))
      )
    ]
    return treedef.unflatten(pulled), state

  return optax.GradientTransformation(init, update)


def make_optimizer(
  optimizer: OptimizerConfig, schedule: optax.Schedule, trainable: Sequence[str] = ()
) -> optax.GradientTransformation:
  """Clipping and AdamW (decoupled decay toward zero or, with `decay_to="init"`, toward the
  starting weights); with `trainable` patterns, the other variables get no update at all (their
  gradients zeroed before clipping, no weight decay): partial fine-tuning."""
  frozen = lambda params: jax.tree.map(lambda t: not t, trainable_mask(params, trainable))
  decays = lambda params: jax.tree.map(lambda d, t: d and t, decay_mask(params), trainable_mask(params, trainable))
  if optimizer.decay_to == "init" and optimizer.weight_decay > 0:
    adam = optax.chain(
      optax.scale_by_adam(b1=optimizer.b1, b2=optimizer.b2, eps=optimizer.eps),
      decay_toward_init(optimizer.weight_decay, decays),
      optax.scale_by_learning_rate(schedule),
    )
  else:
    adam = optax.adamw(
      schedule, b1=optimizer.b1, b2=optimizer.b2, eps=optimizer.eps, weight_decay=optimizer.weight_decay, mask=decays
    )
  return optax.chain(
    optax.masked(optax.set_to_zero(), frozen) if trainable else optax.identity(),
    optax.clip_by_global_norm(optimizer.grad_clip_norm) if optimizer.grad_clip_norm > 0 else optax.identity(),
    adam,
  )


def state_shardings(
  params_shardings: nnx.State, optimizer: optax.GradientTransformation, abstract_params: nnx.State, mesh: Mesh
) -> TrainState:
  """Shardings for the whole train state: optimizer moments follow their parameters."""
  replicated = NamedSharding(mesh, PartitionSpec())
  abstract_opt = jax.eval_shape(optimizer.init, abstract_params)
  opt = optax.tree_map_params(
    optimizer,
    lambda _, s: s,
    abstract_opt,
    params_shardings,
    transform_non_params=lambda _: replicated,
    is_leaf=lambda x: isinstance(x, nnx.Variable),
  )
  return TrainState(step=replicated, params=params_shardings, opt_state=opt)


def create_state(params: nnx.State, optimizer: optax.GradientTransformation, shardings: TrainState) -> TrainState:
  """A fresh train state around `params`, every array created with its sharding."""
  init = jax.jit(
    lambda p: TrainState(jnp.zeros((), jnp.int32), p, optimizer.init(p)), out_shardings=shardings, donate_argnums=0
  )
  return init(params)
