"""Replay of pre-training text during SFT: the interleaved plan, and through the real loop."""

import json

from ilp import pipeline
from ilp.scoring import dynamics_log
from tests import sft_data


def test_sft_with_replay_through_the_loop(tmp_path):
  paths = sft_data.make_inputs(str(tmp_path / "data"), per_dataset=16)
  replayed = str(tmp_path / "replay.jsonl")
  sft_data.write_sft_jsonl(replayed, "replay", 1, 10, seed=5)
  config = sft_data.sft_config(paths)
  config.data.replay = ({"path": replayed},)
  config.sft.replay.every_steps = 2
  pipeline.run(config, str(tmp_path / "run"))
  summary = json.load(open(tmp_path / "run" / "sft" / "summary.json"))
  frame = dynamics_log.load(str(tmp_path / "run" / "sft" / "dynamics"))
  batch = frame[frame["kind"] == "batch"]
  sft_steps = batch["step"].nunique()  # one per SFT batch: 2 phases x 2 epochs x 2 batches of 8
  assert sft_steps == 8 and summary["steps"] == sft_steps + sft_steps // 2 == summary["plan"]["replay_steps"] + 8
  assert len(batch) == 16 * 2 * 2 and set(batch["dataset"]) == {"a", "b"}  # replay records are not logged
  assert summary["tokens"]["replay"] > 0 and summary["tokens"]["loss"] > int(batch["tokens"].sum())
