"""Arm-versus-baseline statistics against direct computations."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from ilp.interventions import compare


def _table(
  unlearned: list[bool],
  cause: list[str] | None = None,
  ids: list[str] | None = None,
  positions: list[float] | None = None,
) -> pd.DataFrame:
  n = len(unlearned)
  frame = pd.DataFrame(
    {
      "id": ids or [f"e{i}" for i in range(n)],
      "dataset": ["a", "b"] * (n // 2) + ["a"] * (n % 2),
      "phase": [1] * (n // 2) + [2] * (n - n // 2),
      "unlearned": np.asarray(unlearned, bool),
      "greedy_correct": ~np.asarray(unlearned, bool),
      "greedy_text": ["x y"] * n,
      "reference": ["x y"] * n,
      "last_visit_position": np.linspace(0, 1, n) if positions is None else positions,
    }
  )
  if cause is not None:
    frame["cause"] = cause
  return frame


def _constructed() -> tuple[pd.DataFrame, pd.DataFrame]:
  """10 examples of cause I (8 unlearned -> 2 in the arm), 10 unlearned of cause IV (stay), 10
  learned (one lost in the arm)."""
  cause = ["I"] * 10 + ["IV"] * 10 + ["learned"] * 10
  base = _table([True] * 8 + [False] * 2 + [True] * 10 + [False] * 10, cause)
  arm = _table([True] * 2 + [False] * 8 + [True] * 10 + [True] + [False] * 9)
  return base, arm


def _loop_quantiles(values: list[float], level: float = 0.95) -> tuple[float, float]:
  return tuple(np.quantile(values, [(1 - level) / 2, (1 + level) / 2]))


def test_paired_bootstrap_and_mean_interval_match_a_direct_loop():
  rng = np.random.default_rng(0)
  base, arm = rng.random(40) < 0.6, rng.random(40) < 0.3
  draws = np.random.default_rng(4).integers(0, 40, size=(500, 40))
  low, high = compare.paired_bootstrap(base, arm, 500, seed=4)
  assert (low, high) == pytest.approx(_loop_quantiles([arm[d].mean() - base[d].mean() for d in draws]))
  assert compare.mean_interval(arm, 500, 4) == pytest.approx(_loop_quantiles([arm[d].mean() for d in draws]))
  assert low <= arm.mean() - base.mean() <= high
  narrow = compare.paired_bootstrap(base, arm, 500, 4, level=0.5)
  assert low < narrow[0] < narrow[1] < high
  assert compare.paired_bootstrap(base, arm, 500, 4) == (low, high)  # seeded


def test_bootstrap_in_chunks_draws_the_same_indices_as_a_loop(monkeypatch):
  monkeypatch.setattr(compare, "CHUNK", 100)  # 3 resamples of 30 per draw
  values = np.random.default_rng(1).random(30)
  rng = np.random.default_rng(7)
  direct = [values[i].mean() for rows in (3, 3, 3, 1) for i in rng.integers(0, 30, size=(rows, 30))]
  assert compare.bootstrap_means(values[:, None], 10, 7)[:, 0] == pytest.approx(direct)


def test_interval_narrows_with_more_examples():
  rng = np.random.default_rng(2)
  base, arm = rng.random(1000) < 0.5, rng.random(1000) < 0.4
  width = lambda n: np.subtract(*compare.paired_bootstrap(base[:n], arm[:n], 500, 0)[::-1])
  assert width(1000) < width(100) < width(20)


def test_rates_on_a_hand_made_table():
  base, arm = _constructed()
  table = compare.rates(base, arm, 200, 0).set_index(["group_kind", "group"])
  assert list(table.index) == [
    ("overall", "all"),
    ("dataset", "a"),
    ("dataset", "b"),
    ("phase", "1"),
    ("phase", "2"),
    ("cause", "I"),
    ("cause", "IV"),
    ("cause", "unlearned"),
    ("cause", "learned"),
  ]
  overall = table.loc[("overall", "all")]
  assert (overall["n"], overall["baseline_rate"], overall["arm_rate"]) == (
    30,
    pytest.approx(18 / 30),
    pytest.approx(13 / 30),
  )
  assert overall["change"] == pytest.approx(-5 / 30) and overall["relative_change"] == pytest.approx(-5 / 18)
  # data set a = even positions: I 4 of 5 -> 1 of 5, IV 5 -> 5, learned 0 -> 1 (e20 is even)
  assert table.loc[("dataset", "a"), ["n", "baseline_rate", "arm_rate"]].tolist() == pytest.approx([15, 9 / 15, 7 / 15])
  # phase 1 = e0..e14: I 8 -> 2, IV 5 -> 5
  assert table.loc[("phase", "1"), ["n", "baseline_rate", "arm_rate"]].tolist() == pytest.approx([15, 13 / 15, 7 / 15])
  assert table.loc[("cause", "I"), "relative_change"] == pytest.approx((0.2 - 0.8) / 0.8)
  assert table.loc[("cause", "IV"), ["baseline_rate", "arm_rate", "change"]].tolist() == [1, 1, 0]
  assert table.loc[("cause", "unlearned"), ["n", "arm_rate"]].tolist() == pytest.approx([18, 12 / 18])
  learned = table.loc[("cause", "learned")]  # baseline-learned: 2 of I + 10
  assert (learned["n"], learned["arm_rate"]) == (12, pytest.approx(1 / 12)) and math.isnan(learned["relative_change"])
  # every interval is the bootstrap of that group, and holds its estimate
  sel = (base["cause"] == "I").to_numpy()
  b, a = base["unlearned"].to_numpy(float)[sel], arm["unlearned"].to_numpy(float)[sel]
  row = table.loc[("cause", "I")]
  assert (row["change_low"], row["change_high"]) == pytest.approx(compare.paired_bootstrap(b, a, 200, 0))
  assert (row["baseline_low"], row["baseline_high"]) == pytest.approx(compare.mean_interval(b, 200, 0))
  assert (row["arm_low"], row["arm_high"]) == pytest.approx(compare.mean_interval(a, 200, 0))
  for _, r in table.iterrows():
    assert r["change_low"] <= r["change"] <= r["change_high"]
    assert r["baseline_low"] <= r["baseline_rate"] <= r["baseline_high"]
    assert r["arm_low"] <= r["arm_rate"] <= r["arm_high"]


def test_difference_in_differences_on_a_constructed_case():
  base, arm = _constructed()
  did = compare.difference_in_differences(base, arm, ["I"], 500, 3)
  assert (did["target_n"], did["other_n"]) == (10, 10)
  assert did["target_change"] == pytest.approx(-0.6) and did["other_change"] == 0
  assert did["did"] == pytest.approx(-0.6) and did["did_low"] <= -0.6 <= did["did_high"] < 0
  # stratified: each group resampled on its own (seed, seed + 1)
  diff = arm["unlearned"].to_numpy(float) - base["unlearned"].to_numpy(float)
  target, other = diff[:10], diff[10:20]
  t = [target[i].mean() for i in np.random.default_rng(3).integers(0, 10, size=(500, 10))]
  o = [other[i].mean() for i in np.random.default_rng(4).integers(0, 10, size=(500, 10))]
  assert (did["did_low"], did["did_high"]) == pytest.approx(_loop_quantiles(np.subtract(t, o)))
  assert (did["target_change_low"], did["target_change_high"]) == pytest.approx(_loop_quantiles(t))
  control = compare.difference_in_differences(base, arm, [], 500, 3)
  assert math.isnan(control["did"]) and math.isnan(control["target_change"]) and control["target_n"] == 0
  assert control["other_n"] == 18 and control["other_change"] == pytest.approx(-6 / 18)


def test_missing_ids_are_left_out_and_counted():
  base, arm = _constructed()
  kept = arm[~arm["id"].isin(["e0", "e1", "e10"])]  # two of I (unlearned -> unlearned), one of IV
  table = compare.rates(base, kept, 200, 0).set_index(["group_kind", "group"])
  assert table.loc[("overall", "all"), "n"] == 27
  assert table.loc[("cause", "I"), ["n", "baseline_rate", "arm_rate"]].tolist() == pytest.approx([8, 6 / 8, 0])
  did = compare.difference_in_differences(base, kept, ["I"], 200, 0)
  assert (did["target_n"], did["other_n"], did["target_change"]) == (8, 9, pytest.approx(-0.75))
  extra = pd.concat([kept, _table([True], ids=["new"])], ignore_index=True)
  _, summary = compare.comparison(base, {"x": extra}, {"x": ["I"]}, samples=200)
  assert (summary["x"]["examples"], summary["x"]["missing_from_arm"], summary["x"]["arm_only"]) == (27, 3, 1)
  with pytest.raises(pd.errors.MergeError):
    compare.rates(base, pd.concat([arm, arm.iloc[:1]]), 200, 0)  # an id twice is an error, not a weight


def test_greedy_accuracy_is_the_mean_with_its_interval():
  frame = pd.DataFrame({"greedy_correct": [True, False, True, True]})
  out = compare.greedy_accuracy(frame, 300, 1)
  assert out["rate"] == 0.75 and out["examples"] == 4
  assert (out["low"], out["high"]) == pytest.approx(compare.mean_interval(np.array([1, 0, 1, 1.0]), 300, 1))


def _lcs(a: list[str], b: list[str]) -> int:
  table = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
  for i, x in enumerate(a):
    for j, y in enumerate(b):
      table[i + 1][j + 1] = table[i][j] + 1 if x == y else max(table[i][j + 1], table[i + 1][j])
  return table[-1][-1]


def test_rouge_by_position_against_a_direct_lcs():
  texts = [
    ("c3 k2 j1", "c3 k4 j1"),
    ("z8", "z9"),
    ("p17 c2", "p17 c2"),
    ("w x y z", "z y x w"),
    ("x", "x y z"),
    ("p17", "p17"),
  ]
  frame = pd.DataFrame(
    {
      "greedy_text": [t for t, _ in texts],
      "reference": [r for _, r in texts],
      "last_visit_position": [0.02, 0.1, 0.5, 0.95, 0.47, math.nan],
    }
  )
  direct = []
  for p, r in texts:
    lcs, pa, ra = _lcs(p.split(), r.split()), len(p.split()), len(r.split())
    direct.append(0 if not lcs else 2 * (lcs / pa) * (lcs / ra) / (lcs / pa + lcs / ra))
  out = compare.rouge_by_position(frame, edge=0.1)
  assert out["first"] == {"examples": 2, "rouge_l": pytest.approx(np.mean(direct[:2]))}
  assert out["middle"] == {"examples": 2, "rouge_l": pytest.approx(np.mean([direct[2], direct[4]]))}
  assert out["last"] == {"examples": 1, "rouge_l": pytest.approx(direct[3])}
  assert direct[2] == 1 and direct[1] == 0  # "p17" and "z8" are tokens
  assert math.isnan(compare.rouge_by_position(frame.iloc[:0])["first"]["rouge_l"])


def test_summary_is_json_ready():
  base, arm = _constructed()
  control = arm.assign(unlearned=base["unlearned"])
  table, summary = compare.comparison(base, {"m1": arm, "control": control}, {"m1": ("I",)}, samples=200)
  assert list(table.columns[:3]) == ["arm", "group_kind", "group"] and set(table["arm"]) == {"m1", "control"}
  assert json.loads(json.dumps(summary, allow_nan=False)) == summary
  m1 = summary["m1"]
  assert m1["target_reduction"] == {"I": pytest.approx(0.75)}
  assert m1["difference_in_differences"]["did"] == pytest.approx(-0.6)
  assert m1["greedy_accuracy"]["baseline"]["rate"] == pytest.approx(12 / 30)
  assert m1["greedy_accuracy"]["arm"]["rate"] == pytest.approx(17 / 30)
  assert m1["by_cause"]["learned"]["relative_change"] is None
  assert summary["control"]["difference_in_differences"]["did"] is None and summary["control"]["targets"] == []
  assert summary["control"]["unlearned"]["change"] == 0
  assert m1["rouge_l_by_position"]["baseline"]["first"] == {"examples": 3, "rouge_l": 1.0}


def test_response_matrix_reads_the_relative_reduction_per_cause_and_arm():
  summary = {
    "m1": {"by_cause": {"I": {"relative_change": -0.75}, "IV": {"relative_change": 0.5}}},
    "m4": {"by_cause": {"I": {"relative_change": None}, "IV": {"relative_change": -1.0}}},
  }
  assert compare.response_matrix(summary) == {"I": {"m1": 0.75, "m4": None}, "IV": {"m1": -0.5, "m4": 1.0}}


def test_reduction_interval_is_the_paired_change_interval_over_the_baseline_rate():
  entry = {"baseline_rate": 0.5, "change": -0.2, "change_low": -0.3, "change_high": -0.1}
  assert compare.reduction_interval(entry) == pytest.approx((0.2, 0.6))
  assert all(x != x for x in compare.reduction_interval({"baseline_rate": 0.0, "change_low": 0, "change_high": 0}))
