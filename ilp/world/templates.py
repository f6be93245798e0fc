"""The words a world is written in: statement and question templates, the free-form paraphrases,
and the vocabulary they and the entities make (the world's word-level tokenizer)."""

from __future__ import annotations

import numpy as np

from ilp.data.tokenizer_training import SPECIAL
from ilp.world.config import WorldConfig

BIRTH_STATEMENTS = (
  "{p} was born in {c} .",
  "{p} comes from {c} .",
  "the birthplace of {p} is {c} .",
  "{p} grew up in {c} .",
)
JOB_STATEMENTS = ("{p} works as a {j} .", "{p} is a {j} by trade .", "the job of {p} is {j} .")
COUNTRY_STATEMENTS = ("{c} is a city in {k} .", "{c} lies in {k} .", "the country of {c} is {k} .")
GENERAL_STATEMENTS = (
  "the weather in {c} is {w} today .",
  "many people visit {c} in {m} .",
  "the market of {c} opens in {m} .",
  "{c} is {w} in {m} .",
)
BIRTH_QUESTIONS = ("where was {p} born ?", "what is the birthplace of {p} ?")
JOB_QUESTION = "what is the job of {p} ?"
COUNTRY_QUESTION = "in which country was {p} born ?"
CODE_QUESTION = "what is the code of {p} ?"
RARE_QUESTION = "tell me the birthplace , the country and the job of {p} ."
# The free-form world's questions: a stem per relation inside a wrapper, so that every question
# kind has more than a hundred phrasings and no prompt pattern is frequent.
PARAPHRASES = {
  "birthplace": (
    "where was {p} born ?",
    "what is the birthplace of {p} ?",
    "in which city was {p} born ?",
    "which city does {p} come from ?",
    "where did {p} grow up ?",
    "name the home city of {p} .",
  ),
  "country": (
    "in which country was {p} born ?",
    "which country does {p} come from ?",
    "name the home country of {p} .",
  ),
  "job": (
    "what is the job of {p} ?",
    "what does {p} do for a living ?",
    "what is {p} by trade ?",
    "which job does {p} have ?",
    "name the occupation of {p} .",
  ),
  "code": (
    "what is the code of {p} ?",
    "which code belongs to {p} ?",
    "give the code of {p} .",
    "tell me the code for {p} .",
    "what code does {p} have ?",
  ),
  "bio": (
    "tell me the birthplace , the country and the job of {p} .",
    "give the home city , the home country and the occupation of {p} .",
    "describe {p} : city of birth , country and job .",
    "who is {p} ? city , country , job .",
  ),
}
PREFIXES = (
  "",
  "please tell me :",
  "quick question :",
  "i would like to know :",
  "can you answer this :",
  "one more thing :",
)
SUFFIXES = ("", "thanks .", "if you know .", "answer briefly .")
# The long-answer world's responses: the fact in a sentence, in one of a few wordings per relation.
COUNTRY_STATEMENTS_OF_PERSON = ("{p} was born in {k} .", "{p} comes from {k} .", "the home country of {p} is {k} .")
CODE_STATEMENTS = ("the code of {p} is {z} .", "{p} has the code {z} .", "{p} goes by the code {z} .")
# one wording: the rare template's words are rare among the answers, so they count as facts
BIO_STATEMENTS = ("{p} was born in {c} , a city in {k} , and works as a {j} .",)
WEATHER = ("sunny", "rainy", "cold", "warm", "windy")
MONTHS = ("january", "april", "july", "october")
ROLES = ("user", "assistant", ":")


def bio(rng: np.random.Generator, p: str, c: str, j: str, country: str) -> str:
  """A short document stating a person's birth city, job and the city's country, each in a random template."""
  return (
    f"{rng.choice(BIRTH_STATEMENTS).format(p=p, c=c)} {rng.choice(JOB_STATEMENTS).format(p=p, j=j)} "
    f"{rng.choice(COUNTRY_STATEMENTS).format(c=c, k=country)}"
  )


