"""The evaluation against a world's ground truth on small hand-made tables: per-group rates and
targets, the diagnosis' confusion matrix and scores, the sensitivity's moved thresholds, and the
interventions' cuts, each against a direct computation (the scripts run them on whole runs in
test_world.py and test_arms.py)."""

import json

import numpy as np
import pandas as pd
import pytest

from ilp.detection import columns as col
from ilp.diagnosis import diagnose
from ilp.diagnosis.attribution import CAUSES, LEARNED, UNATTRIBUTED
from ilp.interventions import compare
from ilp.interventions.config import ArmConfig
from ilp.layout import Layout
from ilp.world import diagnosis_validation, evaluation, interventions_evaluation, sensitivity
from ilp.world.config import CAUSES as PLANTED
from ilp.world.files import GROUND_TRUTH

# Per example: planted group, unlearned, attributed cause, final exact match.
EXAMPLES = [
  ("control", False, LEARNED, True),
  ("control", False, LEARNED, True),
  ("control", True, "IV", False),
  ("control", False, LEARNED, True),
  ("missing", True, "I", False),
  ("missing", True, "II", False),
  ("missing", False, LEARNED, True),
  ("conflict", True, "II", False),
  ("conflict", True, UNATTRIBUTED, True),
  ("inconsistent", True, "III", False),
  ("duplicate", False, LEARNED, True),
  ("forgetting", True, "IV", False),
  ("forgetting", True, "I", False),
  ("interference", True, "I", False),
]


def _world_run(tmp_path, free_form: bool = False) -> tuple[Layout, pd.DataFrame]:
  """A work directory holding only a world's ground truth and summary, and the diagnosis table."""
  layout = Layout(str(tmp_path / "run"))
  (tmp_path / "run" / "world").mkdir(parents=True)
  with open(f"{layout.world}/{GROUND_TRUTH}", "w") as f:
    for i, (group, *_) in enumerate(EXAMPLES):
      f.write(json.dumps({"id": f"x{i}", "group": group, "cause": PLANTED[group]}) + "\n")
  with open(f"{layout.world}/world.json", "w") as f:
    json.dump({"config": {"free_form": free_form}}, f)
  table = pd.DataFrame(
    {
      col.ID: [f"x{i}" for i in range(len(EXAMPLES))],
      col.UNLEARNED: [e[1] for e in EXAMPLES],
      col.CAUSE: [e[2] for e in EXAMPLES],
      col.FINAL_EXACT_MATCH: [e[3] for e in EXAMPLES],
    }
  )
  return layout, table


def test_group_rates_and_targets_against_a_direct_computation():
  rng = np.random.default_rng(0)
  groups = [g for g, *_ in EXAMPLES] * 5
  table = pd.DataFrame(
    {"group": groups, "gen_unlearned": rng.random(len(groups)) < 0.4, "mc_unlearned": rng.random(len(groups)) < 0.3}
  )
  protocols = evaluation.group_rates(table)
  assert set(protocols) == {"multiple_choice", "generative"}
  for protocol, prefix in (("multiple_choice", "mc_"), ("generative", "gen_")):
    result = protocols[protocol]
    for group, rows in table.groupby("group"):
      assert result["groups"][group] == {
        "examples": len(rows),
        "unlearned_rate": pytest.approx(rows[f"{prefix}unlearned"].mean()),
      }
    control = table.loc[table["group"] == "control", f"{prefix}unlearned"].mean()
    assert result["targets"]["control_at_most_5pct"] == (control <= 0.05)
    for cause in ("I", "II", "III", "IV", "V"):
      members = table["group"].map(PLANTED).eq(cause) & (table["group"] != "duplicate")
      if not members.any():
        assert f"{cause}_rate" not in result["targets"]
        continue
      rate = table.loc[members, f"{prefix}unlearned"].mean()
      assert result["targets"][f"{cause}_rate"] == pytest.approx(rate)
      assert result["targets"][f"{cause}_at_least_25pct_and_3x_control"] == (rate >= 0.25 and rate >= 3 * control)
  assert set(evaluation.group_rates(table.drop(columns="gen_unlearned"))) == {"multiple_choice"}


