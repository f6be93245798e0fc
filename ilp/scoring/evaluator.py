"""Per-example statistics of a model on a set of sequences: evaluation passes and option scoring.

The training loop's full passes over the training set and the detection stage's teacher-forced
scoring of multiple-choice options both need "these statistics for each of these sequences under
these parameters", batched by length bucket and sharded over the batch axes.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import jax
import numpy as np
from flax import nnx
from jax.sharding import Mesh

from ilp import parallel
from ilp.data import batches as batching
from ilp.data.tokenize import TokenizedExample
from ilp.model import build
from ilp.model.config import ModelConfig
from ilp.scoring.statistics import make_eval_step, make_token_step

ArraysFn = Callable[[np.ndarray, int], dict[str, np.ndarray]]  # (rows, bucket length) -> host arrays


class ExampleEvaluator:
  """Jitted forward-only statistics (`ilp.scoring.statistics.STATS`) per sequence, in index order."""

  def __init__(
    self,
    graphdef: nnx.GraphDef,
    cfg: ModelConfig,
    mesh: Mesh,
    batch_size: int,
    rules: Sequence[tuple[str, Any]] = parallel.DEFAULT_RULES,
  ):
    self.mesh, self.rules, self.batch_size = mesh, rules, batch_size
    _, abstract = build.abstract_model(cfg)
    self._batch_sharding = parallel.batch_sharding(mesh, (batch_size, 1), rules)
    self._rows = parallel.local_rows(self._batch_sharding, (batch_size, 1))
    self._graphdef = graphdef
    with parallel.sharding_context(mesh, rules):
      self._params_sharding = parallel.state_shardings(abstract, mesh, rules)
      self._step = jax.jit(
        make_eval_step(graphdef),
        in_shardings=(self._params_sharding, self._batch_sharding),
        out_shardings=parallel.batch_sharding(mesh, (batch_size,), rules),
      )
    self._token_steps: dict[float, Any] = {}

  def __call__(
    self, params: nnx.State, arrays: ArraysFn, lengths: np.ndarray, buckets: Sequence[int]
  ) -> dict[str, np.ndarray]:
    """Statistics for sequences 0..len(lengths)-1; `arrays` builds a padded batch of given rows."""
    out: dict[str, np.ndarray] = {}
    for rows, stats in self._batches(self._step, params, arrays, lengths, buckets):
      real = rows >= 0
      for name, values in stats.items():
        out.setdefault(name, np.zeros(len(lengths), np.asarray(values).dtype))[rows[real]] = values[real]
    return out

  def token_logliks(
    self, params: nnx.State, arrays: ArraysFn, lengths: np.ndarray, buckets: Sequence[int], temperature: float = 1.0
  ) -> list[np.ndarray]:
    """Per sequence, the log-likelihood of each supervised target token (in order) at `temperature`."""
    if temperature not in self._token_steps:
      with parallel.sharding_context(self.mesh, self.rules):
        self._token_steps[temperature] = jax.jit(
          make_token_step(self._graphdef, temperature),
          in_shardings=(self._params_sharding, self._batch_sharding),
          out_shardings=self._batch_sharding,
        )
    out: list[np.ndarray] = [np.zeros(0)] * len(lengths)
    step = self._token_steps[temperature]
    for rows, host_batch, values in self._batches(step, params, arrays, lengths, buckets, with_host=True):
      for r, i in enumerate(rows):
        if i >= 0:
          out[i] = values[r][host_batch["loss_mask"][r].astype(bool)].astype(np.float64)
    return out

  def _batches(
    self,
    step,
    params: nnx.State,
    arrays: ArraysFn,
    lengths: np.ndarray,
    buckets: Sequence[int],
    with_host: bool = False,
  ):
    with parallel.sharding_context(self.mesh, self.rules):
      for rows, length in batching.eval_batches(lengths, buckets, self.batch_size):
        host = arrays(rows, length)
        values = parallel.to_host(step(params, parallel.global_batch(host, self._batch_sharding, self._rows)))
        yield (rows, host, values) if with_host else (rows, values)


def _paired(
  prompts: Sequence[np.ndarray], continuations: Sequence[np.ndarray], pad_id: int
) -> tuple[np.ndarray, ArraysFn]:
  """Lengths and the batch builder of prompt + continuation sequences, continuations supervised."""
  examples = [
    TokenizedExample(i, np.concatenate([p, c]).astype(np.int32), len(p))
    for i, (p, c) in enumerate(zip(prompts, continuations))
  ]
  return (
    np.asarray([e.length for e in examples]),
    lambda rows, length: batching.assemble(examples, rows, length, pad_id),
  )


def continuation_logliks(
  evaluator: ExampleEvaluator,
  params: nnx.State,
  prompts: Sequence[np.ndarray],
  continuations: Sequence[np.ndarray],
  buckets: Sequence[int],
  pad_id: int,
) -> tuple[np.ndarray, np.ndarray]:
  """Sum of log p(continuation | prompt) and its token count, for every (prompt, continuation) pair.

  Args:
    evaluator, params: the model.
    prompts, continuations: token ids, paired by index.
    buckets, pad_id: how each concatenated sequence is padded.
  """
  lengths, arrays = _paired(prompts, continuations, pad_id)
  stats = evaluator(params, arrays, lengths, buckets)
  return -stats["nll_sum"].astype(np.float64), stats["tokens"].astype(np.int64)


def continuation_token_logliks(
  evaluator: ExampleEvaluator,
  params: nnx.State,
  prompts: Sequence[np.ndarray],
  continuations: Sequence[np.ndarray],
  buckets: Sequence[int],
  pad_id: int,
  temperature: float = 1.0,
) -> list[np.ndarray]:
  """log p(token | prompt, earlier tokens) of every continuation token at `temperature`, per
  (prompt, continuation) pair; the other arguments are `continuation_logliks`'."""
  lengths, arrays = _paired(prompts, continuations, pad_id)
  return evaluator.token_logliks(params, arrays, lengths, buckets, temperature)
