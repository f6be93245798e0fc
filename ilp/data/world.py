"""The ILP world: a synthetic knowledge base, corpora and SFT data with planted causes of ILP.

Fictional people (`p<i>`), cities (`c<i>`), countries (`k<i>`), jobs (`j<i>`) and codes
(`z<i>`) with three relations (person -> birth city -> country; person -> job) and a code table.
A pre-training corpus states a chosen subset of facts in several templates and frequencies (and,
for people who never appear in SFT, as questions and answers, so that the base model can answer
from what it knows, as pre-trained LLMs can); the SFT data asks questions about them, in two domains (`people`, `codes`) and two phases, with
groups planted in configured sizes:

- control: one-hop questions about facts the base model saw often and consistently;
- missing (I): a person the base model knows, asked for a fact pre-training never states;
- conflict (II): the SFT answer contradicts a fact stated often in pre-training;
- inconsistent (III): one question asked several times with contradicting answers; the group is
  the minority answer, `duplicate` the majority's copies;
- forgetting (IV): phase-1 codes that phase-2 codes (same prompt pattern, other people and codes)
  interfere with after they were learned;
- rare (V): a rare compositional question (three known facts in one answer) with few examples;
  its `meta.prerequisites` lists the one-hop questions it composes, so detection can probe them;
- interference: the phase-2 code questions that cause IV. Their codes, like the missing group's
  birthplaces, are facts pre-training never states, so when they stay unlearned the cause is I.

Two designs (`design`). `converged` (the default) plants causes by mechanisms that survive
training to convergence, each one that real SFT data has:
- II: pre-training states the contradicted fact often, also as Q&A in the SFT question's own
  words (`conflict_qa_mentions`), and SFT replays pre-training's Q&A documents (`replay.jsonl`):
  the supervised answer competes with the replayed one for as long as SFT runs (replay of
  pre-training data during fine-tuning: Ouyang et al. 2022; Scialom et al. 2022);
- III: duplicated questions with label noise (one of `inconsistent_copies` copies carries another
  answer; Northcutt et al. 2021 on label errors): the loss has a floor, and a converged model
  gives the majority answer;
- IV: sequential phases with no replay of the earlier SFT data (the paper's left-side forgetting);
- the code table is stated in pre-training for the Q&A people, so code tokens are ones the base
  model has produced before.
`under_trained` is the world of issues 1-21 (paraphrased inconsistent pairs, no replay, no stated
codes), kept for comparison: most of what it leaves unlearned is removed by more epochs.

For the intervention arms the world also writes, drawn with a generator of their own after the
rest is built (so the corpora, SFT data and tokenizer do not change, and every word is already in
the vocabulary):

- `knowledge.jsonl`, the collection the continual pre-training arms retrieve from: background
  documents stating the pre-training facts of the SFT people, documents stating the supervised
  answer where pre-training never states it or contradicts it (the conflict group's SFT city, every
  code), and background documents about the people outside SFT (distractors). A conflict person
  thus has documents for both cities, and the calibration arm has to keep only the supervised one;
- `dev.jsonl` and `heldout.jsonl`, one `people` question each (birthplace, job or the rare bio
  question) about the people pre-training states as Q&A and SFT never asks about, split in two
  halves. The `codes` data set has no dev split: codes are never stated in pre-training, so a
  held-out code question has no answer a model could know.

With `free_form`, every question (SFT, dev, held-out, and the pre-training Q&A documents) is
drawn from `PARAPHRASES` inside a random wrapper (over a hundred phrasings per question kind, so
no prompt pattern is frequent), the two members of an inconsistent pair get different stems
(paraphrased near-duplicates), and the SFT records carry no metadata (no `meta.prerequisites`):
what a user's plain {prompt, response} data looks like. The facts, answers and planted groups
are the same as without it.

Everything is written in the formats a user would bring (JSONL SFT records, text corpora, an HF
tokenizer directory). The planted cause of every example goes to `ground_truth.jsonl`, which no
pipeline code reads; only evaluation scripts join it back.
"""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import numpy as np

from ilp import fileio
from ilp.typed import check

