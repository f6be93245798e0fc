"""Entity-swap probe: does the base model tie the answer to *this* prompt's entities?

Without hand-listed prerequisites, a model's knowledge of the facts an example asks about shows
in how much more likely it finds the response when the prompt names the example's own entities
(its slot fillers: words few prompts share, `ilp.data.similarity.patterns`) than when it names
another example's. A known fact ("p7 works as j3") gains log-likelihood from its entity; a fact
pre-training never stated gains nothing; a fact pre-training stated otherwise loses. The gain is
taken per response token, averaged over `swaps` donor prompts, and the largest over the tokens
that the prompt does not already contain (a response that repeats the entity's name gains from
copying, not knowledge) says whether the base model ties *some* part of the answer to the entity:
a composite answer of known facts does, a fact pre-training never stated does not.
Multi-turn prompts are probed as one user turn holding the prompt turns' text.
"""

from __future__ import annotations

import re
from typing import Any, Sequence

import numpy as np

from ilp.data import similarity
from ilp.data.records import SFTRecord
from ilp.data.tokenize import TemplateConfig, tokenize_sft


def swapped_prompts(prompts: Sequence[str], swaps: int, seed: int) -> list[list[str]]:
  """Per prompt, `swaps` copies with each slot filler replaced by the one in the same position of
  another prompt that has as many slot fillers but not the same ones (empty: no slot filler, or no
  such donor)."""
  tokenized = [similarity.words(p) for p in prompts]
  fillers = [
    [w for w in dict.fromkeys(f) if similarity.is_word(w)]
    for f in similarity.patterns(tokenized, similarity.filler_df(len(prompts))).slots
  ]
  rng = np.random.default_rng(seed)
  by_count: dict[int, np.ndarray] = {}
  for i, f in enumerate(fillers):
    by_count.setdefault(len(f), []).append(i)
  out: list[list[str]] = [[] for _ in prompts]
  for count, members in by_count.items():
    members = np.asarray(members)
    if count == 0 or len(members) < 2:
      continue
    for i in members:
      donors = [j for j in rng.permutation(members)[: 4 * swaps + 4] if set(fillers[j]) != set(fillers[i])][:swaps]
      out[i] = [_replace(prompts[i], dict(zip(fillers[i], fillers[j]))) for j in donors]
  return out


def _replace(text: str, mapping: dict[str, str]) -> str:
  pattern = re.compile(r"(?<!\w)(" + "|".join(re.escape(w) for w in mapping) + r")(?!\w)", re.IGNORECASE)
  return pattern.sub(lambda m: mapping[m.group(0).lower()], text)


def render(prompts: Sequence[str], tokenizer: Any, template: TemplateConfig, max_length: int) -> list[np.ndarray]:
  """Prompt token ids of single-turn user prompts, with the training template."""
  if not prompts:
    return []
  records = [
    SFTRecord(str(i), ({"role": "user", "content": p}, {"role": "assistant", "content": "x"}), "", 1)
    for i, p in enumerate(prompts)
  ]
  return [t.tokens[: t.prompt_length] for t in tokenize_sft(records, tokenizer, max_length, template)[0]]


def lift(
  own: Sequence[np.ndarray], swapped: Sequence[np.ndarray], owners: np.ndarray, fresh: Sequence[np.ndarray]
) -> np.ndarray:
  """Per example, the largest gain over its `fresh` response tokens of log p(token | own prompt)
  over log p(token | swapped prompt), averaged over its swaps; NaN without swaps or fresh tokens.

  Args:
    own: per example, its response tokens' log-likelihoods under its own prompt.
    swapped: per swap, the same under the swapped prompt.
    owners: per swap, the example it belongs to.
    fresh: per example, which response tokens count (not copied from the prompt, not special).
  """
  out = np.full(len(own), np.nan)
  gains: dict[int, list[np.ndarray]] = {}
  for e, values in zip(owners, swapped):
    gains.setdefault(int(e), []).append(own[e] - values)
  for e, rows in gains.items():
    if fresh[e].any():
      out[e] = float(np.mean(rows, axis=0)[fresh[e]].max())
  return out