def test_diagnosis_validation_against_a_direct_computation(tmp_path):
  layout, table = _world_run(tmp_path)
  result = diagnosis_validation.validate(layout, table)
  planted = [PLANTED[g] or "none" for g, *_ in EXAMPLES]
  unlearned = [(p, e[2]) for p, e in zip(planted, EXAMPLES) if e[1]]
  for row, counts in result["confusion"].items():
    for cause, n in counts.items():
      assert n == sum(1 for p, c in unlearned if p == row and c == cause), (row, cause)
  scored = []
  for cause in CAUSES:
    hit = sum(1 for p, c in unlearned if p == c == cause)
    planted_n = sum(1 for p, _ in unlearned if p == cause)
    attributed = [p for p, c in unlearned if c == cause]
    v = result["per_cause"][cause]
    if not planted_n and not attributed:
      assert v["f1"] is None and v["precision"] is None
      continue
    precision = hit / max(sum(1 for p in attributed if p != "none"), 1)
    recall = hit / max(planted_n, 1)
    f1 = 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)
    assert (v["precision"], v["recall"], v["f1"]) == pytest.approx((precision, recall, f1))
    assert v["precision_with_control"] == pytest.approx(hit / max(len(attributed), 1))
    scored.append(f1)
  # cause IV: one control example and one forgetting example attributed, the forgetting one right
  assert result["per_cause"]["IV"]["precision"] == 1.0 and result["per_cause"]["IV"]["precision_with_control"] == 0.5
  assert result["per_cause"]["V"]["f1"] is None  # nothing planted as V is unlearned, nothing attributed to it
  assert result["macro_f1"] == pytest.approx(np.mean(scored))
  assert result["unattributed_share"] == pytest.approx(1 / len(unlearned))
  assert result["detection"]["control_false_positive_rate"] == pytest.approx(1 / 4)
  # every planted example the final model fails is unlearned (the conflict one it reproduces is not counted)
  assert result["detection"]["recall_of_failed_planted"] == 1.0
  assert result["detection"]["unlearned_rate_by_planted_cause"]["I"] == pytest.approx(3 / 4)
  # cause I: two of its three unlearned examples found, and two of the three attributed to it right
  assert (result["per_cause"]["I"]["recall"], result["per_cause"]["I"]["precision"]) == pytest.approx((2 / 3, 2 / 3))
  assert result["targets"] == {
    "macro_f1": result["macro_f1"] >= 0.85,
    "every_recall": False,
    "every_precision": False,
    "control_fp": False,
  }
  free = diagnosis_validation.validate(_world_run(tmp_path / "free", free_form=True)[0], table)
  assert free["free_form"] and free["targets"]["macro_f1"] == (free["macro_f1"] >= 0.75)
  text = diagnosis_validation.report("run", result)
  assert "macro-F1" in text and "(no unlearned planted example, none attributed)" in text


def test_the_diagnosis_sees_the_label_and_evidence_it_is_given():
  detection = pd.DataFrame(
    {
      "gen_unlearned": [True, False, False],
      "gen_unlearned_sampled": [False, True, False],
      "gen_expected_pass": [0.1, 0.5, 0.15],
      col.PREREQUISITES: [0, 3, 0],
      col.PREREQUISITES_KNOWN: [np.nan, 1.0, np.nan],
    }
  )
  same = diagnosis_validation.with_evidence(detection, "generative", "as_run", "as_run", 0.2)
  pd.testing.assert_frame_equal(same, detection)
  sampled = diagnosis_validation.with_evidence(detection, "generative", "sampled", "no_corpus", 0.2)
  assert sampled["gen_unlearned"].tolist() == [False, True, False] and col.PREREQUISITES in sampled
  expected = diagnosis_validation.with_evidence(detection, "generative", "expected", "plain", 0.2)
  assert expected["gen_unlearned"].tolist() == [True, False, True]
  assert col.PREREQUISITES not in expected and col.PREREQUISITES_KNOWN not in expected
  assert detection["gen_unlearned"].tolist() == [True, False, False]  # the input is left as it was
  assert diagnosis_validation.corpus_documents(diagnose.DiagnoseConfig(), None, "plain") is None


def test_a_moved_threshold_is_scaled_and_a_share_capped_at_one():
  default = sensitivity.defaults("generative")
  assert default.protocol == "generative"
  settings, value = sensitivity.moved(default, "rules.entity_lift", 1.25)
  assert value == pytest.approx(default.rules.entity_lift * 1.25) and settings.rules.entity_lift == value
  assert settings.signals == default.signals and settings.rules.jsd == default.rules.jsd
  share = "rules.corpus_coverage"
  settings, value = sensitivity.moved(default, share, 1 / default.rules.corpus_coverage + 1)
  assert share in sensitivity.CAPPED and value == 1.0 == settings.rules.corpus_coverage