GROUPS = ("control", "missing", "conflict", "inconsistent", "duplicate", "forgetting", "rare", "interference")
CAUSES = {"control": None, "missing": "I", "conflict": "II", "inconsistent": "III", "duplicate": "III",
          "forgetting": "IV", "rare": "V", "interference": "I"}
DESIGNS = ("converged", "under_trained")
GROUND_TRUTH = "ground_truth.jsonl"

BIRTH_STATEMENTS = ("{p} was born in {c} .", "{p} comes from {c} .", "the birthplace of {p} is {c} .",
                    "{p} grew up in {c} .")
JOB_STATEMENTS = ("{p} works as a {j} .", "{p} is a {j} by trade .", "the job of {p} is {j} .")
COUNTRY_STATEMENTS = ("{c} is a city in {k} .", "{c} lies in {k} .", "the country of {c} is {k} .")
GENERAL_STATEMENTS = ("the weather in {c} is {w} today .", "many people visit {c} in {m} .",
                      "the market of {c} opens in {m} .", "{c} is {w} in {m} .")
BIRTH_QUESTIONS = ("where was {p} born ?", "what is the birthplace of {p} ?")
JOB_QUESTION = "what is the job of {p} ?"
COUNTRY_QUESTION = "in which country was {p} born ?"
CODE_QUESTION = "what is the code of {p} ?"
RARE_QUESTION = "tell me the birthplace , the country and the job of {p} ."
# The free-form world's questions: a stem per relation inside a wrapper, so that every question
# kind has more than a hundred phrasings and no prompt pattern is frequent.
PARAPHRASES = {
    "birthplace": ("where was {p} born ?", "what is the birthplace of {p} ?", "in which city was {p} born ?",
                   "which city does {p} come from ?", "where did {p} grow up ?", "name the home city of {p} ."),
    "country": ("in which country was {p} born ?", "which country does {p} come from ?",
                "name the home country of {p} ."),
    "job": ("what is the job of {p} ?", "what does {p} do for a living ?", "what is {p} by trade ?",
            "which job does {p} have ?", "name the occupation of {p} ."),
    "code": ("what is the code of {p} ?", "which code belongs to {p} ?", "give the code of {p} .",
             "tell me the code for {p} .", "what code does {p} have ?"),
    "bio": ("tell me the birthplace , the country and the job of {p} .",
            "give the home city , the home country and the occupation of {p} .",
            "describe {p} : city of birth , country and job .", "who is {p} ? city , country , job ."),
}
PREFIXES = ("", "please tell me :", "quick question :", "i would like to know :", "can you answer this :",
            "one more thing :")
SUFFIXES = ("", "thanks .", "if you know .", "answer briefly .")
WEATHER = ("sunny", "rainy", "cold", "warm", "windy")
MONTHS = ("january", "april", "july", "october")
SPECIAL = ("<pad>", "<s>", "</s>", "<unk>")
ROLES = ("user", "assistant", ":")


@dataclasses.dataclass(frozen=True)
class WorldConfig:
  """Sizes and frequencies of a world (config section `world`); every count is a number of SFT
  examples unless noted. The defaults are the demo's world."""
  seed: int = 0
  cities: int = 40
  countries: int = 15
  jobs: int = 12
  codes: int = 40
  control: int = 200
  missing: int = 30
  conflict: int = 30
  inconsistent_sets: int = 15     # questions asked several times in SFT with contradicting answers (III)
  inconsistent_copies: int = 4    # records per set: copies - 1 give the majority answer, one the minority (converged)
  forgetting: int = 40
  interference: int = 400         # phase-2 code questions about other people
  rare: int = 12
  phase1_control: int = 40        # known-fact questions in phase 1, so phase 1 is not codes only
  qa_people: int = 150            # people (never in SFT) whose facts pre-training also states as Q&A
  mentions: int = 10              # documents stating each known fact
  conflict_mentions: int = 16     # ... for the facts that SFT contradicts
  conflict_qa_mentions: int = 12  # Q&A documents stating a contradicted fact in the SFT question's words (converged)
  general_documents: int = 2000
  knowledge_documents: int = 3    # documents per fact and person in the knowledge collection
  free_form: bool = False         # questions in many paraphrases (PARAPHRASES), no metadata in the SFT records
  design: str = "converged"       # one of DESIGNS: causes that survive convergence, or the under-trained world

  def __post_init__(self):
    for field in dataclasses.fields(self):
      if field.name not in ("seed", "free_form", "design"):
        check(getattr(self, field.name) >= 0, field.name, f"must be >= 0, got {getattr(self, field.name)}")
    for name in ("cities", "countries", "jobs", "codes", "mentions", "conflict_mentions"):
      check(getattr(self, name) >= 1, name, f"must be >= 1, got {getattr(self, name)}")
    check(self.inconsistent_copies >= 2, "inconsistent_copies", f"must be >= 2, got {self.inconsistent_copies}")
    check(self.design in DESIGNS, "design", f"'{self.design}' is not one of {DESIGNS}")


