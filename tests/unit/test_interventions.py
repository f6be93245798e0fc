"""Each intervention's selection from a hand-made baseline (attribution table, examples, knowledge
documents): which examples, documents and groups it picks, and the arm config it returns."""

import dataclasses
import json
import os

import pandas as pd
import pytest

from ilp import config as config_lib
from ilp import fileio
from ilp.data import batches, loaders
from ilp.interventions import arms, calibration, conflict, epochs, knowledge, online, progressive, selection, shuffle
from ilp.layout import Layout
from ilp.typed import ConfigError

KNOWLEDGE = [
  {"id": "d1", "text": "p1 was born in c1 ."},
  {"id": "d2", "text": "the birthplace of p1 is c1 ."},
  {"id": "d3", "text": "p2 was born in c7 ."},
  {"id": "d4", "text": "p2 was born in c2 ."},
  {"id": "d5", "text": "the birthplace of p2 is c2 ."},
  {"id": "d6", "text": "p3 works as a j1 ."},
  {"id": "d7", "text": "p4 was born in c4 ."},
  {"id": "d8", "text": "the birthplace of p4 is c4 ."},
  {"id": "d9", "text": "p9 comes from c9 ."},
]
# id, prompt, reference, cause, duplicate group
ROWS = [
  ("e1", "where was p1 born ?", "c1", "I", -1),
  ("e2", "where was p2 born ?", "c2", "II", -1),
  ("e3", "what is the birthplace of p4 ?", "c4", "III", 0),
  ("e4", "where was p4 born ?", "c5", "III", 0),
  ("e5", "what is the job of p3 ?", "j1", "learned", -1),
  ("e6", "where was p6 born ?", "c6", "III", 1),
  ("e7", "what is the birthplace of p6 ?", "c6", "learned", 1),
  ("e8", "the birthplace of p6 ?", "c8", "III", 1),
]


def _write_jsonl(path, rows):
  with open(path, "w") as f:
    f.writelines(json.dumps(r) + "\n" for r in rows)


@pytest.fixture
def baseline(tmp_path):
  _write_jsonl(tmp_path / "knowledge.jsonl", KNOWLEDGE)
  (tmp_path / "general.txt").write_text("the weather in c1 is sunny .\n\nmany people visit c2 in july .\n")
  records = [
    {
      "id": i,
      "prompt": p,
      "response": r,
      "dataset": "people",
      "phase": 2,
      "meta": {"prerequisites": [{"prompt": "what is the job of p3 ?", "response": "j1"}]} if i == "e1" else {},
    }
    for i, p, r, _, _ in ROWS
  ]
  _write_jsonl(tmp_path / "sft.jsonl", records)
  layout = Layout(str(tmp_path / "run"))
  os.makedirs(layout.root)
  pd.DataFrame({"id": [r["id"] for r in records], "meta": [json.dumps(r["meta"]) for r in records]}).to_parquet(
    layout.examples
  )
  _write_sft_summary(layout, {"steps": 1})  # trained its configured epochs
  attribution = pd.DataFrame(ROWS, columns=["id", "prompt", "reference", "cause", "duplicate_group"])
  cfg = config_lib.config_dict()
  cfg.stages = ("init_model", "sft", "detect", "diagnose", "capability", "arms", "compare")
  cfg.data.update(
    sft=({"path": str(tmp_path / "sft.jsonl")},),
    knowledge=({"path": str(tmp_path / "knowledge.jsonl")},),
    general=({"path": str(tmp_path / "general.txt")},),
    heldout=({"path": str(tmp_path / "sft.jsonl")},),
  )
  cfg.sft.update(
    init_from="model_init", phases=({"name": "one", "phase": 1, "epochs": 2}, {"name": "two", "phase": 2, "epochs": 3})
  )
  cfg.detect.base = "model_init"
  config = config_lib.load(cfg)
  return arms.Context(config, layout, layout.arm("x"), attribution), config


def _write_sft_summary(layout, summary):
  os.makedirs(layout.training("sft"), exist_ok=True)
  with open(layout.summary("sft"), "w") as f:
    json.dump(summary, f)


def _arm_config(context, config):
  return arms.base_config(config, context.baseline)


