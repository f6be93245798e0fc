"""Training compute and the equal-compute "more epochs" controls against direct computations: the
token totals from hand-written summary files, the epochs chosen for a budget (against a search
over every epoch count), the arms stage running each control after its arm, the comparison of an
arm with its control (against `compare.comparison` on those two tables) and bad config values."""

from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd
import pytest

from ilp import config as config_lib
from ilp.interventions import arms, compare, epochs, equal_compute
from ilp.interventions import config as arms_config
from ilp.interventions.equal_compute import Raised
from ilp.layout import Layout
from ilp.stages import compare as compare_stage
from ilp.typed import ConfigError
from tests.unit.test_compare import _constructed

LENGTHS = np.arange(30) % 7 + 3  # the examples' real tokens
PHASE = np.array([1] * 15 + [2] * 15)  # e0..e14 phase 1 (2 epochs), e15..e29 phase 2 (3 epochs)
T1, T2 = int(LENGTHS[PHASE == 1].sum()), int(LENGTHS[PHASE == 2].sum())  # one epoch of each phase
T_BASE = 2 * T1 + 3 * T2


def _tokens(real: int) -> dict[str, int]:
  return {"real": real, "padded": 2 * real, "loss": real // 3}


def _write_summary(layout: Layout, stage: str, tokens: dict[str, int] | None) -> None:
  os.makedirs(layout.training(stage), exist_ok=True)
  with open(layout.summary(stage), "w") as f:
    json.dump({"steps": 1} if tokens is None else {"steps": 1, "tokens": tokens}, f)


ARMS = (
  {"name": "m1", "intervention": "knowledge"},
  {"name": "m4", "intervention": "shuffle"},
  {"name": "m5", "intervention": "progressive"},
  {"name": "more", "intervention": "epochs"},
)


def _config(arms=ARMS, **interventions):
  cfg = config_lib.config_dict()
  cfg.sft.phases = ({"name": "one", "phase": 1, "epochs": 2}, {"name": "two", "phase": 2, "epochs": 3})
  cfg.data.update(knowledge=({"path": "/k.jsonl"},), general=({"path": "/g.txt"},))
  cfg.interventions.update(bootstrap_samples=200, arms=arms, **interventions)
  return config_lib.load(cfg)


@pytest.fixture
def run(tmp_path):
  """A baseline that trained its configured epochs (base-model pre-training of 10^6 tokens, not
  counted) and its examples table."""
  layout = Layout(str(tmp_path / "run"))
  _write_summary(layout, "pretrain", _tokens(10**6))
  _write_summary(layout, "sft", _tokens(T_BASE))
  pd.DataFrame(
    {"id": [f"e{i}" for i in range(30)], "dataset": ["a", "b"] * 15, "phase": PHASE, "length": LENGTHS}
  ).to_parquet(layout.examples)
  return layout


def test_compute_sums_the_runs_own_stages(run):
  base = equal_compute.compute(run, equal_compute.BASELINE_STAGES)
  assert base == {"tokens": _tokens(T_BASE), "by_stage": {"sft": _tokens(T_BASE)}, "flops": None}
  cpt = run.arm("cpt")
  _write_summary(cpt, "pretrain", {"real": 500, "padded": 512, "loss": 499})
  _write_summary(cpt, "sft", {"real": 900, "padded": 1400, "loss": 280})
  out = equal_compute.compute(cpt, equal_compute.ARM_STAGES)
  assert out["tokens"] == {"real": 1400, "padded": 1912, "loss": 779} and set(out["by_stage"]) == {"pretrain", "sft"}
  sft_only = run.arm("sft_only")
  _write_summary(sft_only, "sft", _tokens(700))
  assert equal_compute.compute(sft_only, equal_compute.ARM_STAGES)["tokens"] == _tokens(700)
  # FLOPs: 6 N D over the padded tokens, N the model's matmul weights
  m = config_lib.Config().model
  os.makedirs(cpt.final("sft"))
  with open(os.path.join(cpt.final("sft"), "model_config.json"), "w") as f:
    json.dump(m.to_dict(), f)
  n = (
    m.num_layers
    * (m.hidden_size * m.head_dim * (2 * m.num_heads + 2 * m.num_kv_heads) + 3 * m.hidden_size * m.intermediate_size)
    + m.hidden_size * m.vocab_size
  )
  assert equal_compute.compute(cpt, equal_compute.ARM_STAGES)["flops"] == pytest.approx(6 * n * 1912)
  # no count: not run, or run before the counts were recorded
  assert equal_compute.compute(run.arm("none"), equal_compute.ARM_STAGES) is None
  _write_summary(sft_only, "pretrain", None)
  assert equal_compute.compute(sft_only, equal_compute.ARM_STAGES) is None
  _write_summary(run, "sft", None)
  assert equal_compute.compute(run, equal_compute.BASELINE_STAGES) is None


def test_raised_is_the_last_phase_or_every_phase(run):
  examples = pd.read_parquet(run.examples)
  assert equal_compute.raised(_config().sft, examples) == Raised(("two",), 3, T2, 3 * T2)
  assert equal_compute.raised(_config().sft, examples, {"two": 6}) == Raised(("two",), 6, T2, 6 * T2)
  cfg = config_lib.config_dict()
  cfg.sft.epochs = 4
  no_phases = config_lib.load(cfg).sft
  assert equal_compute.raised(no_phases, examples) == Raised((), 4, T1 + T2, 4 * (T1 + T2))
  trained = equal_compute.raised(no_phases, examples, {"phase1": 5, "phase2": 7})
  assert trained == Raised((), 7, T1 + T2, 5 * T1 + 7 * T2)
  cfg.sft.phases = ({"name": "all", "epochs": 2}, {"name": "b", "datasets": ("b",), "epochs": 5})
  b = int(LENGTHS[1::2].sum())
  assert equal_compute.raised(config_lib.load(cfg).sft, examples) == Raised(("b",), 5, b, 5 * b)


def test_trained_epochs_are_read_from_a_converged_baselines_summary(run):
  assert equal_compute.trained_epochs(run) == {}
  with open(run.summary("sft"), "w") as f:
    json.dump(
      {
        "tokens": _tokens(2 * T1 + 6 * T2),
        "convergence": {"phases": {"one": {"converged": True}, "two": {"converged": True, "trained_epochs": 6}}},
      },
      f,
    )
  assert equal_compute.trained_epochs(run) == {"two": 6}
  config = _config()
  _write_summary(run.arm("m1"), "sft", _tokens(2 * T1 + 8 * T2 + 3))
  plan = equal_compute.plan(config, run, config.interventions.arms[0])
  assert (plan.epochs, plan.predicted, plan.name) == (8, 2 * T1 + 8 * T2, "more_epochs.e8")
  # The control trains exactly what T(E) counts: convergence off, phase one as trained, two at E.
  context = arms.Context(config, run, run.arm(plan.name), pd.DataFrame())
  control = epochs.prepare(context, plan.arm.typed_settings(), arms.base_config(config, run))
  assert [p.epochs for p in control.sft.phases] == [2, 8] and control.sft.convergence.max_epochs == 0
  assert sum(p.epochs * t for p, t in zip(control.sft.phases, (T1, T2))) == plan.predicted
  ten_more = epochs.prepare(context, epochs.Settings(extra=10, phases=("two",)), config)  # configs/interventions.py
  assert [p.epochs for p in ten_more.sft.phases] == [2, 6 + 10]


@pytest.mark.parametrize(
  "raised", [Raised(("two",), 3, 7, 21), Raised(("two",), 3, 10, 30), Raised((), 7, 3 + 8, 5 * 3 + 7 * 8)]
)  # phases of 3 and 8 tokens, 5 and 7 epochs
def test_control_epochs_match_a_search_over_every_epoch_count(raised):
  t = raised.epoch_tokens
  tokens = lambda e: 1000 - raised.trained_tokens + e * t  # T(E): the other phases' tokens stay
  assert raised.tokens(1000, 12) == tokens(12)
  for budget in range(900, 1200):
    nearest = min(range(1, 80), key=lambda e: (abs(tokens(e) - budget), -e))  # ties: the larger
    up = min(e for e in range(1, 80) if tokens(e) >= budget)
    assert equal_compute.control_epochs(budget, 1000, raised, "nearest") == nearest, budget
    assert equal_compute.control_epochs(budget, 1000, raised, "up") == up, budget
    if budget >= tokens(1):  # below one epoch in all, E stays 1
      assert abs(tokens(nearest) - budget) <= t / 2 and 0 <= tokens(up) - budget < t
  assert equal_compute.control_epochs(0, 1000, raised, "nearest") == 1


def test_plan_turns_a_measured_budget_into_the_control(run):
  config = _config()
  knowledge, shuffle, progressive, more = config.interventions.arms
  _write_summary(run.arm("m1"), "pretrain", _tokens(int(1.4 * T2)))  # CPT: 1.4 epochs of phase two
  _write_summary(run.arm("m1"), "sft", _tokens(T_BASE + T2))  # plus one more epoch's worth of SFT
  plan = equal_compute.plan(config, run, knowledge)
  assert (plan.budget, plan.baseline, plan.epochs) == (T_BASE + T2 + int(1.4 * T2), T_BASE, 3 + 2)
  assert plan.predicted == T_BASE + 2 * T2 and plan.raised == Raised(("two",), 3, T2, 3 * T2)
  assert plan.name == "more_epochs.e5" and plan.arm.intervention == "epochs"
  control = epochs.prepare(
    arms.Context(config, run, run.arm(plan.name), pd.DataFrame()), plan.arm.typed_settings(), config
  )
  assert [p.epochs for p in control.sft.phases] == [2, 5]
  up = equal_compute.plan(_config(equal_compute_rounding="up"), run, knowledge)
  assert up.epochs == 6 and up.name == "more_epochs.e6"
  # at most half an epoch more than the baseline, or less: the baseline is the control
  for name, real in (("m4", T_BASE + T2 // 2 - 1), ("m5", T_BASE - 4 * T2)):
    _write_summary(run.arm(name), "sft", _tokens(real))
    plan = equal_compute.plan(config, run, shuffle if name == "m4" else progressive)
    assert plan.arm is None and plan.name == "baseline" and (plan.epochs, plan.predicted) == (3, T_BASE)
  _write_summary(run.arm("more"), "sft", _tokens(T_BASE + 7 * T2))
  assert equal_compute.plan(config, run, more) is None  # a control gets none
  assert equal_compute.plan(_config(equal_compute=False), run, knowledge) is None
  _write_summary(run.arm("m1"), "sft", None)
  assert equal_compute.plan(config, run, knowledge) is None  # no count: no control


def test_replay_tokens_come_with_every_epoch_of_the_control(run):
  """A baseline whose SFT replayed half a token per example token: an epoch of the control costs
  1.5 epochs of examples, so the same budget buys fewer epochs (before, controls overshot it)."""
  config = _config()
  knowledge = config.interventions.arms[0]
  _write_summary(run, "sft", {**_tokens(int(1.5 * T_BASE)), "replay": int(0.5 * T_BASE)})
  _write_summary(run.arm("m1"), "pretrain", _tokens(3 * T2))
  _write_summary(run.arm("m1"), "sft", _tokens(int(1.5 * T_BASE)))
  plan = equal_compute.plan(config, run, knowledge)
  t = round(T2 * 1.5)
  assert plan.raised == Raised(("two",), 3, t, 3 * t)
  assert plan.epochs == 3 + 2 and plan.predicted == int(1.5 * T_BASE) + 2 * t  # 3 * T2 of CPT = 2 such epochs


def test_the_arms_stage_runs_each_control_after_its_arm_and_shares_it(run):
  budgets = {"m4": T_BASE + 2 * T2 + 1, "m5": T_BASE, "more": T_BASE + 7 * T2}
  _attribution(run, pd.DataFrame({"id": [f"e{k}" for k in range(5)], "cause": ["I", "II", "III", "IV", "V"]}))
  calls = []

  def pipeline(config, root):  # "trains": writes the tokens of the budget, or of the control's epochs
    name = os.path.basename(root)
    calls.append((name, config))
    _write_summary(Layout(root), "sft", _tokens(budgets.get(name, T_BASE + (config.sft.phases[-1].epochs - 3) * T2)))

  config = _config(ARMS[1:])  # arms whose preparation needs no retrieval
  arms.run(config, run, pipeline)
  assert [name for name, _ in calls] == ["m4", "more_epochs.e5", "m5", "more"]
  control = calls[1][1]
  assert [p.epochs for p in control.sft.phases] == [2, 5] and control.sft.order == "sequential"
  assert control.sft.init_from == run.model(config.sft.init_from) and control.data == config.data
  calls.clear()
  budgets["m5"] = T_BASE + 2 * T2 - 1  # the same budget as m4: one control
  arms.run(config, run, pipeline)
  assert [name for name, _ in calls] == ["m4", "more_epochs.e5", "m5", "more"]
  calls.clear()
  arms.run(_config(ARMS[1:], equal_compute=False), run, pipeline)
  assert [name for name, _ in calls] == ["m4", "m5", "more"]


def _attribution(layout: Layout, table: pd.DataFrame) -> None:
  os.makedirs(layout.diagnosis, exist_ok=True)
  table.to_parquet(layout.attribution)


def test_compare_stage_reports_compute_and_each_arm_against_its_control(run):
  """m1 (CPT, target I) has a control that ran, m4 one that did not, m5 the baseline as control."""
  base, arm = _constructed()
  control = arm.assign(unlearned=np.r_[[True] * 5, [False] * 5, arm["unlearned"].to_numpy()[10:]])
  _attribution(run, base)
  for name in ("m1", "m4", "m5"):
    _attribution(run.arm(name), arm.assign(cause="ignored"))
  _attribution(run.arm("more_epochs.e5"), control.assign(cause="ignored"))
  _write_summary(run.arm("m1"), "pretrain", _tokens(T2))
  _write_summary(run.arm("m1"), "sft", _tokens(T_BASE + T2))
  _write_summary(run.arm("more_epochs.e5"), "sft", _tokens(T_BASE + 2 * T2))
  _write_summary(run.arm("m4"), "sft", _tokens(T_BASE + 4 * T2))
  _write_summary(run.arm("m5"), "sft", _tokens(T_BASE - 3))
  config = _config()
  compare_stage.run(config, run)
  result = json.load(open(run.compare_summary))
  plain = lambda x: json.loads(json.dumps(x))
  m1 = result["arms"]["m1"]
  _, direct = compare.comparison(base, {"m1": arm}, {"m1": ("I",)}, 200, config.seed)
  _, direct_control = compare.comparison(
    control.merge(base[["id", "cause"]], on="id"), {"m1": arm}, {"m1": ("I",)}, 200, config.seed
  )
  assert {k: m1[k] for k in direct["m1"]} == plain(direct["m1"])  # against the baseline: as before
  e = m1["equal_compute"]
  assert e["comparison"] == plain(direct_control["m1"])  # against the control: the same statistics
  assert e["comparison"]["by_cause"]["I"]["baseline_rate"] == pytest.approx(0.5)  # the control's rate on I
  assert (e["control"], e["epochs"], e["arm_tokens"], e["control_tokens"]) == (
    "more_epochs.e5",
    5,
    T_BASE + 2 * T2,
    T_BASE + 2 * T2,
  )
  assert e["predicted_tokens"] == T_BASE + 2 * T2 and e["tokens_ratio"] == 1 and e["finished"]
  assert m1["compute"]["tokens"] == _tokens(T_BASE + 2 * T2)
  assert result["compute"]["baseline"]["tokens"] == _tokens(T_BASE)  # its pre-training is not counted
  assert set(result["compute"]) == {"baseline", "m1", "m4", "m5", "more_epochs.e5", "more_epochs.e7"}
  assert result["compute"]["more_epochs.e7"] is None  # not run yet
  m4 = result["arms"]["m4"]["equal_compute"]
  assert (m4["control"], m4["finished"], m4["control_tokens"]) == ("more_epochs.e7", False, None)
  assert "comparison" not in m4
  m5 = result["arms"]["m5"]["equal_compute"]
  assert m5["control"] == "baseline" and m5["comparison"]["unlearned"] == result["arms"]["m5"]["unlearned"]
  assert result["response_matrix_equal_compute"] == compare.response_matrix(
    {"m1": e["comparison"], "m5": m5["comparison"]}
  )
  table = pd.read_parquet(run.comparison)
  pairs = table[["arm", "reference"]].drop_duplicates().to_numpy().tolist()
  assert pairs == [["m1", "baseline"], ["m4", "baseline"], ["m5", "baseline"], ["m1", "more_epochs.e5"]]
  assert len(table) == 4 * len(table[table["arm"] == "m4"])  # m5's control rows are its baseline rows
  report = open(run.compare_report).read()
  assert "## Training compute of each intervention" in report and "## At equal compute" in report
  assert "| m1 | more_epochs.e5 (two: 3 → 5 epochs) |" in report and "not run yet" in report
  off = _config(equal_compute=False)
  compare_stage.run(off, run)
  assert all(s["equal_compute"] is None for s in json.load(open(run.compare_summary))["arms"].values())
  assert "Off (`interventions.equal_compute=False`)" in open(run.compare_report).read()


@pytest.mark.parametrize(
  "field, value, message",
  [
    ("equal_compute_rounding", "down", r"'interventions.equal_compute_rounding': 'down' is not one of"),
    ("equal_compute", "yes", r"'interventions.equal_compute': expected bool"),
    ("arms", ({"name": "more_epochs.e5", "intervention": "epochs"},), r"'interventions.arms': .*reserved"),
    ("arms", ({"name": "baseline", "intervention": "shuffle"},), r"'interventions.arms': .*reserved"),
  ],
)
def test_bad_values_name_their_field(field, value, message):
  with pytest.raises(ConfigError, match=message):
    config_lib.load({"interventions": {field: value}})


def test_a_mitigation_with_no_attributed_example_is_skipped_and_reported(run):
  _attribution(run, pd.DataFrame({"id": ["e0"], "cause": ["IV"]}))  # no example attributed to I
  calls = []
  arms.run(_config(ARMS[:2], equal_compute=False), run, lambda config, root: calls.append(os.path.basename(root)))
  assert calls == ["m4"]  # the knowledge arm (target I) had nothing to retrieve for
  assert arms.idle(arms_config.ArmConfig("m1", "knowledge"), pd.DataFrame({"cause": ["IV"]}))
  assert not arms.idle(arms_config.ArmConfig("m4", "shuffle"), pd.DataFrame({"cause": ["IV"]}))
  assert not arms.idle(arms_config.ArmConfig("more", "epochs"), pd.DataFrame({"cause": ["IV"]}))  # a control


def test_totals_add_the_baseline_to_every_run_that_needs_it_first():
  """A post-hoc arm needs the baseline trained first; the baseline itself, the online arm and a
  more-epochs run (its counts hold the baseline's trunk it continues) are their whole cost."""
  run = lambda real: {"tokens": {"real": real, "padded": 2 * real, "loss": real // 2}, "by_stage": {}, "flops": None}
  compute = {"baseline": run(1000), "conflict": run(900), "online": run(1000), "more_epochs.e30": run(400), "x": None}
  compute["more"] = run(1300)
  arms_run = [
    arms_config.ArmConfig("conflict", "conflict"),
    arms_config.ArmConfig("online", "online", {"model": "m"}),
    arms_config.ArmConfig("more", "epochs", {"extra": 10}),
  ]
  out = equal_compute.totals(compute, arms_run)
  assert {name: c and c["total_real"] for name, c in out.items()} == {
    "baseline": 1000,
    "conflict": 1900,
    "online": 1000,
    "more_epochs.e30": 400,
    "x": None,
    "more": 1300,
  }
  assert out["conflict"]["tokens"] == compute["conflict"]["tokens"]
  missing = equal_compute.totals({"baseline": None, "conflict": run(900)}, arms_run)
  assert missing["conflict"]["total_real"] is None  # no baseline count: no total