def vocabulary(cfg: WorldConfig, people: int) -> list[str]:
  words = set()
  for templates in (BIRTH_STATEMENTS, JOB_STATEMENTS, COUNTRY_STATEMENTS, GENERAL_STATEMENTS, BIRTH_QUESTIONS,
                    (JOB_QUESTION, COUNTRY_QUESTION, CODE_QUESTION, RARE_QUESTION)):
    for t in templates:
      words.update(w for w in t.split() if not w.startswith("{"))
  words.update(WEATHER + MONTHS + ROLES)
  if cfg.free_form:
    for phrase in [t for stems in PARAPHRASES.values() for t in stems] + list(PREFIXES + SUFFIXES):
      words.update(w for w in phrase.split() if not w.startswith("{"))
  entities = ([f"p{i}" for i in range(people)] + [f"c{i}" for i in range(cfg.cities)] +
              [f"k{i}" for i in range(cfg.countries)] + [f"j{i}" for i in range(cfg.jobs)] +
              [f"z{i}" for i in range(cfg.codes)])
  return list(SPECIAL) + sorted(words) + entities


def save_tokenizer(words: list[str], directory: str) -> None:
  """A word-level HF tokenizer over the world's vocabulary (built offline)."""
  import transformers
  from tokenizers import Tokenizer, models, pre_tokenizers
  core = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
  core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
  tokenizer = transformers.PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", bos_token="<s>",
                                                   eos_token="</s>", unk_token="<unk>")
  tokenizer.save_pretrained(directory)


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
    return [{**rec, "prompt": fixed.get(rec["id"]) or self.ask(rec["meta"]["relation"], rec["meta"]["entity"]),
             "meta": {}} for rec in records]


class _Builder:
  def __init__(self, cfg: WorldConfig):
    self.cfg = cfg
    self.rng = np.random.default_rng(cfg.seed)
    self.people = 0
    self.docs: list[str] = []          # pre-training documents
    self.knowledge: list[dict] = []    # background documents per fact (start of the knowledge collection)
    self.facts: dict[str, tuple[str, str]] = {}  # person -> (birth city, job), drawn with the person
    self.qa_people: list[str] = []     # people pre-training states as Q&A, never in SFT
    self.replay: list[dict] = []       # the pre-training Q&A documents as records, which SFT replays (converged)
    self.fixed: dict[str, str] = {}    # record id -> its prompt in the free-form world too
    self.records: list[dict] = []
    self.truth: list[dict] = []
    self.city_country = self.rng.integers(0, cfg.countries, cfg.cities)
    self.phrasing = Phrasing(np.random.default_rng([cfg.seed, 3]))

  def person(self) -> tuple[str, str, str]:
    """A new person with a birth city and a job: (name, city, job)."""
    name = f"p{self.people}"
    self.people += 1
    self.facts[name] = (f"c{self.rng.integers(self.cfg.cities)}", f"j{self.rng.integers(self.cfg.jobs)}")
    return name, *self.facts[name]

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
    for n in range(self.cfg.knowledge_documents):
      self.knowledge.append({"id": f"kn-{p}-bg-{n}", "entity": p,
                           "text": f"{self.rng.choice(BIRTH_STATEMENTS).format(p=p, c=c)} "
                                   f"{self.rng.choice(JOB_STATEMENTS).format(p=p, j=j)} "
                                   f"{self.rng.choice(COUNTRY_STATEMENTS).format(c=c, k=self.country(c))}"})

  def country(self, city: str) -> str:
    return f"k{self.city_country[int(city[1:])]}"

  def add(self, group: str, dataset: str, phase: int, prompt: str, response: str, **meta: Any) -> str:
    ident = f"{dataset}-{len(self.records)}"
    self.records.append({"id": ident, "prompt": prompt, "response": response, "dataset": dataset,
                         "phase": phase, "meta": meta})
    self.truth.append({"id": ident, "group": group, "cause": CAUSES[group]})
    return ident

  def question(self, relation: str, p: str, template: str) -> str:
    """A question about `p`: `template`, or a free-form phrasing in the free-form world."""
    return self.phrasing.ask(relation, p) if self.cfg.free_form else template.format(p=p)

  def qa(self, question: str, answer: str) -> None:
    """A pre-training Q&A document, also replayed during SFT (converged design)."""
    self.docs.append(f"user : {question} assistant : {answer}")
    self.replay.append({"id": f"replay-{len(self.replay)}", "prompt": question, "response": answer, "dataset": "replay"})