def test_base_config_points_every_arm_at_the_baselines_models(baseline):
  context, config = baseline
  arm = _arm_config(context, config)
  assert arm.stages == ("sft", "detect", "diagnose", "capability") and arm.world is None
  assert arm.sft.init_from == context.baseline.model_init == context.base_model
  assert arm.detect.base == context.baseline.model_init and not arm.interventions.arms
  assert arm.seed == config.seed and arm.data == config.data


def test_knowledge_retrieves_for_cause_I_only_and_mixes_general_text(baseline):
  context, config = baseline
  arm = knowledge.prepare(context, knowledge.Settings(per_query=2), _arm_config(context, config))
  hits = pd.read_parquet(os.path.join(context.arm.intervention, "selection.parquet"))
  assert set(hits["id"]) == {"e1"}  # the one example attributed to I
  # own question + prerequisite, by their entities (slot fillers), never the answers c1 and j1
  assert set(hits["query"]) == {"p1", "job p3"}
  by_query = hits.groupby("query")["document"].apply(list).to_dict()
  assert set(by_query["p1"]) == {"d1", "d2"}  # p1's documents, not the other people's
  assert by_query["job p3"][0] == "d6"
  corpus = loaders.load_corpus([{"path": os.path.join(context.arm.intervention, "retrieved.jsonl")}])
  assert {d.id for d in corpus} == set(hits["document"])
  assert arm.stages[0] == "pretrain" and arm.sft.init_from == "pretrain" and arm.detect.base == "pretrain"
  assert arm.pretrain.init_from == context.base_model and arm.pretrain.steps == 200
  weights = {os.path.basename(s["path"]): s["weight"] for s in arm.data.corpora}
  assert weights == pytest.approx({"general.txt": 0.8, "retrieved.jsonl": 0.2})


def test_continual_pre_training_steps_as_a_share_of_the_baselines_sft(baseline):
  context, config = baseline
  _write_sft_summary(context.baseline, {"steps": 41})
  arm = knowledge.prepare(context, knowledge.Settings(per_query=2, steps_fraction=0.5), _arm_config(context, config))
  assert arm.pretrain.steps == round(0.5 * 41)
  with pytest.raises(ConfigError, match="'steps_fraction': must be >= 0"):
    knowledge.Settings(steps_fraction=-1.0)


def test_calibration_keeps_only_documents_stating_the_supervised_answer(baseline):
  context, config = baseline
  calibration.prepare(context, calibration.Settings(per_query=3), _arm_config(context, config))
  hits = pd.read_parquet(os.path.join(context.arm.intervention, "selection.parquet"))
  assert set(hits["id"]) == {"e2"}
  assert set(hits.loc[hits["kept"], "document"]) == {"d4", "d5"}  # p2 ... c2
  assert "d3" in set(hits.loc[~hits["kept"], "document"])  # p2 was born in c7: contradicts
  summary = json.load(open(os.path.join(context.arm.intervention, "summary.json")))
  assert summary["documents_kept"] == 2 and summary["examples"] == 1


def test_states_is_a_whole_word_match():
  assert selection.states("p2 was born in c2 .", "c2") and not selection.states("p2 was born in c21 .", "c2")
  assert selection.states("the code is Z8  x", "z8 x")


def test_conflict_groups_and_deletion_rules(baseline):
  context, config = baseline
  members = conflict.groups(context.attribution, ("III",))
  assert sorted(members["id"]) == ["e3", "e4", "e6", "e7", "e8"]  # both groups, learned members included
  score = conflict.support(members, selection.Collection(config.data.knowledge), 9)  # every document
  assert dict(zip(members["id"], score)) == {"e3": 2, "e4": 0, "e6": 0, "e7": 0, "e8": 0}
  assert list(members.loc[conflict.deleted(members, "corpus", score), "id"]) == ["e4"]
  # minority: in group 1 two members answer c6, one c8; the pair of group 0 ties
  assert list(members.loc[conflict.deleted(members, "minority"), "id"]) == ["e8"]
  assert not conflict.deleted(members, "none").any()


