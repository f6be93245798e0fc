"""M-III, conflict resolution: for the examples the baseline attributed to inconsistent data
(III), take their near-duplicate groups (the diagnosis' `duplicate_group`), delete the members
judged wrong, and spread the groups that keep several members over buckets so that no two
members share a mini-batch (`sft.spread`). `delete` and `bucket` give the paper's ablation:
deletion only, bucketing only, both. Only the data and its batching change: SFT keeps the
baseline's training to convergence when it is on (the arm is compared at equal compute by its
derived control, `ilp.interventions.equal_compute`).

Deletion rules (`delete`):
- "corpus": retrieve `per_query` documents for each member's prompt from `data.knowledge`; a
  member whose answer fewer retrieved documents state than another member's is deleted (when no
  member's answer is stated, or several tie at the top, the group is kept whole);
- "minority": members whose answer fewer members give than the group's most common answer are
  deleted (a tie, e.g. a pair, keeps the group whole);
- "none": nothing is deleted.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import pandas as pd

from ilp import fileio
from ilp.data import loaders
from ilp.detection import columns as col
from ilp.interventions import selection
from ilp.typed import check

RULES = ("corpus", "minority", "none")


@dataclasses.dataclass(frozen=True)
class Settings:
  causes: tuple[str, ...] = ("III",)  # the causes whose examples' near-duplicate groups are resolved
  delete: str = "corpus"  # one of RULES
  bucket: bool = True  # spread groups that keep several members
  buckets: int = 4  # B (the paper gives none)
  every_steps: int = 50  # re-form the buckets every K steps (the paper gives none)
  per_query: int = 20  # documents retrieved per member for the "corpus" rule

  def __post_init__(self):
    check(self.delete in RULES, "delete", f"'{self.delete}' is not one of {RULES}")
    check(self.delete != "none" or self.bucket, "bucket", "delete='none' and bucket=False change nothing")
    check(self.buckets >= 2, "buckets", f"must be >= 2, got {self.buckets}")
    check(self.every_steps >= 1, "every_steps", f"must be >= 1, got {self.every_steps}")
    check(self.per_query >= 1, "per_query", f"must be >= 1, got {self.per_query}")


def groups(attribution: pd.DataFrame, causes: tuple[str, ...]) -> pd.DataFrame:
  """Every member (id, prompt, reference, group) of the near-duplicate groups holding an example
  attributed to `causes`."""
  group = attribution[col.DUPLICATE_GROUP]
  chosen = group[attribution[col.CAUSE].isin(causes) & (group >= 0)]
  members = attribution.loc[group.isin(set(chosen)), [col.ID, col.PROMPT, col.REFERENCE, col.DUPLICATE_GROUP]]
  return members.rename(columns={col.DUPLICATE_GROUP: "group"})


def support(members: pd.DataFrame, collection: selection.Collection, per_query: int) -> pd.Series:
  """How many of the documents retrieved for each member's prompt state its answer."""
  hits = collection.retrieve(list(zip(members["id"], members["prompt"])), per_query)
  answers = dict(zip(members["id"], members["reference"]))
  stated = [selection.states(t, answers[i]) for i, t in zip(hits["id"], hits["text"])]
  counts = hits.assign(stated=stated).groupby("id")["stated"].sum()
  return members["id"].map(counts).fillna(0).astype(int).set_axis(members.index)


def deleted(members: pd.DataFrame, rule: str, score: pd.Series | None = None) -> pd.Series:
  """Which members the rule deletes: those whose answer is not their group's leading answer,
  when one answer leads alone. `score` is each member's corpus support (rule "corpus"); the
  "minority" rule scores an answer by how many members give it."""
  if rule == "none":
    return pd.Series(False, index=members.index)
  if rule == "minority":
    score = members.groupby(["group", "reference"])["id"].transform("count")
  top = score.groupby(members["group"]).transform("max")
  leaders = members[(score == top) & (top > 0)].groupby("group")["reference"].agg(lambda r: set(r))
  lead = members["group"].map(leaders)
  return pd.Series(
    [isinstance(refs, set) and len(refs) == 1 and ref not in refs for refs, ref in zip(lead, members["reference"])],
    index=members.index,
    dtype=bool,  # also with no member: an empty object series would select columns, not rows
  )


def check_config(config: Any, settings: Settings) -> None:
  check(
    settings.delete != "corpus" or bool(config.data.knowledge),
    "data.knowledge",
    "the 'corpus' deletion rule retrieves from it: give sources, or settings.delete='minority'",
  )


def prepare(context: Any, settings: Settings, config: Any) -> Any:
  """Writes the arm's SFT records without the deleted members, and its groups file."""
  members = groups(context.attribution, settings.causes)
  score = None
  if settings.delete == "corpus" and len(members):
    score = support(
      members, selection.collection(config.data.knowledge, config.data.index_directory), settings.per_query
    )
  members = members.assign(support=score, deleted=deleted(members, settings.delete, score))
  directory = context.arm.intervention
  fileio.write_parquet_atomic(members, os.path.join(directory, "groups.parquet"))
  removed = set(members.loc[members["deleted"], "id"])
  kept = members[~members["deleted"]].groupby("group")["id"].apply(list)
  spread_groups = [g for g in kept if len(g) > 1]
  selection.write_summary(
    context,
    {
      "groups": int(members["group"].nunique()),
      "members": len(members),
      "deleted": len(removed),
      "spread_groups": len(spread_groups) if settings.bucket else 0,
    },
  )
  sft, data = config.sft, config.data
  if removed:
    path = os.path.join(directory, "sft.jsonl")
    selection.write_records([r for r in loaders.load_sft(data.sft, data.extra_fields) if r.id not in removed], path)
    data = dataclasses.replace(data, sft=({"path": path, "format": "jsonl"},))
  if settings.bucket:
    path = os.path.join(directory, "groups.json")
    with fileio.atomic_file(path) as tmp, open(tmp, "w") as f:
      json.dump(spread_groups, f)
    sft = dataclasses.replace(
      sft,
      spread=dataclasses.replace(sft.spread, groups=path, buckets=settings.buckets, every_steps=settings.every_steps),
    )
  return dataclasses.replace(config, sft=sft, data=data)
