"""When two answers say the same: one definition for every part of the method that asks (config
section `detect.answers`), so that a distractor, a contradiction and a pass agree on it.

Two answers are equivalent when they are equal once normalised (SQuAD normalisation). Answers of
more than `few_words` words are also equivalent when they state the same *facts* in other words,
or, when their facts do not contradict, when their ROUGE-L F-measure is at least `rouge_l` or the
probed model embeds them alike. An answer's facts are its rare words: those in fewer than
`fact_share` of the data's answers (names, places, numbers; `ilp.data.similarity.filler_df`, the
rule that finds a prompt's slot fillers). In a short answer the one differing word is the answer
("paris" / "lyon"), so only equality counts. A long answer can be reworded without changing what
it says ("p5 was born in c3 ." / "the birthplace of p5 is c3 ."), and can change what it says in
one word ("p5 was born in c7 ."), at a ROUGE-L (0.8) that no threshold separates from a
paraphrase's, and at embeddings as close; its facts separate the two. Facts contradict when each
answer states one to `swap_facts` facts the other does not (a swap; `ilp.data.similarity.
different_things` asks the same of prompts); answers that differ in more rare words on both sides
are reworded ("p5 is a baker by trade ." / "p5 earns a living baking bread ."), and their ROUGE-L
or embeddings decide. The embedding test is the centred cosine of the answers' mean final hidden
states under the probed model (centred on the data's distinct answers, as
`ilp.data.similarity.embedding_pairs` centres prompts) at or above `embedding`. Embeddings are
attached where a model or its stored embeddings are at hand (`with_embeddings`): detection's
multiple-choice options (any text, by the probed model) and III (the references, by detection's
`response_embedding`). The `equivalent` verifier grades samples without them: embedding every
sample would cost a forward pass each.

Used by: the multiple-choice probe (a sampled wrong answer that says the same as the reference or
an earlier option is no distractor), inconsistent data (III: near-duplicate questions contradict
each other only when their answers are *not* equivalent), the `equivalent` verifier, and the
diagnosis' answer kinds and corpus evidence (`content`: what a long answer adds to its prompt).
"""

from __future__ import annotations

import copy
import dataclasses
import re
from typing import Callable, Iterable, Sequence

import numpy as np

from ilp.data import similarity
from ilp.scoring.verifiers import normalize, rouge_l
from ilp.typed import check


@dataclasses.dataclass(frozen=True)
class AnswersConfig:
  """When two answers say the same (config section `detect.answers`)."""

  rouge_l: float = 0.9  # long answers whose facts agree say the same at this ROUGE-L F-measure or more
  few_words: int = 3  # answers of at most this many words say the same only when equal once normalised
  fact_share: float = 0.03  # a word in fewer than this share of the data's answers is a fact (at least 3)
  swap_facts: int = 2  # answers that each state 1 to this many facts the other does not contradict (a swap)
  embedding: float = 0.9  # long answers whose facts do not contradict say the same at this centred cosine (0: off)

  def __post_init__(self):
    check(0 < self.rouge_l <= 1, "rouge_l", f"must lie in (0, 1], got {self.rouge_l}")
    check(self.few_words >= 0, "few_words", f"must be >= 0, got {self.few_words}")
    check(0 < self.fact_share <= 1, "fact_share", f"must lie in (0, 1], got {self.fact_share}")
    check(self.swap_facts >= 1, "swap_facts", f"must be >= 1, got {self.swap_facts}")
    check(0 <= self.embedding <= 1, "embedding", f"must lie in [0, 1] (0: off), got {self.embedding}")


def _words(text: str) -> list[str]:
  return [w for w in similarity.words(text) if similarity.is_word(w)]


