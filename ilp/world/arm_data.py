"""What the intervention arms and the capability check read of a world, drawn after it is built
with generators of their own (so the corpora, SFT data and tokenizer do not change, and every
word is already in the vocabulary):

- the knowledge collection the continual pre-training arms retrieve from: background documents
  stating the pre-training facts of the SFT people, documents stating the supervised answer where
  pre-training never states it or contradicts it (the conflict group's SFT city, every code), and
  background documents about the people outside SFT (distractors). A conflict person thus has
  documents for both cities, and the calibration arm has to keep only the supervised one;
- dev and held-out questions, one `people` question each (birthplace, job or the rare bio
  question) about the people pre-training states as Q&A and SFT never asks about, split in two
  halves. The `codes` data set has no dev split: codes are never stated in pre-training, so a
  held-out code question has no answer a model could know;
- general text about the world's places, for mixing into continual pre-training.
"""

from __future__ import annotations

import numpy as np

from ilp.world.config import WorldConfig
from ilp.world.generate import World
from ilp.world.templates import (
  BIRTH_QUESTIONS,
  BIRTH_STATEMENTS,
  GENERAL_STATEMENTS,
  JOB_QUESTION,
  MONTHS,
  RARE_QUESTION,
  WEATHER,
  bio,
)


def knowledge(w: World, rng: np.random.Generator) -> list[dict]:
  """The knowledge collection: the SFT people's background documents, the supervised answers
  pre-training does not state, and the Q&A people's background documents (distractors)."""
  docs = list(w.knowledge)
  n = w.cfg.knowledge_documents
  for rec, truth in zip(w.records, w.truth):
    p = rec["meta"]["entity"]
    c, j = w.facts[p]
    if truth["group"] == "conflict":
      for k in range(n):
        docs.append(
          {"id": f"kn-{p}-sft-{k}", "entity": p, "text": bio(rng, p, rec["response"], j, w.country(rec["response"]))}
        )
    elif truth["group"] in ("forgetting", "interference"):
      for k in range(n):
        docs.append(
          {
            "id": f"kn-{p}-code-{k}",
            "entity": p,
            "text": f"the code of {p} is {rec['response']} . {rng.choice(BIRTH_STATEMENTS).format(p=p, c=c)}",
          }
        )
  for p in w.qa_people:
    c, j = w.facts[p]
    docs.extend({"id": f"kn-{p}-{k}", "entity": p, "text": bio(rng, p, c, j, w.country(c))} for k in range(n))
  return docs


def questions(w: World, rng: np.random.Generator) -> tuple[list[dict], list[dict]]:
  """Dev and held-out records (data set `people`): the first half of the Q&A people make the dev
  split (watched by resampling and early stopping), the second the held-out capability check."""
  half = len(w.qa_people) // 2
  out: tuple[list[dict], list[dict]] = ([], [])
  for k, p in enumerate(w.qa_people):
    c, j = w.facts[p]
    kind = rng.integers(3)
    prompt, response, relation = (
      (rng.choice(BIRTH_QUESTIONS).format(p=p), c, "birthplace"),
      (JOB_QUESTION.format(p=p), j, "job"),
      (RARE_QUESTION.format(p=p), f"{c} {w.country(c)} {j}", "bio"),
    )[kind]
    split, name = (out[0], "dev") if k < half else (out[1], "heldout")
    split.append(
      {
        "id": f"{name}-{len(split)}",
        "prompt": prompt,
        "response": response,
        "dataset": "people",
        "phase": 2,
        "meta": {"relation": relation, "entity": p},
      }
    )
  return out


def general_corpus(cfg: WorldConfig, rng: np.random.Generator) -> list[str]:
  """Text about the world's places without any planted person fact (for mixing into CPT)."""
  return [
    rng.choice(GENERAL_STATEMENTS).format(c=f"c{rng.integers(cfg.cities)}", w=rng.choice(WEATHER), m=rng.choice(MONTHS))
    for _ in range(cfg.general_documents)
  ]