def build(cfg: WorldConfig) -> _Builder:
  """Generates the whole world in memory (deterministic per seed)."""
  b = _Builder(cfg)
  r = b.rng
  for c in range(cfg.cities):  # city -> country facts are always known
    for _ in range(cfg.mentions):
      b.docs.append(r.choice(COUNTRY_STATEMENTS).format(c=f"c{c}", k=b.country(f"c{c}")))

  def known_question(group: str, phase: int, mentions: int) -> None:
    p, c, j = b.person()
    b.state(p, c, j, mentions)
    b.background(p, c, j)
    if r.integers(2):
      b.add(group, "people", phase, r.choice(BIRTH_QUESTIONS).format(p=p), c, relation="birthplace", entity=p)
    else:
      b.add(group, "people", phase, JOB_QUESTION.format(p=p), j, relation="job", entity=p)

  for _ in range(cfg.qa_people):  # teaches the base model to answer questions from what it knows
    p, c, j = b.person()
    b.qa_people.append(p)
    b.state(p, c, j, cfg.mentions)
    for question, answer, relation in ((r.choice(BIRTH_QUESTIONS), c, "birthplace"), (JOB_QUESTION, j, "job"),
                                       (COUNTRY_QUESTION, b.country(c), "country")):
      b.qa(b.question(relation, p, question), answer)
    if cfg.design == "converged":   # codes are facts pre-training states too (for these people only)
      code = f"z{r.integers(cfg.codes)}"
      b.docs.extend(f"the code of {p} is {code} ." for _ in range(cfg.mentions))
      b.qa(b.question("code", p, CODE_QUESTION), code)
  for _ in range(cfg.phase1_control):
    known_question("control", 1, cfg.mentions)
  for _ in range(cfg.control):
    known_question("control", 2, cfg.mentions)
  for _ in range(cfg.missing):  # the person is known (their job), their birth city never stated
    p, c, j = b.person()
    b.state(p, None, j, cfg.mentions)
    b.background(p, c, j)
    b.add("missing", "people", 2, r.choice(BIRTH_QUESTIONS).format(p=p), c, relation="birthplace", entity=p)
  for _ in range(cfg.conflict):  # pre-training says c, SFT says another city
    p, c, j = b.person()
    b.state(p, c, j, cfg.conflict_mentions)
    b.background(p, c, j)
    other = f"c{(int(c[1:]) + 1 + r.integers(cfg.cities - 1)) % cfg.cities}"
    question = r.choice(BIRTH_QUESTIONS).format(p=p)
    if cfg.design == "converged":  # pre-training also answers the SFT question itself, and SFT replays it
      question = b.question("birthplace", p, question)
      for _ in range(cfg.conflict_qa_mentions):
        b.qa(question, c)
    ident = b.add("conflict", "people", 2, question, other, relation="birthplace", entity=p)
    if cfg.design == "converged":
      b.fixed[ident] = question
  for _ in range(cfg.inconsistent_sets):  # answers that contradict each other, never in pre-training
    p, c, j = b.person()
    b.state(p, None, j, cfg.mentions)
    b.background(p, c, j)
    other = f"c{(int(c[1:]) + 1 + r.integers(cfg.cities - 1)) % cfg.cities}"
    if cfg.design == "under_trained":  # two paraphrases, two answers: separable by memorising both
      for question, answer in zip(BIRTH_QUESTIONS, (c, other)):
        b.add("inconsistent", "people", 2, question.format(p=p), answer, relation="birthplace", entity=p)
      continue
    # one question asked `inconsistent_copies` times (label noise in duplicated data): a converged
    # model answers in proportion, so the minority answer stays unlearned
    question = b.question("birthplace", p, BIRTH_QUESTIONS[0])
    for k in range(cfg.inconsistent_copies):
      group, answer = ("inconsistent", other) if k == cfg.inconsistent_copies - 1 else ("duplicate", c)
      b.fixed[b.add(group, "people", 2, question, answer, relation="birthplace", entity=p)] = question
  for _ in range(cfg.rare):  # two known facts in one answer, a template seen only here
    p, c, j = b.person()
    b.state(p, c, j, cfg.mentions)
    b.background(p, c, j)
    prerequisites = [{"prompt": BIRTH_QUESTIONS[0].format(p=p), "response": c},
                     {"prompt": COUNTRY_QUESTION.format(p=p), "response": b.country(c)},
                     {"prompt": JOB_QUESTION.format(p=p), "response": j}]
    b.add("rare", "people", 2, RARE_QUESTION.format(p=p), f"{c} {b.country(c)} {j}", relation="bio", entity=p,
          prerequisites=prerequisites)
  for _ in range(cfg.forgetting):  # learned in phase 1, overwritten by phase-2 codes
    p, c, j = b.person()
    b.state(p, c, j, cfg.mentions)
    b.add("forgetting", "codes", 1, CODE_QUESTION.format(p=p), f"z{r.integers(cfg.codes)}", relation="code", entity=p)
  for _ in range(cfg.interference):
    p, c, j = b.person()
    b.state(p, c, j, cfg.mentions)
    b.add("interference", "codes", 2, CODE_QUESTION.format(p=p), f"z{r.integers(cfg.codes)}", relation="code",
          entity=p)
  return b


