"""A world's settings (config section `world`) and the groups it plants, with their causes."""

from __future__ import annotations

import dataclasses

from ilp.typed import check

GROUPS = ("control", "missing", "conflict", "inconsistent", "duplicate", "forgetting", "rare", "interference")
CAUSES = {
  "control": None,
  "missing": "I",
  "conflict": "II",
  "inconsistent": "III",
  "duplicate": "III",
  "forgetting": "IV",
  "rare": "V",
  "interference": "I",
}
DESIGNS = ("converged", "under_trained")
ANSWERS = ("short", "long")


@dataclasses.dataclass(frozen=True)
class WorldConfig:
  """Sizes and frequencies of a world (config section `world`); every count is a number of SFT
  examples unless noted. The defaults are the demo's world."""

  seed: int = 0  # seeds every draw: the same config writes the same files
  cities: int = 40  # cities c<i>, each in a country drawn at random
  countries: int = 15  # countries k<i>
  jobs: int = 12  # jobs j<i>
  codes: int = 40  # codes z<i>, the answers of the code questions (forgetting, interference)
  control: int = 200  # phase-2 birthplace or job questions about facts pre-training states (no cause)
  missing: int = 30  # phase-2 birthplace questions about known people whose city is never stated (I)
  conflict: int = 30  # phase-2 birthplace questions whose answer contradicts pre-training's city (II)
  inconsistent_sets: int = 15  # questions asked several times in SFT with contradicting answers (III)
  inconsistent_copies: int = 4  # records per set: copies - 1 give the majority answer, one the minority (converged)
  forgetting: int = 40  # phase-1 code questions that the phase-2 code questions overwrite (IV)
  interference: int = 400  # phase-2 code questions about other people
  rare: int = 12  # phase-2 questions composing birthplace, country and job in one rare template (V)
  phase1_control: int = 40  # known-fact questions in phase 1, so phase 1 is not codes only
  qa_people: int = 150  # people (never in SFT) whose facts pre-training also states as Q&A
  mentions: int = 10  # pre-training documents stating each known fact (a person's bio, a city's country)
  conflict_mentions: int = 16  # pre-training bios of each conflict person, stating the city SFT contradicts
  conflict_qa_mentions: int = 12  # Q&A documents stating a contradicted fact in the SFT question's words (converged)
  general_documents: int = 2000  # documents of general.txt: places and weather, no person fact (mixed into CPT)
  knowledge_documents: int = 3  # documents per fact and person in the knowledge collection
  free_form: bool = False  # questions in many paraphrases (PARAPHRASES), no metadata in the SFT records
  design: str = "converged"  # one of DESIGNS: causes that survive convergence, or the under-trained world
  answers: str = (
    "short"  # one of ANSWERS: the fact alone ("c3"), or in a sentence of varied wording (templates.Wording)
  )

  def __post_init__(self):
    for field in dataclasses.fields(self):
      if field.name not in ("seed", "free_form", "design", "answers"):
        check(getattr(self, field.name) >= 0, field.name, f"must be >= 0, got {getattr(self, field.name)}")
    for name in ("cities", "countries", "jobs", "codes", "mentions", "conflict_mentions"):
      check(getattr(self, name) >= 1, name, f"must be >= 1, got {getattr(self, name)}")
    check(self.inconsistent_copies >= 2, "inconsistent_copies", f"must be >= 2, got {self.inconsistent_copies}")
    check(self.design in DESIGNS, "design", f"'{self.design}' is not one of {DESIGNS}")
    check(self.answers in ANSWERS, "answers", f"'{self.answers}' is not one of {ANSWERS}")
