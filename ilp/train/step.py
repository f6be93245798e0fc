"""The jitted training step, with per-example statistics from the same forward.

The loss is the token-level mean NLL over the response tokens of the whole global batch (the sum
is accumulated over micro-batches and divided once), so it does not depend on how the batch is
split over devices or accumulation steps. Statistics (`ilp.scoring.statistics`) are computed from
the logits the loss already materialised, under stop_gradient, so they cost two reductions over
the vocabulary and nothing in the backward pass.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from ilp.scoring.statistics import forward_scores

# On CPUs with Eigen dots, the head's vocabulary block width (see `Decoder.head`).
_EIGEN_HEAD_BLOCK = 1024


def _eigen_dots(ynnpack_dots: bool) -> bool:
  return not ynnpack_dots and jax.default_backend() == "cpu"


def compiler_options(ynnpack_dots: bool) -> dict[str, str]:
  """XLA options for the training step's compilation.

  On CPUs, XLA's YNNPACK dot fusions (the default) make the step ~1.2x slower than its Eigen dots
  (scripts/bench_train.py --ynnpack_dots, measured in one process): they run the attention's
  batched dots and the backward's GEMMs at a fraction of the matmul ceiling. Forward-only
  programs (evaluation, sampling) keep YNNPACK, which is faster there.
  """
  return {"xla_cpu_experimental_ynn_fusion_type": ""} if _eigen_dots(ynnpack_dots) else {}


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class TrainState:
  step: jax.Array  # [] int32, optimizer steps taken
  params: nnx.State
  opt_state: Any


def make_train_step(
  graphdef: nnx.GraphDef,
  optimizer: optax.GradientTransformation,
  schedule: Callable[[jax.Array], jax.Array],
  accum_steps: int = 1,
  with_stats: bool = True,
  ynnpack_dots: bool = False,
):
  """train_step(state, batch) -> (state, metrics, per-example stats).

  `batch` arrays are [global_batch, length]; with accum_steps > 1 they are split into that many
  micro-batches scanned in sequence, the gradients summed and normalised once. `ynnpack_dots` must
  match the step's `compiler_options`: with Eigen dots the head is computed in vocabulary blocks.
  """
  head_block = _EIGEN_HEAD_BLOCK if _eigen_dots(ynnpack_dots) else 0

  def micro_grads(params, micro):
    (nll_sum, stats), grads = jax.value_and_grad(
      lambda p: forward_scores(graphdef, p, micro, with_stats, head_block), has_aux=True
    )(params)
    return nll_sum, grads, stats

  def train_step(state: TrainState, batch: dict[str, jax.Array]):
    tokens = batch["loss_mask"].sum().astype(jnp.float32)
    if accum_steps == 1:
      nll_sum, grads, stats = micro_grads(state.params, batch)
    else:
      micro = jax.tree.map(lambda x: x.reshape(accum_steps, -1, *x.shape[1:]), batch)

      def body(carry, mb):
        total, grads = carry
        nll_sum, g, stats = micro_grads(state.params, mb)
        return (total + nll_sum, jax.tree.map(jnp.add, grads, g)), stats

      zeros = jax.tree.map(jnp.zeros_like, state.params)
      (nll_sum, grads), stats = jax.lax.scan(body, (jnp.zeros((), jnp.float32), zeros), micro)
      stats = jax.tree.map(lambda x: x.reshape(-1), stats)
    scale = 1.0 / jnp.maximum(tokens, 1.0)
    grads = jax.tree.map(lambda g: g * scale, grads)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = {
      "loss": nll_sum * scale,
      "grad_norm": optax.global_norm(grads),
      "learning_rate": schedule(state.step),
      "tokens": tokens,
    }
    return TrainState(state.step + 1, params, opt_state), metrics, stats

  return train_step
