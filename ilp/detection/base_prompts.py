"""How the base model is asked (`detect.base_format`): as SFT asked the fine-tuned model, or as a
base language model reads a question.

"chat" renders every question the base model gets (the example's prompt, its entity swaps and its
prerequisite questions) with `data.template`, as SFT did: right when the base model is an instruct
model, or the world's, pre-trained on that very layout. A pre-trained-only checkpoint (Llama-3.2-1B,
OLMo-2-1B, Qwen2.5-0.5B) has never seen a chat template; asked through one it answers the
template, not the question, so "blind" and "base wrong" hold almost everywhere and inflate cause I.
"plain" asks it the way base models are evaluated (lm-evaluation-harness's QA layout): optional
`base_shots` solved examples, then the question:

    Question: <another example's question>
    Answer: <its answer>

    Question: <the question>
    Answer:

The shots are other SFT records, drawn per example (seeded by its id) among those whose question
differs from its own, so a near-duplicate never gives the answer away; every question of one
example (its entity swaps, its prerequisite questions) gets the example's shots.
"""

from __future__ import annotations

import zlib
from typing import Any, Callable, Sequence

import numpy as np

from ilp.detection import entities
from ilp.scoring.verifiers import normalize

QUESTION = "Question: {question}\nAnswer:"
SHOT = QUESTION + " {answer}\n\n"

Render = Callable[[Sequence[str], Sequence[int]], list[np.ndarray]]  # (questions, owning examples) -> prompt ids


def shots(ids: Sequence[str], prompts: Sequence[str], k: int, seed: int) -> list[list[int]]:
  """Per example, `k` other examples (indices) whose normalised prompt differs from its own, drawn
  one at a time (expected O(k) per example, not a permutation of the whole set)."""
  keys = np.asarray([normalize(p) for p in prompts], dtype=object)
  n, out = len(ids), []
  for e, ident in enumerate(ids):
    rng = np.random.default_rng([seed, zlib.crc32(ident.encode())])
    picked: list[int] = []
    seen: set[int] = set()
    while len(picked) < k and len(seen) < n:
      j = int(rng.integers(n))
      if j not in seen:
        seen.add(j)
        if keys[j] != keys[e]:
          picked.append(j)
    out.append(picked)
  return out


def renderer(
  format: str,
  tokenizer: Any,
  template: Any,
  max_length: int,
  solved: Sequence[tuple[str, str]] = (),
  chosen: Sequence[Sequence[int]] = (),
) -> Render:
  """A function rendering questions to prompt ids in `format`: "chat" with `template` (as SFT);
  "plain" in the QUESTION layout after the owning example's shots (`chosen[owner]`, indices into
  `solved` (question, answer) pairs), starting with BOS when the tokenizer has one, the earliest
  shots dropped first when the prompt would exceed `max_length` tokens."""
  if format == "chat":
    return lambda questions, owners: entities.render(list(questions), tokenizer, template, max_length)
  bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []

  def ids(text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])

  def render(questions: Sequence[str], owners: Sequence[int]) -> list[np.ndarray]:
    out = []
    for question, owner in zip(questions, owners):
      context = [
        ids(SHOT.format(question=solved[j][0], answer=solved[j][1])) for j in (chosen[owner] if chosen else ())
      ]
      asked = ids(QUESTION.format(question=question))
      while context and len(bos) + sum(map(len, context)) + len(asked) > max_length:
        context.pop(0)
      out.append(np.asarray(bos + [t for shot in context for t in shot] + asked, np.int32)[-max_length:])
    return out

  return render