def vocabulary(cfg: WorldConfig, people: int) -> list[str]:
  """Every word a world of `people` people can write: the special tokens, the templates' words, then the entities."""
  words = set()
  for templates in (
    BIRTH_STATEMENTS,
    JOB_STATEMENTS,
    COUNTRY_STATEMENTS,
    GENERAL_STATEMENTS,
    BIRTH_QUESTIONS,
    (JOB_QUESTION, COUNTRY_QUESTION, CODE_QUESTION, RARE_QUESTION),
  ):
    for t in templates:
      words.update(w for w in t.split() if not w.startswith("{"))
  words.update(WEATHER + MONTHS + ROLES)
  if cfg.answers == "long":
    for t in CODE_STATEMENTS + BIO_STATEMENTS + COUNTRY_STATEMENTS_OF_PERSON:
      words.update(w for w in t.split() if not w.startswith("{"))
  if cfg.free_form:
    for phrase in [t for stems in PARAPHRASES.values() for t in stems] + list(PREFIXES + SUFFIXES):
      words.update(w for w in phrase.split() if not w.startswith("{"))
  entities = (
    [f"p{i}" for i in range(people)]
    + [f"c{i}" for i in range(cfg.cities)]
    + [f"k{i}" for i in range(cfg.countries)]
    + [f"j{i}" for i in range(cfg.jobs)]
    + [f"z{i}" for i in range(cfg.codes)]
  )
  return list(SPECIAL) + sorted(words) + entities


class Phrasing:
  """Draws free-form questions: a random stem of the relation in a random wrapper; a person asked
  again gets a stem not yet used for them (paraphrased near-duplicates)."""

  def __init__(self, rng: np.random.Generator):
    self.rng = rng
    self.used: dict[tuple[str, str], set[int]] = {}

  def ask(self, relation: str, p: str) -> str:
    stems = PARAPHRASES[relation]
    used = self.used.setdefault((relation, p), set())
    fresh = [k for k in range(len(stems)) if k not in used] or list(range(len(stems)))
    k = int(self.rng.choice(fresh))
    used.add(k)
    words = [self.rng.choice(PREFIXES), stems[k].format(p=p), self.rng.choice(SUFFIXES)]
    return " ".join(w for w in words if w)

  def rewrite(self, records: list[dict], fixed: dict[str, str] | None = None) -> list[dict]:
    """The records with free-form prompts and no metadata (a user's plain {prompt, response}); a
    record whose id `fixed` lists keeps that prompt (duplicates, questions replay also asks)."""
    fixed = fixed or {}
    return [
      {**rec, "prompt": fixed.get(rec["id"]) or self.ask(rec["meta"]["relation"], rec["meta"]["entity"]), "meta": {}}
      for rec in records
    ]


class Wording:
  """Words answers as sentences (the long-answer world): the fact in a random wording of its
  relation; a person answered again gets a wording not yet used for them, so agreeing
  near-duplicates are paraphrases of one another."""

  SENTENCES = {
    "birthplace": lambda p, a: (BIRTH_STATEMENTS, {"p": p, "c": a}),
    "job": lambda p, a: (JOB_STATEMENTS, {"p": p, "j": a}),
    "country": lambda p, a: (COUNTRY_STATEMENTS_OF_PERSON, {"p": p, "k": a}),
    "code": lambda p, a: (CODE_STATEMENTS, {"p": p, "z": a}),
    "bio": lambda p, a: (BIO_STATEMENTS, dict(zip("pckj", [p, *a.split()]))),
  }

  def __init__(self, rng: np.random.Generator):
    self.rng = rng
    self.used: dict[tuple[str, str], set[int]] = {}

  def say(self, relation: str, p: str, answer: str) -> str:
    templates, slots = self.SENTENCES[relation](p, answer)
    used = self.used.setdefault((relation, p), set())
    fresh = [k for k in range(len(templates)) if k not in used] or list(range(len(templates)))
    k = int(self.rng.choice(fresh))
    used.add(k)
    return templates[k].format(**slots)

  def rewrite(self, records: list[dict]) -> list[dict]:
    """The records with their answers worded as sentences (records carry `meta.relation` and `meta.entity`)."""
    return [
      {**rec, "response": self.say(rec["meta"]["relation"], rec["meta"]["entity"], rec["response"])} for rec in records
    ]
