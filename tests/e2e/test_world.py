"""The ILP world: deterministic generation, the ground truth kept apart, and a reduced world end to end."""

import builtins
import filecmp
import glob
import io
import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from configs import world as world_config
from configs import world_small
from ilp import config as config_lib
from ilp import pipeline
from ilp.diagnosis import attribution
from ilp.layout import Layout
from ilp.world import diagnosis_validation, files, templates
from ilp.world.config import GROUPS, WorldConfig
from tests import ROOT

SMALL = world_small.SIZES


def _guard_ground_truth(monkeypatch) -> None:
  """Makes any read of a ground-truth file fail for the rest of the test."""
  real_open = builtins.open

  def guarded_open(file, mode="r", *args, **kwargs):
    if str(file).endswith(files.GROUND_TRUTH) and "r" in mode and "w" not in mode:
      raise AssertionError(f"pipeline code opened the ground truth {file}")
    return real_open(file, mode, *args, **kwargs)

  monkeypatch.setattr(builtins, "open", guarded_open)
  monkeypatch.setattr(io, "open", guarded_open)


def test_generation_is_deterministic_per_seed(tmp_path):
  for name, seed in (("a", 0), ("b", 0), ("c", 1)):
    files.write(WorldConfig(**{**SMALL, "seed": seed}), str(tmp_path / name))
  names = [
    "pretrain.txt",
    "general.txt",
    "replay.jsonl",
    "knowledge.jsonl",
    "dev.jsonl",
    "heldout.jsonl",
    "sft_phase1.jsonl",
    "sft_phase2.jsonl",
    files.GROUND_TRUTH,
  ]
  match, mismatch, errors = filecmp.cmpfiles(tmp_path / "a", tmp_path / "b", names, shallow=False)
  assert sorted(match) == sorted(names) and not errors
  assert not filecmp.cmp(tmp_path / "a" / "sft_phase2.jsonl", tmp_path / "c" / "sft_phase2.jsonl", shallow=False)


def test_groups_and_records(tmp_path):
  summary = files.write(WorldConfig(**SMALL), str(tmp_path / "w"))
  assert summary["groups"] == {
    "control": 16 + 6,
    "missing": 6,
    "conflict": 6,
    "inconsistent": 3,
    "duplicate": 9,
    "forgetting": 6,
    "rare": 4,
    "interference": 10,
  }
  records = [json.loads(line) for s in (1, 2) for line in open(tmp_path / "w" / f"sft_phase{s}.jsonl")]
  truth = {json.loads(line)["id"]: json.loads(line) for line in open(tmp_path / "w" / files.GROUND_TRUTH)}
  assert len(records) == len(truth) == sum(summary["groups"].values())
  assert all("cause" not in r["meta"] and "group" not in r["meta"] for r in records)
  by_id = {r["id"]: r for r in records}
  assert {by_id[i]["phase"] for i, t in truth.items() if t["group"] == "forgetting"} == {1}
  pretrain = open(tmp_path / "w" / "pretrain.txt").read()
  for ident, t in truth.items():
    entity = by_id[ident]["meta"]["entity"]
    if t["group"] == "missing":  # the asked fact is never stated
      assert f"{entity} was born" not in pretrain and f"birthplace of {entity} " not in pretrain
    if t["group"] == "conflict":  # pre-training states another city than the SFT answer
      assert f" {by_id[ident]['response']} ." not in [s for s in pretrain.split("\n\n") if entity + " " in s][0]
  # Inconsistent sets: one prompt, the majority answer on every copy but one (the planted III record).
  sets = {}
  for ident, t in truth.items():
    if t["group"] in ("inconsistent", "duplicate"):
      sets.setdefault(by_id[ident]["prompt"], []).append((t["group"], by_id[ident]["response"]))
  assert len(sets) == SMALL["inconsistent_sets"]
  for members in sets.values():
    majority = {r for g, r in members if g == "duplicate"}
    minority = [r for g, r in members if g == "inconsistent"]
    assert len(members) == 4 and len(majority) == 1 and len(minority) == 1 and minority[0] not in majority
  # Conflicts: pre-training answers the SFT question itself with its own city, and replay.jsonl holds
  # exactly pre-training's Q&A documents, as records.
  qa = [d.strip() for d in pretrain.split("\n\n") if d.startswith("user :")]
  replay = [json.loads(line) for line in open(tmp_path / "w" / "replay.jsonl")]
  assert sorted(f"user : {r['prompt']} assistant : {r['response']}" for r in replay) == sorted(qa)
  assert len(replay) == summary["replay_documents"] and {r["dataset"] for r in replay} == {"replay"}
  for ident, t in truth.items():
    if t["group"] == "conflict":
      answers = [d.split(" assistant : ")[1] for d in qa if d.startswith(f"user : {by_id[ident]['prompt']} ")]
      assert len(answers) == 12 and len(set(answers)) == 1 and answers[0] != by_id[ident]["response"]


