"""A checkpoint loaded for inference: its sampler, evaluator and prompt embedder on the mesh, what
detection and the capability check ask a model with. It sits here, above `ilp.sampling` (whose
sampler it holds) and beside the evaluator and embedder, so that the model package stays below both."""

from __future__ import annotations

from typing import Any, Sequence

from ilp.model import checkpoint
from ilp.sampling.sampler import Sampler
from ilp.scoring.embedding import TextEmbedder
from ilp.scoring.evaluator import ExampleEvaluator


class Model:
  """A checkpoint with its sampler, evaluator, prompt and answer embedders on the mesh."""

  def __init__(self, directory: str, mesh: Any, rules: Sequence[tuple[str, Any]], batch_size: int):
    self.cfg, graphdef, self.params = checkpoint.load_any(directory, mesh, rules)
    self.sampler = Sampler(graphdef, self.cfg, mesh, rules)
    self.evaluator = ExampleEvaluator(graphdef, self.cfg, mesh, batch_size, rules)
    self.embedder = TextEmbedder(graphdef, self.cfg, mesh, batch_size, rules)
    self.answer_embedder = TextEmbedder(graphdef, self.cfg, mesh, batch_size, rules, pooling="mean")
