"""The convergence criterion, the warmup-stable-decay schedule, and training to convergence through
the real loop (decisions against the dynamics log, kill and resume to the same decisions)."""

import json

import pandas as pd
import pytest

from ilp import pipeline
from ilp.scoring import dynamics_log
from ilp.typed import ConfigError
from tests import sft_data


def _converging_config(paths):
  config = sft_data.sft_config(paths, epochs=2)
  config.sft.convergence.update(max_epochs=8, delta=0.3, cooldown_epochs=1)
  config.sft.optimizer.update(warmup_steps=2)
  return config


def _epoch_losses(frame: pd.DataFrame) -> dict:
  batch = frame[frame["kind"] == "batch"]
  sums = batch.groupby(["train_phase", "epoch"])[["nll_sum", "tokens"]].sum()
  return {(int(p), int(e)): row.nll_sum / row.tokens for (p, e), row in sums.iterrows()}


def test_training_to_convergence_stops_where_the_dynamics_say(tmp_path, monkeypatch):
  paths = sft_data.make_inputs(str(tmp_path / "data"), per_dataset=24)
  config = _converging_config(paths)
  pipeline.run(config, str(tmp_path / "full"))
  summary = json.load(open(tmp_path / "full" / "sft" / "summary.json"))
  frame = dynamics_log.load(str(tmp_path / "full" / "sft" / "dynamics"))
  losses = _epoch_losses(frame)
  decisions = summary["controls"][0]["decisions"]
  for phase, name in ((1, "phase1"), (2, "phase2")):
    decided = decisions[str(phase)]
    plateau = decided["plateau_epoch"]
    # The direct rule on the logged visits: the first epoch >= 2 (the phase's epochs) whose relative
    # improvement (all at the peak rate) is below delta, or max_epochs.
    direct = next((e for e in range(2, 9) if (losses[phase, e - 1] - losses[phase, e]) / losses[phase, e - 1] < 0.3), 8)
    assert plateau == direct and decided["epochs"] == plateau + 1
    assert max(e for p, e in losses if p == phase) == plateau + 1  # the cooldown epoch ran, nothing after it
    verdict = summary["convergence"]["phases"][name]
    assert verdict["epoch"] == plateau and verdict["trained_epochs"] == plateau + 1
    assert verdict["loss_by_epoch"]["a" if phase == 1 else "b"][str(plateau)] == pytest.approx(losses[phase, plateau])
  assert summary["convergence"]["converged"] == (decisions["2"]["reason"] == "converged")
  assert summary["steps"] == summary["planned_steps"] == len(frame[frame["kind"] == "batch"]["step"].unique())
  assert summary["tokens"]["loss"] == int(frame[frame["kind"] == "batch"]["tokens"].sum())
  evals = frame[frame["kind"] == "eval"]
  assert evals[evals["phase_end"]]["eval_point"].unique().tolist() == [
    f"phase1/epoch{decisions['1']['epochs']}",
    f"phase2/epoch{decisions['2']['epochs']}",
  ]

  # Killed after the first decision and resumed: the same decisions, log and parameters.
  sft_data.run_killed_and_resumed(monkeypatch, config, str(tmp_path / "killed"), kill_at=decisions["1"]["step"] + 2)
  resumed = json.load(open(tmp_path / "killed" / "sft" / "summary.json"))
  assert resumed["resumed_from"] is not None and resumed["controls"] == summary["controls"]
  assert resumed["convergence"] == summary["convergence"] and resumed["tokens"] == summary["tokens"]
  pd.testing.assert_frame_equal(frame, dynamics_log.load(str(tmp_path / "killed" / "sft" / "dynamics")))

  # The same plateaus fixed in advance (`plateaus`: how the online arm replays its baseline's
  # schedule) train the same run: the same steps and learning rates, the same parameters.
  fixed = _converging_config(paths)
  fixed.sft.convergence.plateaus = (decisions["1"]["plateau_epoch"], decisions["2"]["plateau_epoch"])
  pipeline.run(fixed, str(tmp_path / "fixed"))
  again = json.load(open(tmp_path / "fixed" / "sft" / "summary.json"))
  assert {k: d["reason"] for k, d in again["controls"][0]["decisions"].items()} == {"1": "fixed", "2": "fixed"}
  assert again["steps"] == summary["steps"] and again["tokens"] == summary["tokens"]
  sft_data.assert_same_final_params(str(tmp_path / "full"), str(tmp_path / "fixed"))
  fixed.sft.convergence.plateaus = (3,)
  with pytest.raises(ConfigError, match="'sft.convergence.plateaus': \\(3,\\): one plateau epoch per phase \\(2\\)"):
    pipeline.run(fixed, str(tmp_path / "refused"))
  sft_data.assert_same_final_params(str(tmp_path / "full"), str(tmp_path / "killed"))