def test_the_under_trained_design_keeps_paraphrased_pairs(tmp_path):
  summary = files.write(WorldConfig(**{**SMALL, "design": "under_trained"}), str(tmp_path / "w"))
  assert summary["groups"]["inconsistent"] == 2 * SMALL["inconsistent_sets"] and summary["groups"]["duplicate"] == 0
  records = [json.loads(line) for s in (1, 2) for line in open(tmp_path / "w" / f"sft_phase{s}.jsonl")]
  truth = {json.loads(line)["id"]: json.loads(line)["group"] for line in open(tmp_path / "w" / files.GROUND_TRUTH)}
  prompts = [r["prompt"] for r in records if truth[r["id"]] == "inconsistent"]
  assert len(set(prompts)) == len(prompts)  # two paraphrases per person, never the same prompt


def reduce(config, pretrain_steps: int, phase2_epochs: int):
  """A world study config shrunk to the SMALL world and a tiny model, for end-to-end tests."""
  config.world.update(SMALL)
  config.model.update(hidden_size=32, intermediate_size=64, num_layers=2, num_heads=2, num_kv_heads=1, head_dim=16)
  config.pretrain.update(steps=pretrain_steps, batch_size=16, log_every_steps=20)
  config.sft.update(
    batch_size=16,
    phases=({"name": "phase1", "phase": 1, "epochs": 2}, {"name": "phase2", "phase": 2, "epochs": phase2_epochs}),
  )
  # training to convergence, made to hold at each phase's first judged epoch (any improvement < 100%)
  config.sft.convergence.update(max_epochs=max(2, phase2_epochs), delta=1.0, window=1, cooldown_epochs=0)
  config.detect.update(num_samples=2, pass_k=(1, 2), bon_k=(1, 2), max_new_tokens=4, base_samples=2, blind_bon_k=2)
  config.machine.compilation_cache = ""  # the suite's own cache (tests/conftest.py), not one per work directory
  return config


def test_reduced_world_through_the_pipeline_never_reading_the_ground_truth(tmp_path, monkeypatch):
  config = reduce(world_config.get_config(), pretrain_steps=40, phase2_epochs=1)
  config.detect.repeats = 2
  _guard_ground_truth(monkeypatch)
  workdir = str(tmp_path / "work")
  pipeline.run(config, workdir)
  monkeypatch.undo()
  assert os.path.exists(os.path.join(workdir, "detect", "detection.parquet"))
  result = subprocess.run(
    [sys.executable, os.path.join(ROOT, "scripts", "evaluate_world.py"), f"--workdir={workdir}"],
    capture_output=True,
    text=True,
    timeout=120,
  )
  assert result.returncode == 0, result.stderr[-2000:]
  evaluation = json.load(open(os.path.join(workdir, "world_eval.json")))
  detection = pd.read_parquet(os.path.join(workdir, "detect", "detection.parquet")).merge(
    files.load_ground_truth(os.path.join(workdir, "world")), on="id"
  )
  assert set(evaluation["protocols"]) == {"multiple_choice", "generative"}
  for protocol, prefix in (("multiple_choice", "mc_"), ("generative", "gen_")):
    groups = evaluation["protocols"][protocol]["groups"]
    assert set(groups) == set(GROUPS) and groups["missing"]["examples"] == 6
    for group, rows in detection.groupby("group"):
      assert groups[group]["unlearned_rate"] == pytest.approx(rows[f"{prefix}unlearned"].mean())
  assert "planted group" in result.stdout and "kappa between the protocols' labels" in result.stdout
  forgetting = evaluation["forgetting"]  # sampled with the phase-1 model the run kept (sft/phase1)
  assert os.path.isdir(os.path.join(workdir, "sft", "phase1")) and not os.path.isdir(
    os.path.join(workdir, "sft", "phase2")
  )
  assert 0 <= forgetting["sampled_learned_then_lost"] <= forgetting["sampled_learned_end_of_phase1"] <= 1
  assert "IV under sampling" in result.stdout
  _check_diagnosis(workdir)