def test_conflict_arm_writes_records_without_the_deleted_and_the_groups(baseline):
  context, config = baseline
  arm = conflict.prepare(context, conflict.Settings(buckets=3, every_steps=7), _arm_config(context, config))
  records = loaders.load_sft(arm.data.sft)
  assert sorted(r.id for r in records) == ["e1", "e2", "e3", "e5", "e6", "e7", "e8"]
  assert {r.id: r.phase for r in records}["e1"] == 2
  groups = json.load(open(arm.sft.spread.groups))
  assert groups == [["e6", "e7", "e8"]]  # group 0 keeps one member: nothing to spread
  assert (arm.sft.spread.buckets, arm.sft.spread.every_steps) == (3, 7)
  only_bucket = conflict.prepare(context, conflict.Settings(delete="none"), _arm_config(context, config))
  assert only_bucket.data.sft == config.data.sft
  assert sorted(map(sorted, json.load(open(only_bucket.sft.spread.groups)))) == [["e3", "e4"], ["e6", "e7", "e8"]]
  only_delete = conflict.prepare(context, conflict.Settings(bucket=False), _arm_config(context, config))
  assert not only_delete.sft.spread.groups


def test_shuffle_progressive_and_epochs_configs(baseline):
  context, config = baseline
  base = _arm_config(context, config)
  s = shuffle.prepare(context, shuffle.Settings(every_steps=10), base)
  assert s.sft.order == "global" and s.sft.resample.every_steps == 10 and s.data.dev_fraction == 0.1
  p = progressive.prepare(context, progressive.Settings(max_epochs=7), base)
  assert p.sft.progressive.enabled and p.sft.progressive.max_epochs == 7 and p.sft.progressive.delta == 0.01
  e = epochs.prepare(context, epochs.Settings(epochs=10, phases=("two",)), base)
  assert [ph.epochs for ph in e.sft.phases] == [2, 10]
  assert [ph.epochs for ph in epochs.prepare(context, epochs.Settings(epochs=4), base).sft.phases] == [4, 4]
  assert [ph.epochs for ph in epochs.prepare(context, epochs.Settings(extra=10, phases=("two",)), base).sft.phases] == [
    2,
    13,
  ]  # the configured epochs are what this baseline trained


TRAINED = {"one": 4, "two": 7}  # what the converged baseline trained (its configured epochs: 2 and 3)


@pytest.fixture
def converged(baseline):
  """The baseline trained to convergence: its config's `sft.convergence.max_epochs`, and the epochs
  each phase trained in its summary."""
  context, config = baseline
  config = dataclasses.replace(
    config, sft=dataclasses.replace(config.sft, convergence=dataclasses.replace(config.sft.convergence, max_epochs=9))
  )
  phases = {
    name: {"converged": True, "epoch": e - 1, "trained_epochs": e, "stopped_by": "converged"}
    for name, e in TRAINED.items()
  }
  decisions = {"1": {"plateau_epoch": 3, "epochs": 4, "step": 12}, "2": {"plateau_epoch": 6, "epochs": 7, "step": 40}}
  _write_sft_summary(
    context.baseline,
    {
      "steps": 1,
      "phases": 2,
      "controls": [{"decisions": decisions}],
      "convergence": {"converged": True, "last_phase": "two", "phases": phases},
    },
  )
  os.makedirs(os.path.join(context.baseline.checkpoints("sft"), "40"))  # the plateau checkpoint, kept
  return dataclasses.replace(context, config=config), config