class Answers:
  """The equivalence of answers, fitted to a data set's answers (which words are facts)."""

  def __init__(self, cfg: AnswersConfig = AnswersConfig(), answers: Iterable[str] = ()):
    self.cfg = cfg
    distinct = {frozenset(_words(a)) for a in answers}
    self.df: dict[str, int] = {}
    for words in distinct:
      for w in words:
        self.df[w] = self.df.get(w, 0) + 1
    self.rare_below = similarity.filler_df(len(distinct), min_share=cfg.fact_share)
    self._embed: Callable[[Sequence[str]], np.ndarray] | None = None
    self._vectors: dict[str, np.ndarray] = {}
    self._centre = np.zeros(0, np.float32)

  def with_embeddings(
    self, texts: Sequence[str], vectors: np.ndarray, embed: Callable[[Sequence[str]], np.ndarray] | None = None
  ) -> "Answers":
    """A copy that also compares answers by embedding (when `cfg.embedding` > 0): `vectors[k]`
    embeds the data's answer `texts[k]`, and the mean over its distinct texts is the centre;
    `embed` embeds other texts on demand (rows of a [texts, dims] array). Without `embed`, a pair
    with a text not given is compared without embeddings."""
    out = copy.copy(self)
    out._embed, out._vectors = embed, {}
    if self.cfg.embedding > 0 and len(texts):
      out._vectors.update(zip(texts, np.asarray(vectors, np.float32)))
      out._centre = np.mean(list(out._vectors.values()), axis=0)
    return out

  def prepare(self, texts: Iterable[str]) -> None:
    """Embeds, in one batch, the texts not embedded yet (so that comparisons need no model call each)."""
    missing = list(dict.fromkeys(t for t in texts if t not in self._vectors))
    if self._embed is not None and self._centre.size and missing:
      self._vectors.update(zip(missing, np.asarray(self._embed(missing), np.float32)))

  def vector(self, text: str) -> np.ndarray | None:
    """The text's embedding (uncentred) when known or embeddable, else None."""
    self.prepare((text,))
    return self._vectors.get(text)

  def cosine(self, a: str, b: str) -> float | None:
    """The centred cosine of the two answers' embeddings; None without embeddings for both."""
    if not self._centre.size:
      return None
    self.prepare((a, b))
    if a not in self._vectors or b not in self._vectors:
      return None
    u, w = self._vectors[a] - self._centre, self._vectors[b] - self._centre
    return float(u @ w / max(float(np.linalg.norm(u) * np.linalg.norm(w)), 1e-12))

  def long(self, text: str) -> bool:
    return len(normalize(text).split()) > self.cfg.few_words

  def facts(self, text: str) -> frozenset[str]:
    """The answer's rare words (in fewer than `fact_share` of the fitted answers)."""
    return frozenset(w for w in _words(text) if self.df.get(w, 0) < self.rare_below)

  def equivalent(self, a: str, b: str) -> bool:
    """Whether answers `a` and `b` say the same (the module's definition)."""
    if normalize(a) == normalize(b):
      return True
    if not (self.long(a) and self.long(b)):
      return False
    left, right = self.facts(a), self.facts(b)
    if left and left == right:
      return True
    if self.contradict(left, right):
      return False
    if rouge_l(a, b) >= self.cfg.rouge_l:
      return True
    cosine = self.cosine(a, b)
    return cosine is not None and cosine >= self.cfg.embedding

  def contradict(self, left: frozenset[str], right: frozenset[str]) -> bool:
    """Whether two answers' facts contradict: each states one the other does not, and at most
    `swap_facts` (a fact swapped for another: "born in c3" / "born in c7"); answers that differ in
    more facts are reworded, and their ROUGE-L or embeddings decide."""
    only_left, only_right = len(left - right), len(right - left)
    return 0 < only_left <= self.cfg.swap_facts and 0 < only_right <= self.cfg.swap_facts

  def pairwise(self, a: Sequence[str], b: Sequence[str]) -> np.ndarray:
    """`equivalent(a[k], b[k])` for every k, each distinct pair of texts scored once."""
    cache: dict[tuple[str, str], bool] = {}
    out = np.zeros(len(a), bool)
    for k, pair in enumerate(zip(a, b)):
      if pair not in cache:
        cache[pair] = self.equivalent(*pair)
      out[k] = cache[pair]
    return out

  def added(self, answer: str, prompt: str) -> list[str]:
    """A long answer's facts that its prompt does not name (what it adds to the question), in
    order; none for a short answer."""
    if not self.long(answer):
      return []
    asked, facts = set(similarity.words(prompt)), self.facts(answer)
    return [w for w in dict.fromkeys(_words(answer)) if w in facts and w not in asked]

  def lead_in(self, answer: str, prompt: str) -> str:
    """A long answer's words before the first fact it adds to its prompt ("the code of p5 is" in
    "the code of p5 is z3 ."), as written; "" for a short answer or one that adds no fact or starts
    with it. A model that continues it writes an answer to the same question in the same form."""
    added = self.added(answer, prompt)
    if not added:
      return ""
    found = re.search(rf"(?<![^\W_]){re.escape(added[0])}(?![^\W_])", answer, re.IGNORECASE)
    return answer[: found.start()].rstrip() if found else ""

  def content(self, answer: str, prompt: str) -> list[str]:
    """What an answer says (`similarity.words`): its added facts when it has any, else all its words."""
    return self.added(answer, prompt) or similarity.words(answer)

  def key(self, answer: str, prompt: str) -> str:
    """The answer's identity for counting answers and pooling kinds: its added facts when it has
    any (paraphrases of one fact share a key), else the normalised answer."""
    added = self.added(answer, prompt)
    return " ".join(sorted(added)) if added else normalize(answer)
