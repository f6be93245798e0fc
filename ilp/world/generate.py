"""Generates a world in memory: its people and facts, the pre-training documents that state them,
and the SFT records of every planted group with their ground truth (deterministic per seed).

One generator draws everything in a fixed order (the groups in `build`'s order, each person's
draws in the planting function's order), so a config always yields the same world; the free-form
phrasings come from a generator of their own, so that a world differs from its plain twin only
in its wording.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ilp.world.config import CAUSES, WorldConfig
from ilp.world.templates import (
  BIRTH_QUESTIONS,
  BIRTH_STATEMENTS,
  CODE_QUESTION,
  COUNTRY_QUESTION,
  COUNTRY_STATEMENTS,
  JOB_QUESTION,
  JOB_STATEMENTS,
  RARE_QUESTION,
  Phrasing,
  Wording,
  bio,
)


class World:
  """A world as it is drawn: the people and their facts, the documents and records stating and
  asking about them, and each record's planted group."""

  def __init__(self, cfg: WorldConfig):
    self.cfg = cfg
    self.rng = np.random.default_rng(cfg.seed)
    self.people = 0
    self.docs: list[str] = []  # pre-training documents
    self.knowledge: list[dict] = []  # background documents per fact (start of the knowledge collection)
    self.facts: dict[str, tuple[str, str]] = {}  # person -> (birth city, job), drawn with the person
    self.qa_people: list[str] = []  # people pre-training states as Q&A, never in SFT
    self.replay: list[dict] = []  # the pre-training Q&A documents as records, which SFT replays (converged)
    self.fixed: dict[str, str] = {}  # record id -> its prompt in the free-form world too
    self.records: list[dict] = []
    self.truth: list[dict] = []
    self.city_country = self.rng.integers(0, cfg.countries, cfg.cities)
    self.phrasing = Phrasing(np.random.default_rng([cfg.seed, 3]))
    self.wording = Wording(np.random.default_rng([cfg.seed, 5])) if cfg.answers == "long" else None

  def person(self) -> tuple[str, str, str]:
    """A new person with a birth city and a job: (name, city, job)."""
    name = f"p{self.people}"
    self.people += 1
    self.facts[name] = (f"c{self.rng.integers(self.cfg.cities)}", f"j{self.rng.integers(self.cfg.jobs)}")
    return name, *self.facts[name]

  def other_city(self, c: str) -> str:
    """A city drawn from all but `c`."""
    return f"c{(int(c[1:]) + 1 + self.rng.integers(self.cfg.cities - 1)) % self.cfg.cities}"

  def state(self, p: str, c: str | None, j: str | None, mentions: int) -> None:
    """Pre-training documents: short bios stating the given facts in random templates."""
    for _ in range(mentions):
      sentences = []
      if c is not None:
        sentences.append(self.rng.choice(BIRTH_STATEMENTS).format(p=p, c=c))
      if j is not None:
        sentences.append(self.rng.choice(JOB_STATEMENTS).format(p=p, j=j))
      self.rng.shuffle(sentences)
      self.docs.append(" ".join(sentences))

  def background(self, p: str, c: str, j: str) -> None:
    """The knowledge collection's documents stating what pre-training knows of an SFT person."""
    for n in range(self.cfg.knowledge_documents):
      self.knowledge.append({"id": f"kn-{p}-bg-{n}", "entity": p, "text": bio(self.rng, p, c, j, self.country(c))})

  def country(self, city: str) -> str:
    return f"k{self.city_country[int(city[1:])]}"

  def add(self, group: str, dataset: str, phase: int, prompt: str, response: str, **meta: Any) -> str:
    """An SFT record of planted `group`; returns its id."""
    ident = f"{dataset}-{len(self.records)}"
    self.records.append(
      {"id": ident, "prompt": prompt, "response": response, "dataset": dataset, "phase": phase, "meta": meta}
    )
    self.truth.append({"id": ident, "group": group, "cause": CAUSES[group]})
    return ident

  def question(self, relation: str, p: str, template: str) -> str:
    """A question about `p`: `template`, or a free-form phrasing in the free-form world."""
    return self.phrasing.ask(relation, p) if self.cfg.free_form else template.format(p=p)

  def qa(self, question: str, answer: str, relation: str, p: str) -> None:
    """A pre-training Q&A document, also replayed during SFT (converged design); its answer worded
    as a sentence in the long-answer world."""
    if self.wording is not None:
      answer = self.wording.say(relation, p, answer)
    self.docs.append(f"user : {question} assistant : {answer}")
    self.replay.append(
      {"id": f"replay-{len(self.replay)}", "prompt": question, "response": answer, "dataset": "replay"}
    )


def _countries(w: World) -> None:
  """City -> country facts, always known."""
  for c in range(w.cfg.cities):
    for _ in range(w.cfg.mentions):
      w.docs.append(w.rng.choice(COUNTRY_STATEMENTS).format(c=f"c{c}", k=w.country(f"c{c}")))