def test_arms_on_a_converged_baseline_train_exactly_their_epochs(converged):
  context, config = converged
  base = _arm_config(context, config)
  assert base.sft.convergence.max_epochs == 9  # data-only arms keep training to convergence
  conflict_arm = conflict.prepare(context, conflict.Settings(bucket=False), base)
  assert conflict_arm.sft.convergence.max_epochs == 9 and conflict_arm.sft.phases == config.sft.phases
  epochs_of = lambda arm: {p.name: p.epochs for p in arm.sft.phases}
  plateau = os.path.join(context.baseline.checkpoints("sft"), "40")
  extended = {epochs.Settings(extra=10, phases=("two",)): 17, epochs.Settings(epochs=12, phases=("two",)): 12}
  for settings, last in extended.items():
    arm = epochs.prepare(context, settings, base)  # the last phase raised: the baseline continued from its plateau
    assert (arm.sft.extend.checkpoint, arm.sft.extend.epochs) == (plateau, last), settings
    assert arm.sft.phases == config.sft.phases and arm.sft.convergence == base.sft.convergence
    assert not arm.detect.require_converged
  cases = {  # settings -> the epochs each phase trains: raised ones as asked, the others as the baseline did
    epochs.Settings(extra=10, phases=("two",), continue_baseline=False): {"one": 4, "two": 7 + 10},
    epochs.Settings(extra=2): {"one": 4 + 2, "two": 7 + 2},
    epochs.Settings(epochs=12, phases=("two",), continue_baseline=False): {"one": 4, "two": 12},
    epochs.Settings(epochs=12, extra=1, phases=("one",)): {"one": 5, "two": 7},  # extra wins over epochs
  }
  for settings, expected in cases.items():
    arm = epochs.prepare(context, settings, base)
    assert epochs_of(arm) == expected and arm.sft.convergence.max_epochs == 0, settings
    assert [p.phase for p in arm.sft.phases] == [p.phase for p in config.sft.phases] and not arm.sft.extend.checkpoint
  os.rmdir(plateau)  # a baseline without its plateau checkpoint: refused, with the way out
  with pytest.raises(fileio.ResumeError, match="continue_baseline=False"):
    epochs.prepare(context, epochs.Settings(extra=10, phases=("two",)), base)
  s = shuffle.prepare(context, shuffle.Settings(every_steps=10), base)
  assert epochs_of(s) == TRAINED and s.sft.convergence.max_epochs == 0 and s.sft.order == "global"
  p = progressive.prepare(context, progressive.Settings(max_epochs=7), base)
  assert epochs_of(p) == TRAINED and p.sft.convergence.max_epochs == 0 and p.sft.progressive.enabled
  for arm in (s, p, arms.exact_epochs(base, context.trained_phases())):  # each loads as a config of its own
    assert config_lib.load(config_lib.config_dict(arm)).sft == arm.sft


def test_the_online_arm_replays_the_converged_baselines_schedule(converged):
  """The online arm keeps training to convergence with each phase's plateau fixed where the
  baseline's criterion held (epoch 3 and 6 of 4 and 7), so the schedule is the baseline's; its
  settings become `sft.online`, checked before anything runs."""
  context, config = converged
  base = _arm_config(context, config)
  settings = online.Settings(model="/m.json", share=0.5, threshold=0.3, every_steps=20, replay_causes=("I", "V"))
  arm = online.prepare(context, settings, base)
  assert arm.sft.convergence.plateaus == (3, 6) and arm.sft.convergence.max_epochs == 9
  assert arm.sft.phases == config.sft.phases and not arm.detect.require_converged
  got = arm.sft.online
  assert (got.model, got.replay_share, got.threshold, got.every_steps, got.replay_causes) == (
    "/m.json",
    0.5,
    0.3,
    20,
    ("I", "V"),
  )
  assert config_lib.load(config_lib.config_dict(arm)).sft == arm.sft
  longer = online.prepare(context, dataclasses.replace(settings, extra_epochs=5), base).sft.convergence
  assert (longer.plateaus, longer.max_epochs) == ((3, 11), 11)  # more compute: the last plateau later
  unconverged = dataclasses.replace(config.sft.convergence, max_epochs=0)  # a baseline trained fixed epochs
  unconverged = dataclasses.replace(base, sft=dataclasses.replace(base.sft, convergence=unconverged))
  fixed = arms.baseline_schedule(unconverged, context)
  assert fixed.sft.convergence.plateaus == () and {p.name: p.epochs for p in fixed.sft.phases} == TRAINED
  longer = arms.baseline_schedule(unconverged, context, 5)
  assert {p.name: p.epochs for p in longer.sft.phases} == {"one": 4, "two": 12}
  cfg = config_lib.config_dict(config)
  for bad, field in (
    ({}, "model"),
    ({"model": "/m.json", "share": 0.0}, "share"),
    ({"model": "/m.json", "share": 1.5}, "share"),
    ({"model": "/m.json", "replay_causes": ("III",)}, "replay_causes"),
  ):
    cfg.interventions.arms = ({"name": "o", "intervention": "online", "settings": bad},)
    with pytest.raises(ConfigError, match=rf"interventions.arms\[0\].settings.{field}"):
      config_lib.load(cfg)