def _check_diagnosis(workdir: str) -> None:
  """The diagnose stage's outputs, its data-side signals against what the world planted, its
  report section, and the validation script's figures."""
  table = pd.read_parquet(os.path.join(workdir, "diagnosis", "attribution.parquet"))
  detection = pd.read_parquet(os.path.join(workdir, "detect", "detection.parquet"))
  assert sorted(table["id"]) == sorted(detection["id"])
  assert ((table["cause"] == attribution.LEARNED) == ~table["unlearned"]).all()
  assert set(table["cause"]) <= set(attribution.CAUSES) | {attribution.LEARNED, attribution.UNATTRIBUTED}
  joined = table.merge(files.load_ground_truth(os.path.join(workdir, "world")), on="id", suffixes=("", "_planted"))
  by = {g: rows for g, rows in joined.groupby("group")}
  # The corpus never supports a conflict's SFT answer; it contradicts it wherever pre-training's city is
  # an answer of that kind somewhere in SFT (with the small world's 8 cities, not always).
  assert (by["conflict"]["corpus_support"] == 0).all() and (by["conflict"]["corpus_entity_docs"] > 0).all()
  assert (by["conflict"]["corpus_contradiction"] > 0).mean() >= 0.8
  assert (by["control"]["corpus_support"] > 0).all() and (by["missing"]["corpus_support"] == 0).all()
  assert (by["inconsistent"]["disagreeing_duplicates"] == 3).all()  # the minority answer: 3 copies disagree
  assert (by["duplicate"]["disagreeing_duplicates"] == 1).all()  # a majority copy: the minority disagrees
  assert (by["rare"]["prerequisites"] == 3).all() and (by["rare"]["template_share"] < 0.1).all()
  assert by["rare"]["prerequisites_known"].between(0, 1).all() and by["control"]["prerequisites_known"].isna().all()
  assert (by["forgetting"]["own_phase"] == 1).all() and (by["interference"]["own_phase"] == 2).all()
  assert by["control"]["corpus_answer_coverage"].eq(1).all() and by["missing"]["corpus_answer_coverage"].eq(0).all()
  assert table["base_entity_lift"].notna().mean() > 0.9 and "embedding_duplicates" in table
  assert len(detection["prompt_embedding"].iloc[0]) == 32  # the tiny model's width (under embedding_dims)
  for group in ("control", "missing", "conflict", "interference"):
    assert (by[group]["disagreeing_duplicates"] == 0).all(), group
  report = open(os.path.join(workdir, "report", "report.md")).read()
  assert "Why examples were not learned" in report and "](../diagnosis/data_map.png)" in report
  assert glob.glob(os.path.join(workdir, "diagnosis", "tensorboard", "events.*"))
  layout = Layout(workdir)
  config = config_lib.read(layout.config)
  result = diagnosis_validation.validate(layout, diagnosis_validation.attribution(layout, config, "multiple_choice"))
  generative = diagnosis_validation.attribution(layout, config, "generative").set_index("id")  # recomputed
  np.testing.assert_array_equal(generative.loc[detection["id"], "unlearned"], detection["gen_unlearned"])
  assert ((generative["cause"] == attribution.LEARNED) == ~generative["unlearned"]).all()
  assert sum(sum(row.values()) for row in result["confusion"].values()) == int(table["unlearned"].sum())
  for cause in attribution.CAUSES:
    assert result["confusion"][cause][cause] == int(
      (joined["cause"] == joined["cause_planted"]).where(joined["cause_planted"] == cause, False).sum()
    )
    scored = result["per_cause"][cause]
    if scored["planted_unlearned"] or scored["attributed"]:
      assert 0 <= scored["recall"] <= 1 and 0 <= scored["precision"] <= 1
    else:
      assert scored["f1"] is None


def test_the_guard_catches_a_reader(tmp_path, monkeypatch):
  """The guard used above does fail when the ground truth is read (and lets it be written)."""
  _guard_ground_truth(monkeypatch)
  files.write(WorldConfig(**SMALL), str(tmp_path / "w"))
  with pytest.raises(AssertionError, match="opened the ground truth"):
    open(tmp_path / "w" / files.GROUND_TRUTH).read()