def test_extending_a_converged_run_is_that_run_with_a_later_plateau(tmp_path, monkeypatch):
  """`sft.extend` from the converged run's plateau checkpoint, the last phase 2 epochs longer: the
  same parameters, dynamics log and token counts as a run whose criterion held 2 epochs later
  (the criterion patched to say so), at the cost of the added epochs only."""
  import jax
  import numpy as np

  from ilp import parallel
  from ilp.model import checkpoint
  from ilp.train import convergence

  paths = sft_data.make_inputs(str(tmp_path / "data"), per_dataset=24)
  config = _converging_config(paths)
  pipeline.run(config, str(tmp_path / "full"))
  decided = json.load(open(tmp_path / "full" / "sft" / "summary.json"))["controls"][0]["decisions"]["2"]
  plateau, step = decided["plateau_epoch"] + 2, decided["step"]
  kept = tmp_path / "full" / "sft" / "checkpoints" / str(step)
  assert kept.is_dir()  # kept beyond max_to_keep=2: later steps were saved every 3 steps

  update = convergence.Control.update

  def later(self, at, dev, stream):  # phase 2's criterion holds at `plateau` exactly
    phase, epoch = self.epoch_ends[at]
    if phase != 2:
      return update(self, at, dev, stream)
    if epoch == plateau:
      self.decisions[2] = {"plateau_epoch": epoch, "epochs": epoch + 1, "step": at, "reason": "converged"}
      self.replan(self.decisions)
    return False

  monkeypatch.setattr(convergence.Control, "update", later)
  pipeline.run(config, str(tmp_path / "later"))
  monkeypatch.undo()

  config.sft.extend.update(checkpoint=str(kept), epochs=plateau + 1)
  pipeline.run(config, str(tmp_path / "extended"))
  runs = {name: tmp_path / name / "sft" for name in ("later", "extended")}
  summaries = {name: json.load(open(path / "summary.json")) for name, path in runs.items()}
  assert summaries["extended"]["resumed_from"] == step and summaries["later"]["resumed_from"] is None
  assert summaries["extended"]["tokens"] == summaries["later"]["tokens"]
  assert summaries["extended"]["convergence"]["phases"]["phase2"]["trained_epochs"] == plateau + 1
  pd.testing.assert_frame_equal(
    dynamics_log.load(str(runs["extended"] / "dynamics")), dynamics_log.load(str(runs["later"] / "dynamics"))
  )
  mesh = parallel.make_mesh((1, 1, 1))
  leaves = {name: jax.tree.leaves(checkpoint.load_params(str(path / "final"), mesh)[2]) for name, path in runs.items()}
  assert len(leaves["extended"]) == len(leaves["later"])
  for got, want in zip(leaves["extended"], leaves["later"]):
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))

  config.sft.extend.epochs = decided["plateau_epoch"]  # no epoch left before the new plateau: refused, named
  with pytest.raises(pipeline.fileio.ResumeError, match=r"sft.extend: .*before epoch"):
    pipeline.run(config, str(tmp_path / "refused"))
