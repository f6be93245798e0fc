"""The early-warning model: its stored score against scikit-learn's fitted pipeline, a model never
scoring its own data, the provisional cause's rule order, and the evaluation's ROC-AUC against a
brute-force count of ranked pairs."""

import dataclasses
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from ilp.data.batches import PlannedBatch, Stream
from ilp.online import control, evaluation, warning
from ilp.online.config import OnlineConfig
from ilp.online.features import FEATURES
from ilp.report import online as report_online
from ilp.train import hooks
from ilp.typed import ConfigError


def _table(n, seed):
  rng = np.random.default_rng(seed)
  x = pd.DataFrame(rng.normal(size=(n, len(FEATURES))), columns=list(FEATURES))
  y = (x["loss"] + 0.5 * x["initial_margin"] + rng.normal(scale=0.5, size=n)) > 0.8
  return x, y.to_numpy()


def test_score_is_the_fitted_pipelines_probability_and_survives_a_round_trip(tmp_path):
  (x1, y1), (x2, y2) = _table(300, 0), _table(200, 1)
  model = warning.fit([x1, x2], [y1, y2], ["a", "b"], transform="none")
  x, y = pd.concat([x1, x2]), np.concatenate([y1, y2])
  reference = make_pipeline(StandardScaler(), LogisticRegression(class_weight="balanced", max_iter=1000)).fit(x, y)
  test, _ = _table(50, 2)
  np.testing.assert_allclose(model.score(test), reference.predict_proba(test)[:, 1], rtol=1e-6)
  model.save(str(tmp_path / "w.json"))
  np.testing.assert_array_equal(warning.EarlyWarning.load(str(tmp_path / "w.json")).score(test), model.score(test))
  assert model.fitted_on == ("a", "b")  # the examples' keys, sorted


def test_a_rank_model_reads_percentiles_within_each_run_and_ignores_its_scale(tmp_path):
  """`transform="rank"`: each table's features become their percentiles (ties averaged) before the
  same fitted pipeline; a run whose losses are on another scale (x3 + 1) gets the same scores."""
  (x1, y1), (x2, y2) = _table(300, 0), _table(200, 1)
  model = warning.fit([x1, x2], [y1, y2], ["a"], transform="rank")
  ranked = pd.concat([x1.rank(pct=True), x2.rank(pct=True)])
  reference = make_pipeline(StandardScaler(), LogisticRegression(class_weight="balanced", max_iter=1000))
  reference.fit(ranked, np.concatenate([y1, y2]))
  test, _ = _table(50, 2)
  np.testing.assert_allclose(model.score(test), reference.predict_proba(test.rank(pct=True))[:, 1], rtol=1e-6)
  np.testing.assert_allclose(model.score(test.assign(loss=3 * test["loss"] + 1)), model.score(test), rtol=1e-12)
  model.save(str(tmp_path / "rank.json"))
  assert warning.EarlyWarning.load(str(tmp_path / "rank.json")).transform == "rank"
  with pytest.raises(ValueError, match="transform 'log' is not one of"):
    warning.fit([x1], [y1], ["a"], transform="log")


def test_a_model_never_scores_the_data_it_was_fitted_on_nor_a_subset_of_it():
  """More than a quarter of a run's examples among the fitted ones is refused: the same data in any
  order, a subset of it (an arm that deleted examples); a run sharing a quarter or less is scored."""
  examples = pd.DataFrame(
    {"id": [f"e{i}" for i in range(8)], "prompt": [f"q{i}" for i in range(8)], "response": [f"r{i}" for i in range(8)]}
  )
  fitted = warning.keys(examples)
  assert len(set(fitted)) == 8 and all(len(k) == 16 for k in fitted)
  assert warning.keys(examples.iloc[::-1]) == fitted[::-1]  # a key per example, not per table
  x, y = _table(100, 0)
  model = warning.fit([x], [y], fitted)
  assert model.fitted_on == tuple(sorted(fitted))
  refused = "'sft.online.model': the early-warning model was fitted on {}% of this run's SFT examples"
  with pytest.raises(ConfigError, match=refused.format(100)):
    model.check_unseen(warning.keys(examples.iloc[::-1]))
  with pytest.raises(ConfigError, match=refused.format(100)):
    model.check_unseen(warning.keys(examples.iloc[:3]))  # a subset
  other = examples.assign(response=[f"s{i}" for i in range(8)])
  with pytest.raises(ConfigError, match=refused.format(38)):  # 3 of 8 records unchanged
    model.check_unseen(warning.keys(pd.concat([examples.iloc[:3], other.iloc[3:]])))
  model.check_unseen(warning.keys(pd.concat([examples.iloc[:2], other.iloc[2:]])))  # 2 of 8: 25%, the limit
  model.check_unseen(warning.keys(other))