def test_knowledge_dev_and_heldout_collections(tmp_path):
  summary = files.write(WorldConfig(**SMALL), str(tmp_path / "w"))
  read = lambda name: [json.loads(line) for line in open(tmp_path / "w" / name)]
  docs, dev, heldout = read("knowledge.jsonl"), read("dev.jsonl"), read("heldout.jsonl")
  assert (summary["knowledge_documents"], summary["dev_questions"], summary["heldout_questions"]) == (
    len(docs),
    len(dev),
    len(heldout),
  )
  vocab = set(templates.vocabulary(WorldConfig(**SMALL), summary["people"]))
  for row in docs:
    assert set(row["text"].split()) <= vocab and row["entity"] in row["text"].split(), row
  for row in dev + heldout:
    assert set(row["prompt"].split()) | set(row["response"].split()) <= vocab, row
  records = [json.loads(line) for s in (1, 2) for line in open(tmp_path / "w" / f"sft_phase{s}.jsonl")]
  truth = {t["id"]: t["group"] for t in read(files.GROUND_TRUTH)}
  by_entity = {}
  for d in docs:
    by_entity.setdefault(d["entity"], []).append(d["text"])
  pretrain = open(tmp_path / "w" / "pretrain.txt").read()
  for r in records:
    entity, texts = r["meta"]["entity"], by_entity[r["meta"]["entity"]]
    if truth[r["id"]] == "conflict":  # the SFT answer, and the pre-training's competing city
      assert sum(f" {r['response']} " in f" {t} " for t in texts) == SMALL["knowledge_documents"]
      cities = {w for t in texts for w in t.split() if w[0] == "c" and w[1:].isdigit()}
      (other,) = cities - {r["response"]}
      assert all(other in s.split() for s in pretrain.split("\n\n") if entity in s.split())
    if truth[r["id"]] in ("forgetting", "interference"):
      assert any(f"the code of {r['meta']['entity']} is {r['response']} ." in t for t in texts)
      assert f"the code of {r['meta']['entity']} is" not in pretrain
  sft_people = {r["meta"]["entity"] for r in records}
  dev_people, heldout_people = ({r["meta"]["entity"] for r in rows} for rows in (dev, heldout))
  assert not dev_people & heldout_people and not (dev_people | heldout_people) & sft_people
  assert (len(dev), len(heldout)) == (SMALL["qa_people"] // 2, SMALL["qa_people"] - SMALL["qa_people"] // 2)
  assert {r["dataset"] for r in dev + heldout} == {"people"} and len(dev_people | heldout_people) == SMALL["qa_people"]
  groups = summary["groups"]
  kinds = {kind: sum(f"-{kind}-" in d["id"] for d in docs) for kind in ("bg", "sft", "code")}
  assert kinds == {
    "bg": SMALL["knowledge_documents"]
    * (groups["control"] + groups["missing"] + groups["conflict"] + SMALL["inconsistent_sets"] + groups["rare"]),
    "sft": SMALL["knowledge_documents"] * groups["conflict"],
    "code": SMALL["knowledge_documents"] * (groups["forgetting"] + groups["interference"]),
  }
  assert len(docs) == sum(kinds.values()) + SMALL["knowledge_documents"] * SMALL["qa_people"]
  for r in dev + heldout:  # answerable from pre-training: stated there
    assert r["meta"]["entity"] in pretrain.split()


def test_free_form_world_paraphrases_every_question_and_drops_metadata(tmp_path):
  cfg = WorldConfig(**{**SMALL, "control": 60, "free_form": True})
  files.write(cfg, str(tmp_path / "free"))
  files.write(WorldConfig(**{**SMALL, "control": 60}), str(tmp_path / "plain"))
  read = lambda d, name: [json.loads(line) for line in open(tmp_path / d / name)]
  free = [r for s in (1, 2) for r in read("free", f"sft_phase{s}.jsonl")]
  plain = {r["id"]: r for s in (1, 2) for r in read("plain", f"sft_phase{s}.jsonl")}
  truth = {t["id"]: t["group"] for t in read("free", files.GROUND_TRUTH)}
  assert len(free) == len(plain) and all(r["meta"] == {} for r in free)  # a user's plain {prompt, response}
  vocab = set(templates.vocabulary(cfg, json.load(open(tmp_path / "free" / "world.json"))["people"]))
  phrasings = {}
  for r in free:
    same = plain[r["id"]]
    assert (r["response"], r["phase"], r["dataset"]) == (same["response"], same["phase"], same["dataset"])
    entity = same["meta"]["entity"]
    assert entity in r["prompt"].split() and set(r["prompt"].split()) <= vocab
    phrasings.setdefault(same["meta"]["relation"], set()).add(r["prompt"].replace(entity, "#"))
  assert len(phrasings["birthplace"]) >= 20 and len(phrasings["code"]) >= 10  # no frequent prompt pattern
  sets = {}
  for r in free:
    if truth[r["id"]] in ("inconsistent", "duplicate"):
      sets.setdefault(plain[r["id"]]["meta"]["entity"], []).append(r)
  for members in sets.values():  # duplicates keep one (free-form) prompt and their contradicting answers
    assert len({m["prompt"] for m in members}) == 1 and len({m["response"] for m in members}) == 2
  qa = [d for d in open(tmp_path / "free" / "pretrain.txt").read().split("\n\n") if d.startswith("user :")]
  distinct = set(qa)  # a conflict's Q&A document repeats (conflict_qa_mentions times)
  assert len({d.split(" assistant :")[0] for d in distinct}) > len(distinct) // 2  # the base model sees paraphrases too
  for name in ("dev.jsonl", "heldout.jsonl"):
    assert all(r["meta"] == {} for r in read("free", name))


def test_long_answer_world_words_every_answer_as_a_sentence(tmp_path):
  """The long-answer world: the short world's facts in sentences, paraphrased across agreeing
  duplicates and contradicting in the planted minority; the shared equivalence tells them apart."""
  from ilp.scoring.equivalence import Answers, AnswersConfig

  sizes = {"free_form": True}  # the demo's size: in the small world's 8 cities, a city is no rare word
  files.write(WorldConfig(**sizes, answers="long"), str(tmp_path / "long"))
  files.write(WorldConfig(**sizes), str(tmp_path / "short"))
  read = lambda d, name: [json.loads(line) for line in open(tmp_path / d / name)]
  long = [r for s in (1, 2) for r in read("long", f"sft_phase{s}.jsonl")]
  short = {r["id"]: r for s in (1, 2) for r in read("short", f"sft_phase{s}.jsonl")}
  truth = {t["id"]: t["group"] for t in read("long", files.GROUND_TRUTH)}
  assert read("long", files.GROUND_TRUTH) == read("short", files.GROUND_TRUTH)
  people = json.load(open(tmp_path / "long" / "world.json"))["people"]
  vocab = set(templates.vocabulary(WorldConfig(**sizes, answers="long"), people))
  answers = Answers(AnswersConfig(), [r["response"] for r in long])
  for r in long:
    fact = short[r["id"]]["response"]
    words = r["response"].split()
    assert r["prompt"] == short[r["id"]]["prompt"] and r["meta"] == {} and set(words) <= vocab
    assert len(words) >= 5 and all(w in words for w in fact.split())  # the short answer's facts, in a sentence
    key = answers.key(r["response"], r["prompt"]).split()
    # what the answer adds to its question is its fact; the rare template's own words are rare too
    assert (key == sorted(fact.split())) if truth[r["id"]] != "rare" else set(fact.split()) <= set(key), (r, key)
  sets = {}
  for r in long:
    if truth[r["id"]] in ("inconsistent", "duplicate"):
      sets.setdefault(r["prompt"], []).append(r)
  for members in sets.values():
    agree = [m["response"] for m in members if truth[m["id"]] == "duplicate"]
    minority = next(m["response"] for m in members if truth[m["id"]] == "inconsistent")
    assert len(set(agree)) == len(agree)  # the majority's copies are paraphrases, not repeats
    assert all(answers.equivalent(a, b) for a in agree for b in agree)
    assert not any(answers.equivalent(a, minority) for a in agree)
  qa = [d for d in open(tmp_path / "long" / "pretrain.txt").read().split("\n\n") if d.startswith("user :")]
  assert all(
    len(d.split(" assistant : ")[1].split()) >= 4 for d in qa
  )  # the base model's Q&A answers are sentences too
  with pytest.raises(config_lib.ConfigError, match="'world.answers'"):
    config_lib.load({"world": {"answers": "medium"}})
