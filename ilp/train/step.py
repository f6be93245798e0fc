"""The jitted training and evaluation steps, with per-example statistics from the same forward.

The loss is the token-level mean NLL over the response tokens of the whole global batch (the sum
is accumulated over micro-batches and divided once), so it does not depend on how the batch is
split over devices or accumulation steps. Statistics are computed from the logits the loss
already materialised, under stop_gradient, so they cost two reductions over the vocabulary and
nothing in the backward pass.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from ilp.model import build

STATS = ("nll_sum", "tokens", "token_acc", "exact_match", "gold_prob", "margin_mean", "margin_min")


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class TrainState:
  step: jax.Array          # [] int32, optimizer steps taken
  params: nnx.State
  opt_state: Any


def token_nll(logits: jax.Array, targets: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Per-token negative log-likelihood of the targets, and the targets' logits (float32)."""
  logits = logits.astype(jnp.float32)
  gold = jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
  return jax.nn.logsumexp(logits, axis=-1) - gold, gold


def token_scores(logits: jax.Array, targets: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Per-token NLL, correctness (gold is the argmax) and margin (gold minus best other logit).

  Two fused reductions over the vocabulary instead of `lax.top_k`, which XLA:CPU lowers to a sort.
  """
  nll, gold = token_nll(logits, targets)
  logits = logits.astype(jnp.float32)
  best = jnp.argmax(logits, axis=-1)
  top = jnp.max(logits, axis=-1)
  vocab = jax.lax.broadcasted_iota(jnp.int32, logits.shape, logits.ndim - 1)
  runner_up = jnp.max(jnp.where(vocab == best[..., None], -jnp.inf, logits), axis=-1)
  correct = best == targets
  return nll, correct, gold - jnp.where(correct, runner_up, top)


def example_stats(nll: jax.Array, correct: jax.Array, margin: jax.Array, loss_mask: jax.Array) -> dict[str, jax.Array]:
  """Reduces token scores over each example's supervised tokens: one value per row."""
  m = loss_mask.astype(jnp.float32)
  count = m.sum(axis=1)
  denom = jnp.maximum(count, 1.0)
  supervised = loss_mask.astype(bool)
  return {
      "nll_sum": (nll * m).sum(axis=1),
      "tokens": count,
      "token_acc": (correct * m).sum(axis=1) / denom,
      "exact_match": jnp.all(correct | ~supervised, axis=1).astype(jnp.float32),
      "gold_prob": (jnp.exp(-nll) * m).sum(axis=1) / denom,
      "margin_mean": (margin * m).sum(axis=1) / denom,
      "margin_min": jnp.min(jnp.where(supervised, margin, jnp.inf), axis=1),
  }


def _forward_scores(graphdef: nnx.GraphDef, params: nnx.State, batch: dict[str, jax.Array], with_stats: bool):
  logits, _ = build.forward(graphdef, params, batch["tokens"], mask=batch["mask"])
  if not with_stats:
    nll, _ = token_nll(logits, batch["targets"])
    return (nll * batch["loss_mask"]).sum(), {}
  nll, correct, margin = token_scores(logits, batch["targets"])
  stats = jax.lax.stop_gradient(example_stats(nll, correct, margin, batch["loss_mask"]))
  return (nll * batch["loss_mask"]).sum(), stats


def make_train_step(graphdef: nnx.GraphDef, optimizer: optax.GradientTransformation,
                    schedule: Callable[[jax.Array], jax.Array], accum_steps: int = 1, with_stats: bool = True):
  """train_step(state, batch) -> (state, metrics, per-example stats).

  `batch` arrays are [global_batch, length]; with accum_steps > 1 they are split into that many
  micro-batches scanned in sequence, the gradients summed and normalised once.
  """

  def micro_grads(params, micro):
    (nll_sum, stats), grads = jax.value_and_grad(
        lambda p: _forward_scores(graphdef, p, micro, with_stats), has_aux=True)(params)
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
    metrics = {"loss": nll_sum * scale, "grad_norm": optax.global_norm(grads),
               "learning_rate": schedule(state.step), "tokens": tokens}
    return TrainState(state.step + 1, params, opt_state), metrics, stats

  return train_step


def make_eval_step(graphdef: nnx.GraphDef):
  """eval_step(params, batch) -> per-example stats (forward only)."""

  def eval_step(params: nnx.State, batch: dict[str, jax.Array]) -> dict[str, jax.Array]:
    return _forward_scores(graphdef, params, batch, with_stats=True)[1]

  return eval_step