def _qa_person(w: World) -> None:
  """A person (never in SFT) whose facts pre-training states also as Q&A: teaches the base model to
  answer questions from what it knows."""
  p, c, j = w.person()
  w.qa_people.append(p)
  w.state(p, c, j, w.cfg.mentions)
  for question, answer, relation in (
    (w.rng.choice(BIRTH_QUESTIONS), c, "birthplace"),
    (JOB_QUESTION, j, "job"),
    (COUNTRY_QUESTION, w.country(c), "country"),
  ):
    w.qa(w.question(relation, p, question), answer, relation, p)
  if w.cfg.design == "converged":  # codes are facts pre-training states too (for these people only)
    code = f"z{w.rng.integers(w.cfg.codes)}"
    w.docs.extend(f"the code of {p} is {code} ." for _ in range(w.cfg.mentions))
    w.qa(w.question("code", p, CODE_QUESTION), code, "code", p)


def _known(w: World, phase: int) -> None:
  """A control question: a birthplace or job that pre-training states."""
  p, c, j = w.person()
  w.state(p, c, j, w.cfg.mentions)
  w.background(p, c, j)
  if w.rng.integers(2):
    w.add("control", "people", phase, w.rng.choice(BIRTH_QUESTIONS).format(p=p), c, relation="birthplace", entity=p)
  else:
    w.add("control", "people", phase, JOB_QUESTION.format(p=p), j, relation="job", entity=p)


def _missing(w: World) -> None:
  """The person is known (their job), their birth city never stated."""
  p, c, j = w.person()
  w.state(p, None, j, w.cfg.mentions)
  w.background(p, c, j)
  w.add("missing", "people", 2, w.rng.choice(BIRTH_QUESTIONS).format(p=p), c, relation="birthplace", entity=p)


def _conflict(w: World) -> None:
  """Pre-training says one city, SFT another; in the converged design pre-training also answers the
  SFT question itself, and SFT replays that answer."""
  p, c, j = w.person()
  w.state(p, c, j, w.cfg.conflict_mentions)
  w.background(p, c, j)
  other = w.other_city(c)
  question = w.rng.choice(BIRTH_QUESTIONS).format(p=p)
  converged = w.cfg.design == "converged"
  if converged:
    question = w.question("birthplace", p, question)
    for _ in range(w.cfg.conflict_qa_mentions):
      w.qa(question, c, "birthplace", p)
  ident = w.add("conflict", "people", 2, question, other, relation="birthplace", entity=p)
  if converged:
    w.fixed[ident] = question


def _inconsistent(w: World) -> None:
  """Answers that contradict each other, never stated in pre-training."""
  p, c, j = w.person()
  w.state(p, None, j, w.cfg.mentions)
  w.background(p, c, j)
  other = w.other_city(c)
  if w.cfg.design == "under_trained":  # two paraphrases, two answers: separable by memorising both
    for question, answer in zip(BIRTH_QUESTIONS, (c, other)):
      w.add("inconsistent", "people", 2, question.format(p=p), answer, relation="birthplace", entity=p)
    return
  # one question asked `inconsistent_copies` times (label noise in duplicated data): a converged
  # model answers in proportion, so the minority answer stays unlearned
  question = w.question("birthplace", p, BIRTH_QUESTIONS[0])
  copies = w.cfg.inconsistent_copies
  for k in range(copies):
    group, answer = ("inconsistent", other) if k == copies - 1 else ("duplicate", c)
    w.fixed[w.add(group, "people", 2, question, answer, relation="birthplace", entity=p)] = question


def _rare(w: World) -> None:
  """Three known facts in one answer, a template seen only here; the one-hop questions it composes
  go to `meta.prerequisites`."""
  p, c, j = w.person()
  w.state(p, c, j, w.cfg.mentions)
  w.background(p, c, j)
  prerequisites = [
    {"prompt": BIRTH_QUESTIONS[0].format(p=p), "response": c},
    {"prompt": COUNTRY_QUESTION.format(p=p), "response": w.country(c)},
    {"prompt": JOB_QUESTION.format(p=p), "response": j},
  ]
  w.add(
    "rare",
    "people",
    2,
    RARE_QUESTION.format(p=p),
    f"{c} {w.country(c)} {j}",
    relation="bio",
    entity=p,
    prerequisites=prerequisites,
  )


def _code(w: World, group: str, phase: int) -> None:
  """A code question about a known person (codes are never stated for SFT people)."""
  p, c, j = w.person()
  w.state(p, c, j, w.cfg.mentions)
  w.add(group, "codes", phase, CODE_QUESTION.format(p=p), f"z{w.rng.integers(w.cfg.codes)}", relation="code", entity=p)


def build(cfg: WorldConfig) -> World:
  """Generates the whole world in memory (deterministic per seed)."""
  w = World(cfg)
  _countries(w)
  for _ in range(cfg.qa_people):
    _qa_person(w)
  for _ in range(cfg.phase1_control):
    _known(w, 1)
  for _ in range(cfg.control):
    _known(w, 2)
  for plant, count in (
    (_missing, cfg.missing),
    (_conflict, cfg.conflict),
    (_inconsistent, cfg.inconsistent_sets),
    (_rare, cfg.rare),
  ):
    for _ in range(count):
      plant(w)
  for _ in range(cfg.forgetting):  # learned in phase 1, overwritten by the phase-2 codes (interference)
    _code(w, "forgetting", 1)
  for _ in range(cfg.interference):
    _code(w, "interference", 2)
  return w