def test_an_arms_cuts_against_a_direct_computation():
  base = pd.DataFrame(
    {
      col.ID: [f"x{i}" for i in range(len(EXAMPLES))],
      col.UNLEARNED: [e[1] for e in EXAMPLES],
      col.CAUSE: [e[2] for e in EXAMPLES],
      "group": [e[0] for e in EXAMPLES],
    }
  )
  arm_unlearned = base[col.UNLEARNED].to_numpy().copy()
  arm_unlearned[[4, 12, 13]] = False  # the arm teaches three of the four examples attributed to I
  arm_unlearned[0] = True  # and breaks a control example
  arm = pd.DataFrame({col.ID: base[col.ID], col.UNLEARNED: arm_unlearned}).iloc[:-1]  # one example it lacks
  entry = interventions_evaluation.arm_entry(
    base, ArmConfig("knowledge", "knowledge", {"causes": ("I",)}), arm, samples=200
  )
  joined = base.iloc[:-1].assign(after=arm_unlearned[:-1])
  target = joined[joined[col.CAUSE] == "I"]
  assert entry["examples_compared"] == len(base) - 1 and entry["examples_missing"] == 1
  assert entry["target"]["examples"] == len(target) == 2
  assert (entry["target"]["baseline"], entry["target"]["arm"]) == (target[col.UNLEARNED].mean(), target["after"].mean())
  assert entry["target"]["relative_reduction"] == pytest.approx(1.0)
  others = joined[joined[col.UNLEARNED] & (joined[col.CAUSE] != "I")]
  assert entry["others"]["relative_reduction"] == pytest.approx(
    (others[col.UNLEARNED].mean() - others["after"].mean()) / others[col.UNLEARNED].mean()
  )
  control = joined[joined["group"] == "control"]
  assert entry["control"]["change"] == pytest.approx(control["after"].mean() - control[col.UNLEARNED].mean())
  assert entry["expectations"] == {"target_cut_40pct": True, "twice_the_others": True, "control_within_2_points": False}
  for group, rows in joined.groupby("group"):
    assert entry["planted_groups"][group] == {
      "baseline": rows[col.UNLEARNED].mean(),
      "arm": rows["after"].mean(),
      "examples": len(rows),
    }
  lo, hi = compare.paired_bootstrap(target[col.UNLEARNED].to_numpy(float), target["after"].to_numpy(float), 200, 0)
  assert entry["target"]["change_interval"] == [lo, hi]
  assert interventions_evaluation.change(np.array([]), np.array([]), 10) == {"examples": 0}


def test_the_response_matrix_pooled_over_runs_against_a_direct_computation(tmp_path):
  """Two runs (seeds): each cell pools the examples every baseline attributed to the cause, paired
  with the same examples in the arm or in an equal-compute control that ran; per-run figures too."""
  import os
  import types

  rng = np.random.default_rng(3)
  runs, pooled = [], {}
  for k in range(2):
    layout = Layout(str(tmp_path / f"run{k}"))
    n = 40
    cause = rng.choice(["I", "III", LEARNED], n)
    base = pd.DataFrame({col.ID: [f"e{i}" for i in range(n)], col.UNLEARNED: cause != LEARNED, col.CAUSE: cause})
    os.makedirs(os.path.dirname(layout.attribution))
    base.to_parquet(layout.attribution)
    for name in ("knowledge", "more_epochs.e9") if k == 0 else ("knowledge",):
      after = base[col.UNLEARNED].to_numpy() & (rng.random(n) < 0.6)
      os.makedirs(os.path.dirname(layout.arm(name).attribution))
      pd.DataFrame({col.ID: base[col.ID], col.UNLEARNED: after}).to_parquet(layout.arm(name).attribution)
      for c in ("I", "III"):
        sel = cause == c
        pooled.setdefault((c, name), []).append((base[col.UNLEARNED].to_numpy()[sel], after[sel]))
    arms = (ArmConfig("knowledge", "knowledge"), ArmConfig("conflict", "conflict"))  # conflict never ran
    runs.append((layout, types.SimpleNamespace(interventions=types.SimpleNamespace(arms=arms))))
  matrix = interventions_evaluation.response_matrix(runs, samples=200)
  assert set(matrix["cells"]) == {"I", "III"} and set(matrix["cells"]["I"]) == {"knowledge", "more_epochs.e9"}
  for (c, name), parts in pooled.items():
    cell = matrix["cells"][c][name]
    before, after = (np.concatenate([p[i] for p in parts]) for i in (0, 1))
    assert cell["examples"] == len(before) and cell["relative_reduction"] == pytest.approx(1 - after.mean())
    assert cell["by_run"][: len(parts)] == pytest.approx([1 - p[1].mean() for p in parts])
    lo, hi = compare.paired_bootstrap(before.astype(float), after.astype(float), 200, 0)
    assert cell["relative_reduction_interval"] == pytest.approx([-hi, -lo])
  assert matrix["cells"]["I"]["more_epochs.e9"]["by_run"][1] is None  # that run had no such control
  assert "I (n=" in interventions_evaluation.matrix_text(matrix)