def test_provisional_cause_follows_the_diagnosis_order():
  base = dict.fromkeys(FEATURES, 0.0)
  rows = [
    {**base, "contradicting_duplicates": 1, "earlier_phase": 1, "learned_then_lost": 1},  # III before IV
    {**base, "earlier_phase": 1, "boundary_drop": 0.5, "initial_margin": -5},  # IV before II
    {**base, "learned_then_lost": 1},  # lost, but its phase is not over: not IV
    {**base, "initial_margin": -5, "recent_improvement": 0.5},  # II before V
    {**base, "recent_improvement": 0.5},
    base,
  ]
  causes = warning.provisional_cause(pd.DataFrame(rows))
  assert causes.tolist() == ["III", "IV", "I", "II", "V", "I"]


def test_the_evaluation_scores_a_held_out_run_against_brute_force_auc():
  tables = {f: _table(120, k) for k, f in enumerate((0.25, 0.5))}
  y = tables[0.25][1]
  run = evaluation.Run("held", "h", {f: t for f, (t, _) in tables.items()}, y, np.where(y, "V", "learned"))
  model = warning.fit([_table(400, 9)[0]], [_table(400, 9)[1]], ["other"])
  scored = evaluation.score(model, run)
  p = model.score(tables[0.25][0])
  pos, neg = p[y], p[~y]
  brute = ((pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()) / (len(pos) * len(neg))
  assert scored["0.25"]["roc_auc"] == pytest.approx(brute)
  assert scored["0.25"]["unlearned"] == int(y.sum()) and 0 <= scored["0.25"]["average_precision"] <= 1
  with pytest.raises(ConfigError, match="--workdirs"):
    evaluation.score(warning.fit([tables[0.5][0]], [tables[0.5][1]], ["h"]), run)


def test_the_training_view_scores_passes_every_steps_apart():
  plan = SimpleNamespace(evals_at={s: ["pass"] for s in (3, 5, 9, 12, 20, 21)})
  view = hooks.EarlyWarningView(SimpleNamespace(config=OnlineConfig(every_steps=5)), None, None, plan)
  assert [s for s in range(1, 25) if view.due(SimpleNamespace(step=s))] == [3, 9, 20]
  every = hooks.EarlyWarningView(SimpleNamespace(config=OnlineConfig(every_steps=0)), None, None, plan)
  assert [s for s in range(1, 25) if every.due(SimpleNamespace(step=s))] == [3, 5, 9, 12, 20, 21]
  with pytest.raises(ConfigError, match="'every_steps': must be >= 0"):
    OnlineConfig(every_steps=-1)


def _stream(steps=12, batch=8, examples=40, seed=0):
  rng = np.random.default_rng(seed)
  rows = [rng.choice(examples, batch, replace=False) for _ in range(steps)]
  half = steps // 2
  batches = [PlannedBatch(r, 16 if k % 2 else 24, 1 + k // half, 1, np.arange(batch)) for k, r in enumerate(rows)]
  batches[7] = dataclasses.replace(batches[7], replay=True)
  return Stream(batches, [])


def test_the_online_control_replays_at_risk_rows_within_its_share_and_replays_on_restore():
  lengths = np.where(np.arange(40) % 3 == 0, 20, 10)  # every third example needs the 24-token bucket
  watch = SimpleNamespace(config=OnlineConfig(model="m", every_steps=4, replay_share=0.25))
  stream = _stream()
  before = [b.rows.copy() for b in stream.batches]
  act = control.OnlineReplay(watch, "", lengths, stream, seed=3)
  event = {"step": 5, "replay": [0, 1, 2, 3], "flagged": {}}
  replaced = act._apply(event, stream)
  changed = [k for k, b in enumerate(stream.batches) if not np.array_equal(b.rows, before[k])]
  assert changed and set(changed) <= {5, 6, 8} and replaced == 2 * len(changed)  # 25% of 8 rows; 7 is replay
  for k in changed:
    new = stream.batches[k].rows[stream.batches[k].rows != before[k]]
    assert set(new) <= {0, 1, 2, 3} and (lengths[new] <= stream.batches[k].length).all()
  act.events.append(dict(event, rows=replaced))
  fresh = _stream()
  again = control.OnlineReplay(watch, "", lengths, fresh, seed=3)
  again.restore(act.state(), fresh)
  assert all(np.array_equal(a.rows, b.rows) for a, b in zip(stream.batches, fresh.batches))
  with pytest.raises(ConfigError, match="'sft.online.every_steps': 7 is longer than the shortest phase \\(5 steps\\)"):
    long = SimpleNamespace(config=OnlineConfig(model="m", every_steps=7, replay_share=0.25))
    control.OnlineReplay(long, "", lengths, _stream(), 0)
  with pytest.raises(ConfigError, match="'replay_share': must lie in \\[0, 1\\]"):
    OnlineConfig(replay_share=1.5)
  with pytest.raises(ConfigError, match="'replay_causes': \\['III'\\]: only \\('I', 'IV', 'V'\\) can be replayed"):
    OnlineConfig(replay_causes=("V", "III"))


def test_the_control_replays_the_configured_causes_and_flags_iii_and_ii(monkeypatch):
  at_risk = np.arange(40) < 6  # examples 0-5 at risk, provisionally I, II, III, IV, V, V
  causes = np.array(["I", "II", "III", "IV", "V", "V"] + ["V"] * 34)
  monkeypatch.setattr(control.dynamics_log, "load", lambda *args: None)
  for replay_causes, expected in ((("V", "IV"), [3, 4, 5]), (("I",), [0])):
    online = OnlineConfig(model="m", every_steps=4, replay_share=0.25, replay_causes=replay_causes)
    watch = SimpleNamespace(config=online, assess=lambda log, step: (at_risk, causes))
    stream = _stream()
    act = control.OnlineReplay(watch, "", np.full(40, 10), stream, seed=3)
    act.update(5, None, stream)
    event = act.events[-1]
    assert event["replay"] == expected and event["flagged"] == {"III": [2], "II": [1]} and event["rows"] == 6


def test_the_flags_section_counts_what_the_control_flagged_and_how_it_ended():
  """`control.flagged` reads the last decision of the online control's state (not another
  control's); the report's table counts, per provisional cause, the flagged examples, those
  unlearned at the end and those the diagnosis attributed to that cause, against a direct count."""
  events = [{"flagged": {"III": [0], "II": []}}, {"flagged": {"III": [0, 2], "II": [1, 3, 4]}}]
  summary = {"controls": [{"decisions": {}}, {"events": [{"rows": 3}]}, {"kind": control.KIND, "events": events}]}
  assert control.flagged(summary) == {"III": [0, 2], "II": [1, 3, 4]}
  assert control.flagged({"controls": [{"decisions": {}}]}) is None
  assert control.flagged({"controls": [{"kind": control.KIND, "events": []}]}) == {"III": [], "II": []}
  ids = np.array(["a", "b", "c", "d", "e"])
  unlearned = pd.Series([True, False, True, True, False], index=ids)
  causes = pd.Series(["III", "II", "I", "II", ""], index=ids)
  text = report_online.markdown(control.flagged(summary), ids, unlearned, causes, "Flags")
  rows = {line.split(" | ")[0]: line.split(" | ")[1:4] for line in text.splitlines() if line.startswith("| I")}
  assert rows["| III (near-duplicates with another answer)"] == ["2", "2", "1"]  # a, c flagged; both unlearned
  assert rows["| II (the base model prefers another answer)"] == ["3", "1", "2"]  # b, d, e; d unlearned; b, d II
  assert "`a`, `c`" in text and text.startswith("## Flags")
  assert "| — |" in report_online.markdown({"III": [0]}, ids, unlearned, None, "Flags")  # no diagnosis
