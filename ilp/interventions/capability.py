"""The held-out capability check: what a run's fine-tuned model can do outside its training set,
so an arm that helps its target by damaging the rest shows it.

- held-out questions (`data.heldout`, SFT-format records never trained on): greedy accuracy,
  overall and per data set, verified like detection (`detect.verifier`);
- held-out text (`data.heldout_text`): perplexity over up to `MAX_SEQUENCES` packed sequences of
  the largest bucket length.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ilp.data import batches as batching
from ilp.data import examples, loaders
from ilp.data.tokenize import pack_corpus
from ilp.detection.generative import sample_and_verify
from ilp.sampling.sampler import SamplingConfig
from ilp.scoring.inference import Model
from ilp.scoring.verifiers import get_verifier

MAX_SEQUENCES = 512


def heldout_accuracy(model: Model, tokenizer: Any, data: Any, detect: Any, seed: int) -> dict[str, Any]:
  """Greedy accuracy on `data.heldout`, overall and per data set."""
  frame = examples.build(data, tokenizer, data.heldout)[0]
  verifier = get_verifier(detect.verifier, detect.verifier_threshold)
  pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
  greedy = SamplingConfig(
    num_samples=1, max_new_tokens=detect.max_new_tokens, temperature=0.0, stop_tokens=(tokenizer.eos_token_id,)
  )
  result = sample_and_verify(
    model.sampler,
    model.params,
    examples.prompts(frame),
    frame["response"].tolist(),
    [verifier] * len(frame),
    lambda ids: tokenizer.decode(ids, skip_special_tokens=True).strip(),
    greedy,
    sorted(data.buckets),
    detect.batch_size,
    pad,
    seed,
  )
  correct = result.correct[:, 0]
  datasets = frame["dataset"].to_numpy(object)
  return {
    "questions": len(frame),
    "accuracy": float(correct.mean()),
    "accuracy_by_dataset": {str(d): float(correct[datasets == d].mean()) for d in sorted(set(datasets))},
  }


def heldout_perplexity(model: Model, tokenizer: Any, data: Any) -> dict[str, Any]:
  """Perplexity of `data.heldout_text` (token-weighted, every next token of packed text)."""
  length = max(data.buckets)
  sequences = pack_corpus(loaders.load_corpus(data.heldout_text), tokenizer, length)[:MAX_SEQUENCES]
  stats = model.evaluator(
    model.params,
    lambda rows, _: batching.lm_batch(sequences[np.maximum(rows, 0)]),
    np.full(len(sequences), length),
    (length,),
  )
  nll = float(stats["nll_sum"].sum() / stats["tokens"].sum())
  return {"sequences": len(sequences), "tokens": int(stats["tokens"].sum()), "nll": nll, "perplexity": math.exp(nll)}
