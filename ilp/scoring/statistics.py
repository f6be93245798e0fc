"""Per-example statistics of a model's fit to its targets: what training logs, evaluation passes
report and detection's option scoring uses, computed one way for all three.

Token scores come from the logits in two fused reductions over the vocabulary; each example's
statistics (`STATS`) reduce them over its supervised (response) tokens.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from ilp.model import build

STATS = ("nll_sum", "tokens", "token_acc", "exact_match", "gold_prob", "margin_mean", "margin_min")


def token_nll(logits: jax.Array, targets: jax.Array, top: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
  """Per-token negative log-likelihood of the targets, and the targets' logits (float32).

  `top`, the logits' maximum if already known, saves the logsumexp its own pass over the vocabulary.
  """
  logits = logits.astype(jnp.float32)
  gold = jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
  if top is None:
    return jax.nn.logsumexp(logits, axis=-1) - gold, gold
  shift = jax.lax.stop_gradient(top)[..., None]  # any constant shift leaves logsumexp and its gradient exact
  return jnp.log(jnp.sum(jnp.exp(logits - shift), axis=-1)) + shift[..., 0] - gold, gold


def _top_two(a: tuple[jax.Array, ...], b: tuple[jax.Array, ...]) -> tuple[jax.Array, ...]:
  """Merges two (best value, its index, second-best value) partial results; ties go to the lower
  index, as in `jnp.argmax`."""
  a_top, a_idx, a_second = a
  b_top, b_idx, b_second = b
  a_wins = (a_top > b_top) | ((a_top == b_top) & (a_idx < b_idx))
  second = jnp.maximum(jnp.minimum(a_top, b_top), jnp.maximum(a_second, b_second))
  return jnp.where(a_wins, a_top, b_top), jnp.where(a_wins, a_idx, b_idx), second


def top_two(logits: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Largest logit, its index and the second largest (over other indices), in one pass over the
  vocabulary: a variadic reduction instead of `lax.top_k`, which XLA:CPU lowers to a sort, or
  three separate max/argmax passes."""
  vocab = jax.lax.broadcasted_iota(jnp.int32, logits.shape, logits.ndim - 1)
  init = (jnp.float32(-jnp.inf), jnp.int32(jnp.iinfo(jnp.int32).max), jnp.float32(-jnp.inf))
  return jax.lax.reduce((logits, vocab, jnp.full_like(logits, -jnp.inf)), init, _top_two, (logits.ndim - 1,))


def token_scores(logits: jax.Array, targets: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Per-token NLL, correctness (gold is the argmax) and margin (gold minus best other logit).

  One pass finds the top two logits (and serves the NLL's logsumexp), one more sums exponentials:
  the same passes over the vocabulary as the loss alone.
  """
  logits = logits.astype(jnp.float32)
  top, best, runner_up = top_two(jax.lax.stop_gradient(logits))
  nll, gold = token_nll(logits, targets, top)
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


def forward_scores(
  graphdef: nnx.GraphDef, params: nnx.State, batch: dict[str, jax.Array], with_stats: bool, head_block: int = 0
):
  """(sum of the supervised tokens' NLL, per-example statistics or {}) of one padded batch;
  `head_block` is `Decoder.head`'s `block`."""
  model = nnx.merge(graphdef, params)
  logits = model.head(model.hidden_states(batch["tokens"], mask=batch["mask"])[0], head_block)
  if not with_stats:
    nll, _ = token_nll(logits, batch["targets"])
    return (nll * batch["loss_mask"]).sum(), {}
  nll, correct, margin = token_scores(logits, batch["targets"])
  stats = jax.lax.stop_gradient(example_stats(nll, correct, margin, batch["loss_mask"]))
  return (nll * batch["loss_mask"]).sum(), stats


def make_eval_step(graphdef: nnx.GraphDef):
  """eval_step(params, batch) -> per-example stats (forward only)."""

  def eval_step(params: nnx.State, batch: dict[str, jax.Array]) -> dict[str, jax.Array]:
    return forward_scores(graphdef, params, batch, with_stats=True)[1]

  return eval_step


def make_token_step(graphdef: nnx.GraphDef, temperature: float = 1.0):
  """token_step(params, batch) -> [batch, length] log-likelihood of each supervised target token
  (0 elsewhere) under the model's distribution at `temperature` (> 0), forward only."""

  def token_step(params: nnx.State, batch: dict[str, jax.Array]) -> jax.Array:
    logits, _ = build.forward(graphdef, params, batch["tokens"], mask=batch["mask"])
    nll, _ = token_nll(logits / temperature, batch["targets"])
    return -nll * batch["loss_mask"]

  return token_step