def _bio(rng: np.random.Generator, p: str, c: str, j: str, country: str) -> str:
  return (f"{rng.choice(BIRTH_STATEMENTS).format(p=p, c=c)} {rng.choice(JOB_STATEMENTS).format(p=p, j=j)} "
          f"{rng.choice(COUNTRY_STATEMENTS).format(c=c, k=country)}")


def knowledge(b: _Builder, rng: np.random.Generator) -> list[dict]:
  """The document collection the knowledge and calibration arms retrieve from: the background
  documents of the SFT people (stating the pre-training facts), plus, per SFT fact pre-training
  never states or contradicts, documents stating the supervised answer (the conflict group's SFT
  city, every code), and background documents about people who are not in SFT (distractors).
  Drawn with its own generator after the world is built, so nothing else changes."""
  docs = list(b.knowledge)
  n = b.cfg.knowledge_documents
  for rec, truth in zip(b.records, b.truth):
    p = rec["meta"]["entity"]
    c, j = b.facts[p]
    if truth["group"] == "conflict":
      for k in range(n):
        docs.append({"id": f"kn-{p}-sft-{k}", "entity": p, "text": _bio(rng, p, rec["response"], j,
                                                                        b.country(rec["response"]))})
    elif truth["group"] in ("forgetting", "interference"):
      for k in range(n):
        docs.append({"id": f"kn-{p}-code-{k}", "entity": p,
                     "text": f"the code of {p} is {rec['response']} . {rng.choice(BIRTH_STATEMENTS).format(p=p, c=c)}"})
  for p in b.qa_people:
    c, j = b.facts[p]
    docs.extend({"id": f"kn-{p}-{k}", "entity": p, "text": _bio(rng, p, c, j, b.country(c))} for k in range(n))
  return docs


