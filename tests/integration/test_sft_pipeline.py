"""SFT and continual pre-training through the pipeline: phases, dynamics, resume, errors, TensorBoard."""

import glob
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from ilp import faults, pipeline
from ilp.data import mixture
from ilp.data.records import DataError
from ilp.model import checkpoint
from ilp.scoring import dynamics_log
from ilp.train import loop
from tests import ROOT, sft_data


@pytest.fixture
def two_phase_run(two_phase):
  return two_phase.workdir


def test_two_phase_sft_records_phases_and_stream_positions(two_phase_run):
  frame = dynamics_log.load(os.path.join(two_phase_run, "sft", "dynamics"))
  seen = frame[frame["kind"] == "batch"].sort_values("stream_position")
  # Every example appears once per epoch of its own phase, and only in that phase.
  assert len(seen) == 40 * 2
  assert (seen["train_phase"] == seen["phase"]).all()
  assert seen.groupby("id").size().eq(2).all()
  np.testing.assert_array_equal(seen["stream_position"].to_numpy(), np.arange(80))
  assert seen["step"].is_monotonic_increasing
  assert (
    seen[seen["train_phase"] == 1]["stream_position"].max() < seen[seen["train_phase"] == 2]["stream_position"].min()
  )
  assert (seen.groupby(["train_phase", "epoch"])["id"].nunique() == 20).all()
  assert set(json.loads(m)["k"] for m in seen["meta"]) == {0, 1, 2}
  # Full evaluation passes: start, and the end of every epoch of every phase, over all 40 examples.
  evals = frame[frame["kind"] == "eval"]
  assert sorted(evals["eval_point"].unique()) == [
    "phase1/epoch1",
    "phase1/epoch2",
    "phase2/epoch1",
    "phase2/epoch2",
    "start",
  ]
  assert (evals.groupby("eval_point").size() == 40).all()
  assert evals[evals["phase_end"]]["eval_point"].unique().tolist() == ["phase1/epoch2", "phase2/epoch2"]
  # Learning happened: phase-1 examples are best right after phase 1.
  phase1 = evals[evals["phase"] == 1].groupby("eval_point")["loss"].mean()
  assert phase1["phase1/epoch2"] < phase1["start"]


def test_outputs_summary_compiles_and_tensorboard(two_phase_run):
  out = os.path.join(two_phase_run, "sft")
  summary = json.loads(open(os.path.join(out, "summary.json")).read())
  assert summary["phases"] == 2 and summary["step_variants_compiled"] <= 2
  assert summary["tokenization"] == {"examples": 40, "truncated": 0, "dropped": 0}
  assert sorted(os.listdir(os.path.join(out, "final"))) == [
    "checksums.json",
    "model_config.json",
    "params",
    "tokenizer",
  ]
  events = glob.glob(os.path.join(out, "tensorboard", "events.out.tfevents.*"))
  assert len(events) == 1
  acc = EventAccumulator(events[0], size_guidance={"scalars": 0, "histograms": 0})
  acc.Reload()
  tags = acc.Tags()
  for tag in (
    "train/loss",
    "train/learning_rate",
    "train/grad_norm",
    "perf/tokens_per_sec",
    "perf/mfu",
    "train/loss_by_dataset/a",
    "train/loss_by_dataset/b",
    "eval/loss",
  ):
    assert tag in tags["scalars"], tag
  assert {"eval/example_loss", "eval/example_margin_min"} <= set(tags["histograms"])
  losses = [e.value for e in acc.Scalars("train/loss")]
  assert len(losses) >= 5 and all(np.isfinite(losses))
  assert len(acc.Histograms("eval/example_loss")) == 5


def test_cartography_summaries(two_phase_run):
  frame = dynamics_log.load(os.path.join(two_phase_run, "sft", "dynamics"))
  carto = dynamics_log.cartography(frame)
  assert len(carto) == 40 and (carto["observations"] == 4).all()
  assert carto["confidence"].between(0, 1).all() and (carto["variability"] >= 0).all()


def test_cartography_on_a_hand_made_table():
  rows = []
  for step, (p, em) in enumerate([(0.2, 0), (0.6, 1), (0.3, 0), (0.9, 1)], start=1):
    rows.append(
      {
        "id": "x",
        "dataset": "d",
        "phase": 1,
        "kind": "eval",
        "eval_point": f"e{step}",
        "step": step * 10,
        "gold_prob": p,
        "exact_match": em,
        "loss": -np.log(p),
      }
    )
  rows.append({**rows[0], "eval_point": "start", "step": 0, "gold_prob": 0.01, "exact_match": 1})
  carto = dynamics_log.cartography(pd.DataFrame(rows)).iloc[0]
  assert carto["confidence"] == pytest.approx(0.5) and carto["variability"] == pytest.approx(
    np.std([0.2, 0.6, 0.3, 0.9])
  )
  assert carto["correctness"] == 0.5 and carto["forgetting_events"] == 1
  assert carto["first_learned_step"] == 20 and carto["final_exact_match"] == 1 and carto["observations"] == 4


