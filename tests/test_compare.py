"""Arm-versus-baseline statistics against direct computations."""
import json
import math

import numpy as np
import pandas as pd
import pytest

from ilp.interventions import compare


def _table(unlearned, cause=None, ids=None, greedy=None, positions=None):
  n = len(unlearned)
  frame = pd.DataFrame({"id": ids or [f"e{i}" for i in range(n)], "dataset": ["a", "b"] * (n // 2) + ["a"] * (n % 2),
                        "phase": [1] * (n // 2) + [2] * (n - n // 2), "unlearned": np.asarray(unlearned, bool),
                        "greedy_correct": ~np.asarray(unlearned, bool) if greedy is None else np.asarray(greedy, bool),
                        "greedy_text": ["x y"] * n, "reference": ["x y"] * n,
                        "last_visit_position": np.linspace(0, 1, n) if positions is None else positions})
  if cause is not None:
    frame["cause"] = cause
  return frame


def test_paired_bootstrap_matches_a_direct_loop():
  rng = np.random.default_rng(0)
  base, arm = rng.random(40) < 0.6, rng.random(40) < 0.3
  low, high = compare.paired_bootstrap(base, arm, 500, seed=4)
  draws = np.random.default_rng(4).integers(0, 40, size=(500, 40))
  direct = [arm[d].mean() - base[d].mean() for d in draws]
  assert (low, high) == pytest.approx(tuple(np.quantile(direct, [0.025, 0.975])))
  assert low <= arm.mean() - base.mean() <= high
  wide = np.subtract(*compare.paired_bootstrap(base[:10], arm[:10], 500, 4)[::-1])
  assert high - low < wide


def test_rates_and_difference_in_differences_on_a_constructed_case():
  # 10 examples of cause I (8 unlearned -> 2 in the arm), 10 other unlearned (stay), 10 learned (one lost)
  cause = ["I"] * 10 + ["IV"] * 10 + ["learned"] * 10
  base = _table([True] * 8 + [False] * 2 + [True] * 10 + [False] * 10, cause)
  arm = _table([True] * 2 + [False] * 8 + [True] * 10 + [True] + [False] * 9)
  joined = compare.paired(base, arm)
  table = compare.rates(joined, 200, 0).set_index(["group_kind", "group"])
  assert table.loc[("overall", "all"), "baseline_rate"] == pytest.approx(18 / 30)
  assert table.loc[("overall", "all"), "arm_rate"] == pytest.approx(13 / 30)
  assert table.loc[("cause", "I"), "relative_change"] == pytest.approx((0.2 - 0.8) / 0.8)
  assert table.loc[("cause", "IV"), "change"] == 0
  assert table.loc[("cause", "learned"), "arm_rate"] == pytest.approx(1 / 12)   # baseline-learned: 2 of I + 10
  assert table.loc[("phase", "1"), "n"] == 15 and table.loc[("dataset", "a"), "n"] == 15
  did = compare.difference_in_differences(joined, ["I"], 500, 0)
  assert did["target_change"] == pytest.approx(-0.6) and did["other_change"] == 0
  assert did["did"] == pytest.approx(-0.6) and did["did_low"] <= -0.6 <= did["did_high"] and did["did_high"] < 0
  assert (did["target_n"], did["other_n"]) == (10, 10)
  control = compare.difference_in_differences(joined, [], 500, 0)
  assert math.isnan(control["did"]) and control["other_n"] == 18


def test_missing_ids_are_left_out_and_counted():
  base = _table([True, False, True, False], ["I", "learned", "II", "learned"])
  arm = _table([False, False], ids=["e0", "e1"])
  table, summary = compare.comparison(base, {"x": arm}, {"x": ("I",)}, samples=200)
  assert summary["x"]["examples"] == 2 and summary["x"]["missing_from_arm"] == 2
  assert summary["x"]["unlearned"]["baseline_rate"] == 0.5 and summary["x"]["unlearned"]["arm_rate"] == 0
  assert set(table["arm"]) == {"x"}
  json.dumps(summary)    # JSON-ready (NaN written as null)


def _lcs(a, b):
  table = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
  for i, x in enumerate(a):
    for j, y in enumerate(b):
      table[i + 1][j + 1] = table[i][j] + 1 if x == y else max(table[i][j + 1], table[i + 1][j])
  return table[-1][-1]


def test_rouge_by_position_against_a_direct_lcs():
  texts = [("c3 k2 j1", "c3 k4 j1"), ("z8", "z9"), ("p1 c2", "p1 c2"), ("w x y z", "z y x w"), ("x", "x y z")]
  frame = pd.DataFrame({"greedy_text": [t for t, _ in texts], "reference": [r for _, r in texts],
                        "last_visit_position": [0.02, 0.08, 0.5, 0.95, 0.47]})
  direct = []
  for p, r in texts:
    lcs, pa, ra = _lcs(p.split(), r.split()), len(p.split()), len(r.split())
    direct.append(0 if not lcs else 2 * (lcs / pa) * (lcs / ra) / (lcs / pa + lcs / ra))
  out = compare.rouge_by_position(frame, edge=0.1)
  assert out["first"] == {"examples": 2, "rouge_l": pytest.approx(np.mean(direct[:2]))}
  assert out["middle"] == {"examples": 2, "rouge_l": pytest.approx(np.mean([direct[2], direct[4]]))}
  assert out["last"] == {"examples": 1, "rouge_l": pytest.approx(direct[3])}


def test_response_matrix_reads_the_relative_reduction_per_cause_and_arm():
  summary = {"m1": {"by_cause": {"I": {"relative_change": -0.75}, "IV": {"relative_change": 0.5}}},
             "m4": {"by_cause": {"I": {"relative_change": None}, "IV": {"relative_change": -1.0}}}}
  assert compare.response_matrix(summary) == {"I": {"m1": 0.75, "m4": None}, "IV": {"m1": -0.5, "m4": 1.0}}