def test_trained_phases_of_a_baseline_without_sft_phases(tmp_path):
  """Phases formed from the records' `phase` field become named entries holding the same examples."""
  layout = Layout(str(tmp_path / "run"))
  os.makedirs(layout.root)
  frame = pd.DataFrame({"id": ["a", "b", "c", "d"], "dataset": ["x", "y", "x", "y"], "phase": [3, 1, 3, 1]})
  frame.to_parquet(layout.examples)
  _write_sft_summary(
    layout,
    {"convergence": {"phases": {"phase1": {"converged": True}, "phase3": {"converged": True, "trained_epochs": 6}}}},
  )
  cfg = config_lib.config_dict()
  cfg.sft.epochs = 2
  config = config_lib.load(cfg)
  context = arms.Context(config, layout, layout.arm("x"), pd.DataFrame())
  phases = context.trained_phases()
  assert [(p.name, p.phase, p.epochs) for p in phases] == [("phase1", 1, 2), ("phase3", 3, 6)]
  implicit = batches.plan_phases(frame["dataset"].to_numpy(object), frame["phase"].to_numpy(), (), 2)
  explicit = batches.plan_phases(frame["dataset"].to_numpy(object), frame["phase"].to_numpy(), phases, 2)
  assert [(s.name, s.examples.tolist()) for s in implicit] == [(s.name, s.examples.tolist()) for s in explicit]
  arm = epochs.prepare(context, epochs.Settings(extra=10), arms.base_config(config, layout))
  assert [p.epochs for p in arm.sft.phases] == [12, 16] and arm.sft.convergence.max_epochs == 0


def test_arm_settings_are_checked_before_anything_runs(baseline):
  _, config = baseline
  cfg = config_lib.config_dict(config)
  cfg.interventions.arms = ({"name": "more", "intervention": "epochs", "settings": {"phases": ("three",)}},)
  with pytest.raises(ConfigError, match=r"interventions.arms\[0\].settings.phases.*three"):
    config_lib.load(cfg)
  cfg.interventions.arms = ({"name": "k", "intervention": "knowledge", "settings": {"weight": 2.0}},)
  with pytest.raises(ConfigError, match=r"interventions.arms\[0\].settings.weight"):
    config_lib.load(cfg)
  cfg.interventions.arms = ({"name": "k", "intervention": "nope"},)
  with pytest.raises(ConfigError, match=r"interventions.arms\[0\].intervention"):
    config_lib.load(cfg)
  cfg.interventions.arms = ({"name": "k", "intervention": "knowledge"},)
  cfg.data.knowledge = ()
  with pytest.raises(ConfigError, match=r"data.knowledge.*arm 'k'"):
    config_lib.load(cfg)


def test_retrieval_queries_use_no_answer_unless_asked():
  """ "entities": the slot fillers of each question and prerequisite (words in fewer than min_df
  prompts); "prompt": the question; only "prompt_and_answer" carries the answers."""
  from ilp.interventions import selection

  prompts = [f"what is the code of p{i} ?" for i in range(6)] + ["where was p0 born ?"]
  rows = pd.DataFrame({"id": ["a", "b"], "prompt": [prompts[1], "what is the code of the mayor of zed ?"]})
  rows["reference"] = ["c123", "c999"]
  meta = pd.Series(
    [json.dumps({}), json.dumps({"prerequisites": [{"prompt": "who is the mayor of zed ?", "response": "p4"}]})]
  )
  entities = selection.queries(rows, meta, "entities", prompts, min_df=3)
  assert entities == [("a", "p1"), ("b", "mayor zed"), ("b", "who mayor zed")]
  assert selection.queries(rows, meta, "prompt", prompts, 3) == [
    ("a", prompts[1]),
    ("b", rows["prompt"][1]),
    ("b", "who is the mayor of zed ?"),
  ]
  leaky = selection.queries(rows, meta, "prompt_and_answer", prompts, 3)
  assert [q for _, q in leaky] == [f"{prompts[1]} c123", f"{rows['prompt'][1]} c999", "who is the mayor of zed ? p4"]
  assert not any("c123" in q or "c999" in q for _, q in entities)


def test_conflict_resolution_with_no_group_deletes_nothing():
  """No near-duplicate group holds a targeted example: every rule deletes nothing (a bool series,
  so selecting the kept members still selects rows)."""
  empty = pd.DataFrame({"id": [], "prompt": [], "reference": [], "group": []})
  for rule in ("minority", "none"):
    assert conflict.deleted(empty, rule).dtype == bool and empty[~conflict.deleted(empty, rule)].columns.tolist() == [
      "id",
      "prompt",
      "reference",
      "group",
    ]