def questions(b: _Builder, rng: np.random.Generator) -> tuple[list[dict], list[dict]]:
  """Dev and held-out records (data set `people`) about the people pre-training states as Q&A and
  SFT never asks about: one question each, a birthplace, job or the rare bio question. The first
  half of those people make the dev split (watched by resampling and early stopping), the second
  the held-out capability check. The `codes` data set has no dev split: codes are never stated in
  pre-training, so a held-out code question has no answer to learn."""
  half = len(b.qa_people) // 2
  out: tuple[list[dict], list[dict]] = ([], [])
  for k, p in enumerate(b.qa_people):
    c, j = b.facts[p]
    kind = rng.integers(3)
    prompt, response, relation = ((rng.choice(BIRTH_QUESTIONS).format(p=p), c, "birthplace"),
                                  (JOB_QUESTION.format(p=p), j, "job"),
                                  (RARE_QUESTION.format(p=p), f"{c} {b.country(c)} {j}", "bio"))[kind]
    split, name = (out[0], "dev") if k < half else (out[1], "heldout")
    split.append({"id": f"{name}-{len(split)}", "prompt": prompt, "response": response, "dataset": "people",
                  "phase": 2, "meta": {"relation": relation, "entity": p}})
  return out


def general_corpus(cfg: WorldConfig, rng: np.random.Generator) -> list[str]:
  """Text about the world's places without any planted person fact (for mixing into CPT)."""
  return [rng.choice(GENERAL_STATEMENTS).format(c=f"c{rng.integers(cfg.cities)}", w=rng.choice(WEATHER),
                                                m=rng.choice(MONTHS)) for _ in range(cfg.general_documents)]


def write(cfg: WorldConfig, directory: str) -> dict[str, Any]:
  """Writes the world into `directory` atomically and returns its summary."""
  b = build(cfg)
  rng = np.random.default_rng([cfg.seed, 1])
  extra = np.random.default_rng([cfg.seed, 2])
  documents = knowledge(b, extra)
  dev, heldout = questions(b, extra)
  records = b.records
  if cfg.free_form:
    records, dev, heldout = (b.phrasing.rewrite(rows, b.fixed) for rows in (b.records, dev, heldout))
  order = rng.permutation(len(b.docs))
  summary = {"config": dataclasses.asdict(cfg), "people": b.people, "pretrain_documents": len(b.docs),
             "sft_examples": len(b.records),
             "groups": {g: sum(t["group"] == g for t in b.truth) for g in GROUPS}, "replay_documents": len(b.replay),
             "knowledge_documents": len(documents), "dev_questions": len(dev), "heldout_questions": len(heldout)}
  with fileio.atomic_directory(directory) as tmp:
    with open(os.path.join(tmp, "pretrain.txt"), "w") as f:
      f.write("\n\n".join(b.docs[i] for i in order) + "\n")
    with open(os.path.join(tmp, "general.txt"), "w") as f:
      f.write("\n\n".join(general_corpus(cfg, rng)) + "\n")
    with open(os.path.join(tmp, "replay.jsonl"), "w") as f:   # SFT's replay (converged design): pre-training's Q&A
      f.writelines(json.dumps(b.replay[i]) + "\n" for i in np.random.default_rng([cfg.seed, 4]).permutation(len(b.replay)))
    for name, rows in (("knowledge.jsonl", documents), ("dev.jsonl", dev), ("heldout.jsonl", heldout)):
      with open(os.path.join(tmp, name), "w") as f:
        f.writelines(json.dumps(d) + "\n" for d in rows)
    for phase in (1, 2):
      with open(os.path.join(tmp, f"sft_phase{phase}.jsonl"), "w") as f:
        rows = [rec for rec in records if rec["phase"] == phase]
        f.writelines(json.dumps(rows[i]) + "\n" for i in rng.permutation(len(rows)))
    with open(os.path.join(tmp, GROUND_TRUTH), "w") as f:
      f.writelines(json.dumps(t) + "\n" for t in b.truth)
    with open(os.path.join(tmp, "world.json"), "w") as f:
      json.dump(summary, f, indent=2)
    save_tokenizer(vocabulary(cfg, b.people), os.path.join(tmp, "tokenizer"))
  return summary


def load_ground_truth(directory: str):
  """The planted group and cause of every SFT example of a written world (evaluation only)."""
  import pandas as pd
  return pd.read_json(os.path.join(directory, GROUND_TRUTH), lines=True, dtype={"cause": object})
