"""Dev-set controls: the resampling trigger and its replay on resume, the progressive-epoch
stopping rule, the dev hash split, and both through the real training loop (kill and resume)."""

import json
import os

import pandas as pd

from ilp import pipeline
from ilp.scoring import dynamics_log
from ilp.train import controls
from tests import sft_data


def _controlled_config(paths, tmp_path, **sft):
  dev_path = str(tmp_path / "dev.jsonl")
  sft_data.write_sft_jsonl(dev_path, "a", 1, 6, seed=9)
  config = sft_data.sft_config(paths, **sft)
  config.data.dev = ({"path": dev_path},)
  return config


def _scheduled_accuracy(monkeypatch):
  """Dev accuracy of data set `a` by step (falling at steps 4 and 10), fed to the real resampler,
  so resampling fires at known steps of a tiny run, and identically after a resume."""
  real_update = controls.Resampler.update

  def update(self, step, dev, stream):
    dev = {**dev, "a": {**dev["a"], "accuracy": 0.3 if step in (4, 10) else 0.9}}
    return real_update(self, step, dev, stream)

  monkeypatch.setattr(controls.Resampler, "update", update)


def test_resampling_through_the_loop_resumes_exactly(tmp_path, monkeypatch):
  paths = sft_data.make_inputs(str(tmp_path / "data"), per_dataset=24)
  config = _controlled_config(paths, tmp_path, order="global")
  config.sft.resample.update(every_steps=2, drop=0.05, share=0.5)
  _scheduled_accuracy(monkeypatch)
  pipeline.run(config, str(tmp_path / "full"))
  summary = json.load(open(tmp_path / "full" / "sft" / "summary.json"))
  events = summary["controls"][0]["events"]
  assert [(e["step"], e["dataset"]) for e in events] == [(4, "a"), (10, "a")] and all(e["rows"] > 0 for e in events)

  sft_data.run_killed_and_resumed(monkeypatch, config, str(tmp_path / "killed"), kill_at=7)
  resumed = json.load(open(tmp_path / "killed" / "sft" / "summary.json"))
  assert resumed["resumed_from"] == 6 and resumed["controls"] == summary["controls"]
  pd.testing.assert_frame_equal(
    dynamics_log.load(str(tmp_path / "full" / "sft" / "dynamics")),
    dynamics_log.load(str(tmp_path / "killed" / "sft" / "dynamics")),
  )
  sft_data.assert_same_final_params(str(tmp_path / "full"), str(tmp_path / "killed"))


def test_progressive_epochs_stop_training_through_the_loop(tmp_path, monkeypatch):
  paths = sft_data.make_inputs(str(tmp_path / "data"), per_dataset=16)
  config = _controlled_config(paths, tmp_path)
  config.sft.progressive.update(enabled=True, max_epochs=6, delta=0.0)
  losses = iter([1.0, 0.8, 0.9, 0.5, 0.4, 0.3])  # epoch 3 of the last phase is worse: stop there

  def fake(stats, datasets):
    return {"all": {"loss": next(losses), "accuracy": 0.0, "examples": len(datasets)}}

  monkeypatch.setattr(controls, "dev_results", fake)
  pipeline.run(config, str(tmp_path / "run"))
  summary = json.load(open(tmp_path / "run" / "sft" / "summary.json"))
  stop = summary["stopped_at"]
  assert stop is not None and summary["steps"] == stop < summary["planned_steps"]
  assert summary["plan"]["phases"]["phase2"] == 6
  assert [len(c["losses"]) for c in summary["controls"]] == [3]
  assert os.path.isdir(tmp_path / "run" / "sft" / "final")
