"""The early warning on a real (tiny) SFT run: its features at a step against direct reads of the
dynamics log up to that step, and the view the training loop writes to TensorBoard."""

import glob
import json
import os

import numpy as np
import pandas as pd
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from ilp import pipeline
from ilp.data import examples
from ilp.online import features, warning
from ilp.scoring import dynamics_log
from ilp.typed import ConfigError
from tests import sft_data


def test_features_at_a_step_read_only_the_log_up_to_it(tmp_path):
  paths = sft_data.make_inputs(str(tmp_path / "data"), per_dataset=8)
  config = sft_data.sft_config(paths, epochs=3, eval_every_steps=2)
  workdir = str(tmp_path / "work")
  pipeline.run(config, workdir)
  log = dynamics_log.load(os.path.join(workdir, "sft", "dynamics"))
  data = features.data_signals(examples.read(os.path.join(workdir, "examples.parquet")))
  step = int(log["step"].max()) // 2
  found = features.at_step(log, data, step)
  assert list(found.columns) == list(features.FEATURES) and list(found.index) == list(data.index)
  evals = dynamics_log.rows(log, dynamics_log.EVAL)
  evals = evals[evals["step"] <= step].sort_values("step", kind="stable")
  last = evals.groupby("id").last().reindex(data.index)
  np.testing.assert_allclose(found["loss"], last["loss"], rtol=1e-6)
  np.testing.assert_array_equal(found["exact_match"], last["exact_match"] > 0.5)
  start = evals[evals["step"] == 0].set_index("id").reindex(data.index)
  np.testing.assert_allclose(found["initial_margin"], start["margin_mean"], rtol=1e-6)
  batches = dynamics_log.rows(log, dynamics_log.BATCH)
  visits = batches[batches["step"] <= step].groupby("id").size().reindex(data.index).fillna(0)
  np.testing.assert_allclose(found["visits"], np.log1p(visits))
  assert 0 < visits.sum() < len(batches)  # the log after `step` was not read


def _model(fingerprints, seed=0):
  rng = np.random.default_rng(seed)
  x = pd.DataFrame(rng.normal(size=(200, len(features.FEATURES))), columns=list(features.FEATURES))
  return warning.fit([x], [(x["loss"] - x["exact_match"] + rng.normal(size=200)) > 0], fingerprints)


def test_the_early_warning_is_scored_at_every_evaluation_pass_into_tensorboard(tmp_path):
  """`sft.online.model`: after every evaluation pass the at-risk count (overall, by provisional
  cause, and the share per data set) goes to TensorBoard, equal to scoring the finished log cut at
  that step; a model fitted on this run's data, or a missing one, is refused before training."""
  paths = sft_data.make_inputs(str(tmp_path / "data"), per_dataset=8)
  config = sft_data.sft_config(paths, epochs=3, eval_every_steps=2)
  model = _model(["another run"])
  config.sft.online.model = str(tmp_path / "warning.json")
  config.sft.online.update(threshold=0.4, every_steps=0)  # every pass
  model.save(config.sft.online.model)
  workdir = str(tmp_path / "work")
  pipeline.run(config, workdir)
  log = dynamics_log.load(os.path.join(workdir, "sft", "dynamics"))
  table = examples.read(os.path.join(workdir, "examples.parquet"))
  data = features.data_signals(table)
  events = glob.glob(os.path.join(workdir, "sft", "tensorboard", "events.out.tfevents.*"))
  scalars = EventAccumulator(events[0], size_guidance={"scalars": 0}).Reload()
  logged = {e.step: e.value for e in scalars.Scalars("online/predicted_unlearned")}
  eval_steps = sorted(dynamics_log.rows(log, dynamics_log.EVAL)["step"].unique())
  assert sorted(logged) == [s for s in eval_steps if s > 0]  # every pass after the start
  for step, value in logged.items():
    found = features.at_step(log, data, step)
    at_risk = model.score(found) >= 0.4
    assert value == at_risk.sum(), step
    causes = warning.provisional_cause(found)
    for cause in warning.CAUSES:
      by_cause = {e.step: e.value for e in scalars.Scalars(f"online/predicted_unlearned/{cause}")}
      assert by_cause[step] == (at_risk & (causes == cause)).sum()
    share = {e.step: e.value for e in scalars.Scalars("online/at_risk_share/a")}
    assert share[step] == pytest.approx(at_risk[(table.set_index("id")["dataset"] == "a").to_numpy()].mean())
  summary = json.load(open(os.path.join(workdir, "sft", "summary.json")))
  assert summary["online"]["scored_passes"] == len(logged) and summary["online"]["seconds"] > 0

  own = str(tmp_path / "own.json")
  _model(warning.keys(table)).save(own)
  config.sft.online.model = own
  with pytest.raises(ConfigError, match="'sft.online.model': the early-warning model was fitted on 100% of this run's"):
    pipeline.run(config, str(tmp_path / "refused"))
  assert not os.path.exists(tmp_path / "refused" / "config.json")  # refused before any stage
  config.sft.online.model = str(tmp_path / "missing.json")
  with pytest.raises(ConfigError, match="'sft.online.model': .*missing.json: no such file"):
    pipeline.run(config, str(tmp_path / "refused2"))


def test_the_online_control_replays_at_risk_examples_and_resumes_exactly(tmp_path, monkeypatch):
  """`sft.online.replay_share`: the at-risk V- and IV-like examples take rows of the coming batches
  (same steps and shapes; TensorBoard's `control/rows_placed_per_step` counts them), and a run
  killed mid-way and resumed trains bit-identically."""
  paths = sft_data.make_inputs(str(tmp_path / "data"), per_dataset=8)
  config = sft_data.sft_config(paths, epochs=3, eval_every_steps=2, log_every_steps=1)
  config.sft.online.update(model=str(tmp_path / "warning.json"), threshold=0.05, every_steps=2, replay_share=0.5)
  _model(["another run"]).save(config.sft.online.model)
  plain = sft_data.sft_config(paths, epochs=3, eval_every_steps=2)
  pipeline.run(plain, str(tmp_path / "plain"))
  pipeline.run(config, str(tmp_path / "online"))
  summary = lambda run: json.load(open(tmp_path / run / "sft" / "summary.json"))
  events = summary("online")["controls"][-1]["events"]
  assert sum(e["rows"] for e in events) > 0 and summary("online")["steps"] == summary("plain")["steps"]
  log = dynamics_log.rows(dynamics_log.load(str(tmp_path / "online" / "sft" / "dynamics")), dynamics_log.BATCH)
  event = next(e for e in events if e["rows"])  # the first pass (the base model's alone on disk) acts on nothing
  step = event["step"]
  replayed = set(np.asarray(examples.read(str(tmp_path / "online" / "examples.parquet"))["id"])[event["replay"]])
  visited = log[(log["step"] > step) & (log["step"] <= step + 2)]["id"]
  assert replayed & set(visited)  # the chosen examples are in the next batches
  events_file = glob.glob(str(tmp_path / "online" / "sft" / "tensorboard" / "events.out.tfevents.*"))[0]
  placed = EventAccumulator(events_file, size_guidance={"scalars": 0}).Reload().Scalars("control/rows_placed_per_step")
  assert len(placed) == summary("online")["steps"] and sum(e.value for e in placed) == sum(e["rows"] for e in events)
  sft_data.run_killed_and_resumed(monkeypatch, config, str(tmp_path / "killed"), kill_at=step + 3)
  sft_data.assert_same_final_params(str(tmp_path / "online"), str(tmp_path / "killed"))
  assert summary("killed")["controls"] == summary("online")["controls"]
