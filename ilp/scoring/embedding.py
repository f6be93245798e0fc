"""Text embeddings from a model's final hidden states: a prompt's state at its last token, where
the model predicts the answer (`pooling="last"`), or an answer's states averaged over its tokens
(`pooling="mean"`, what `ilp.scoring.equivalence` compares answers by).

Near-duplicate prompts that share few words (paraphrases) still ask the model for the same
answer, so its state at the point of answering is alike; a mean over the prompt's tokens is not
(measured on the free-form world: mean-pooled states of paraphrases about one person are less
alike than those of one template about two people, docs/method.md "Diagnosis"). The model's own states
need no download, unlike a sentence encoder. Wide models are reduced to `dims` by a fixed
Gaussian random projection (Johnson–Lindenstrauss: cosines are kept up to a small distortion),
so a 4096-wide model's embeddings of 100k prompts stay small.
"""

from __future__ import annotations

from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh

from ilp import parallel
from ilp.data import batches as batching
from ilp.model import build
from ilp.model.config import ModelConfig

PROJECTION_SEED = 0


POOLINGS = ("last", "mean")


def _pooled_state(graphdef: nnx.GraphDef, params: nnx.State, batch: dict[str, jax.Array], pooling: str) -> jax.Array:
  hidden, _ = nnx.merge(graphdef, params).hidden_states(batch["tokens"], mask=batch["mask"])
  hidden, mask = hidden.astype(jnp.float32), batch["mask"]
  if pooling == "mean":
    return (hidden * mask[..., None]).sum(1) / jnp.maximum(mask.sum(1), 1)[:, None]
  last = jnp.maximum(mask.sum(1) - 1, 0)  # texts are right-padded
  return jnp.take_along_axis(hidden, last[:, None, None], axis=1)[:, 0]


class TextEmbedder:
  """Jitted text embeddings (`pooling`: one of POOLINGS), batched by length bucket and sharded over
  the batch axes."""

  def __init__(
    self,
    graphdef: nnx.GraphDef,
    cfg: ModelConfig,
    mesh: Mesh,
    batch_size: int,
    rules: Sequence[tuple[str, Any]] = parallel.DEFAULT_RULES,
    pooling: str = "last",
  ):
    assert pooling in POOLINGS, pooling
    self.mesh, self.rules, self.batch_size, self.width = mesh, rules, batch_size, cfg.hidden_size
    _, abstract = build.abstract_model(cfg)
    self._batch_sharding = parallel.batch_sharding(mesh, (batch_size, 1), rules)
    self._rows = parallel.local_rows(self._batch_sharding, (batch_size, 1))
    with parallel.sharding_context(mesh, rules):
      self._step = jax.jit(
        lambda params, batch: _pooled_state(graphdef, params, batch, pooling),
        in_shardings=(parallel.state_shardings(abstract, mesh, rules), self._batch_sharding),
        out_shardings=parallel.batch_sharding(mesh, (batch_size, 1), rules),
      )

  def __call__(
    self, params: nnx.State, prompts: Sequence[np.ndarray], buckets: Sequence[int], pad_id: int, dims: int
  ) -> np.ndarray:
    """[texts, min(width, dims)] float32 embeddings of the token sequences `prompts`, in the order given."""
    lengths = np.asarray([len(p) for p in prompts])
    out = np.zeros((len(prompts), self.width), np.float32)
    with parallel.sharding_context(self.mesh, self.rules):
      for rows, length in batching.eval_batches(
        lengths, batching.covering(buckets, int(lengths.max(initial=1))), self.batch_size
      ):
        tokens = np.full((len(rows), length), pad_id, np.int32)
        mask = np.zeros((len(rows), length), np.int32)
        for r, i in enumerate(rows):
          if i >= 0:
            tokens[r, : lengths[i]], mask[r, : lengths[i]] = prompts[i], 1
        host = {"tokens": tokens, "mask": mask}
        pooled = parallel.to_host(self._step(params, parallel.global_batch(host, self._batch_sharding, self._rows)))
        real = rows >= 0
        out[rows[real]] = pooled[real]
    return project(out, dims)


def project(embeddings: np.ndarray, dims: int) -> np.ndarray:
  """`embeddings` unchanged when at most `dims` wide, else times a fixed N(0, 1/dims) matrix."""
  width = embeddings.shape[1]
  if width <= dims:
    return embeddings.astype(np.float32)
  matrix = np.random.default_rng(PROJECTION_SEED).standard_normal((width, dims)) / np.sqrt(dims)
  return (embeddings.astype(np.float64) @ matrix).astype(np.float32)