def _launch(config_path, workdir, **kwargs):
  env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
  return subprocess.Popen(
    [sys.executable, os.path.join(ROOT, "launch.py"), f"--config={config_path}", f"--workdir={workdir}"],
    cwd=ROOT,
    env=env,
    stdout=subprocess.PIPE,
    stderr=subprocess.STDOUT,
    text=True,
    **kwargs,
  )


def test_sigkill_then_resume_matches_uninterrupted_run(tmp_path):
  paths = sft_data.make_inputs(str(tmp_path / "data"), per_dataset=48)
  config_path = tmp_path / "config.py"
  sft_data.write_config(
    config_path,
    paths,
    "c.model.update(hidden_size=128, intermediate_size=256, num_layers=3)",
    "c.sft.checkpoint.update(every_steps=2, async_save=True)",
  )
  full, killed = str(tmp_path / "full"), str(tmp_path / "killed")
  reference = _launch(config_path, full)
  victim = _launch(config_path, killed)
  ckpt_dir = os.path.join(killed, "sft", "checkpoints")
  deadline = time.time() + 240
  while time.time() < deadline:
    steps = [int(d) for d in (os.listdir(ckpt_dir) if os.path.isdir(ckpt_dir) else []) if d.isdigit()]
    if steps and max(steps) >= 6:
      break
    time.sleep(0.01)
  victim.send_signal(signal.SIGKILL)
  victim.wait()
  assert victim.returncode == -signal.SIGKILL
  assert not os.path.exists(os.path.join(killed, "sft", "summary.json")), "run ended before the kill"
  assert reference.wait(timeout=300) == 0, reference.stdout.read()[-3000:]
  resumed = _launch(config_path, killed)
  output = resumed.communicate(timeout=300)[0]
  assert resumed.returncode == 0, output[-3000:]
  assert "resumed from step" in output

  summary = json.loads(open(os.path.join(killed, "sft", "summary.json")).read())
  assert summary["resumed_from"] >= 6
  a = dynamics_log.load(os.path.join(full, "sft", "dynamics"))
  b = dynamics_log.load(os.path.join(killed, "sft", "dynamics"))
  pd.testing.assert_frame_equal(a, b)
  import jax

  from ilp import parallel

  mesh = parallel.make_mesh((1, 1, 1), jax.devices()[:1])
  _, _, pa = checkpoint.load_params(os.path.join(full, "sft", "final"), mesh)
  _, _, pb = checkpoint.load_params(os.path.join(killed, "sft", "final"), mesh)
  for x, y in zip(jax.tree.leaves(pa), jax.tree.leaves(pb)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.mark.parametrize("kind", faults.JSONL_DAMAGE)
def test_bad_input_fails_before_anything_is_written(tmp_path, kind):
  paths = sft_data.make_inputs(str(tmp_path / "data"))
  faults.damage_jsonl(paths["b"], paths["b"], kind)
  workdir = tmp_path / "work"
  with pytest.raises(DataError, match="b.jsonl"):
    pipeline.run(sft_data.sft_config(paths), str(workdir))
  assert not workdir.exists()


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
  paths = sft_data.make_inputs(str(tmp_path / "data"))
  config = sft_data.sft_config(paths)
  # Step 1 moves every weight by ~1e30 (still finite); step 2's activations overflow.
  config.sft.optimizer.update(learning_rate=1e30, grad_clip_norm=0.0, warmup_steps=0, decay="constant")
  config.sft.checkpoint.every_steps = 1
  with pytest.raises(loop.TrainingDivergedError, match="at step 2; the last good checkpoint .step 1."):
    pipeline.run(config, str(tmp_path / "work"))
  assert not os.path.exists(tmp_path / "work" / "sft" / "final")
  assert sorted(os.listdir(tmp_path / "work" / "sft" / "checkpoints")) == ["1"]


def test_continual_pretraining_mixes_corpora_by_weight(tmp_path):
  paths = sft_data.make_inputs(str(tmp_path / "data"))
  rng = np.random.default_rng(0)
  for name, words in (("general", range(5, 50)), ("knowledge", range(50, 96))):
    with open(tmp_path / f"{name}.txt", "w") as f:
      for _ in range(40):
        f.write(" ".join(f"w{w}" for w in rng.choice(list(words), 12)) + "\n\n")
  config = sft_data.sft_config(paths)
  config.stages = ("init_model", "pretrain")
  config.data.corpora = (
    {"path": str(tmp_path / "general.txt"), "weight": 0.8},
    {"path": str(tmp_path / "knowledge.txt"), "weight": 0.2},
  )
  config.pretrain.update(steps=12, batch_size=8, seq_length=16, log_every_steps=4)
  config.pretrain.optimizer.learning_rate = 3e-3
  pipeline.run(config, str(tmp_path / "work"))
  summary = json.loads(open(tmp_path / "work" / "pretrain" / "summary.json").read())
  assert summary["steps"] == 12 and np.isfinite(summary["final_loss"])
  assert os.path.isdir(tmp_path / "work" / "pretrain" / "final" / "tokenizer")

  rows = mixture.mixture_rows([100, 50], [0.8, 0.2], 20000, seed=0)
  share = np.mean(rows >= 100)
  assert abs(share - 0.2) < 0.01
  assert set(rows[rows >= 100]) == set(range(100, 150))  # the small corpus is cycled through whole
