"""Arms end to end on a reduced ILP world: the baseline, four arms (continual pre-training with
retrieval, global shuffle with resampling, conflict deletion with bucketing, the online control)
and the comparison, never reading the ground truth; the comparison against a direct computation from the tables."""

import json
import math
import os
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from configs import interventions
from ilp import pipeline
from ilp.layout import Layout
from ilp.online import features, warning
from tests import ROOT
from tests.e2e.test_world import SMALL, _guard_ground_truth, reduce

# the online arm acting on anything at risk of any replayable cause, at every other step
ONLINE = {"threshold": 0.05, "every_steps": 2, "share": 0.5, "replay_causes": ("I", "IV", "V"), "causes": ("I", "V")}


def _warning_model(path: str) -> None:
  """An early-warning model fitted on made-up runs (none of this world's examples)."""
  rng = np.random.default_rng(0)
  x = pd.DataFrame(rng.normal(size=(200, len(features.FEATURES))), columns=list(features.FEATURES))
  warning.fit([x], [(x["loss"] - x["exact_match"] + rng.normal(size=200)) > 0], ["another run"]).save(path)


def test_arms_and_comparison_on_a_reduced_world(tmp_path, monkeypatch):
  config = reduce(interventions.get_config(), pretrain_steps=30, phase2_epochs=2)
  config.interventions.update(
    bootstrap_samples=200,
    arms=(
      {"name": "knowledge", "intervention": "knowledge", "settings": {"steps": 10, "causes": ("I", "II", "V")}},
      {
        "name": "shuffle",
        "intervention": "shuffle",
        "settings": {"every_steps": 2, "causes": ("I", "II", "III", "IV", "V")},
      },
      {"name": "conflict", "intervention": "conflict", "settings": {"causes": ("I", "II", "III", "IV", "V")}},
      {"name": "online", "intervention": "online", "settings": ONLINE | {"model": str(tmp_path / "warning.json")}},
    ),
  )
  _warning_model(str(tmp_path / "warning.json"))
  _guard_ground_truth(monkeypatch)
  workdir = str(tmp_path / "work")
  pipeline.run(config, workdir)
  monkeypatch.undo()
  layout = Layout(workdir)
  for name in ("knowledge", "shuffle", "conflict"):
    arm = layout.arm(name)
    for path in (arm.detection, arm.attribution, arm.capability, arm.final("sft"), arm.dynamics()):
      assert os.path.exists(path), path
    assert os.listdir(arm.tensorboard("sft"))
  assert os.path.exists(layout.arm("knowledge").final("pretrain"))
  assert not os.path.exists(layout.arm("shuffle").final("pretrain"))
  retrieved = [json.loads(line) for line in open(os.path.join(layout.arm("knowledge").intervention, "retrieved.jsonl"))]
  assert retrieved and all(d["text"] for d in retrieved)
  shuffle = json.load(open(layout.arm("shuffle").summary("sft")))
  assert shuffle["plan"]["order"] == "global" and shuffle["dev_examples"] == SMALL["qa_people"] // 2
  baseline_shapes = json.load(open(layout.summary("sft")))["buckets"]
  for name in ("shuffle", "conflict"):  # reordering, spreading and resampling add no batch shape
    assert set(json.load(open(layout.arm(name).summary("sft")))["buckets"]) <= set(baseline_shapes)
  capability = json.load(open(layout.arm("shuffle").capability))
  assert capability["heldout_questions"]["questions"] == SMALL["qa_people"] - SMALL["qa_people"] // 2
  assert capability["heldout_text"]["perplexity"] == pytest.approx(math.exp(capability["heldout_text"]["nll"]))
  conflict = json.load(open(os.path.join(layout.arm("conflict").intervention, "summary.json")))
  arm_examples = pd.read_parquet(layout.arm("conflict").examples)
  assert len(arm_examples) == len(pd.read_parquet(layout.examples)) - conflict["deleted"]

  # the online arm: the baseline's schedule and compute, rows placed by its control, flags reported
  online, baseline = (json.load(open(run.summary("sft"))) for run in (layout.arm("online"), layout))
  assert online["steps"] == baseline["steps"] and online["tokens"]["padded"] == baseline["tokens"]["padded"]
  assert {d["reason"] for d in online["controls"][0]["decisions"].values()} == {"fixed"}
  assert online["convergence"]["phases"]["phase2"]["epoch"] == baseline["convergence"]["phases"]["phase2"]["epoch"]
  events = next(c for c in online["controls"] if c.get("kind") == "online")["events"]
  assert sum(e["rows"] for e in events) > 0
  compute = json.load(open(layout.compare_summary))["compute"]
  assert compute["online"]["total_real"] == compute["online"]["tokens"]["real"]  # it needs no baseline first
  shuffle_total = compute["shuffle"]["tokens"]["real"] + compute["baseline"]["tokens"]["real"]
  assert compute["shuffle"]["total_real"] == shuffle_total  # a post-hoc arm: the baseline first
  assert "## Arm online: flagged during SFT" in open(os.path.join(layout.report, "report.md")).read()
  # the same control driven by hindsight replays exactly the baseline's unlearned examples of its replayed causes
  hindsight_run = subprocess.run(
    [sys.executable, os.path.join(ROOT, "scripts", "online_hindsight.py"), f"--workdir={workdir}", "--arm=online"],
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert hindsight_run.returncode == 0, hindsight_run.stderr[-2000:]
  assert [line.split(":")[0] for line in hindsight_run.stdout.splitlines()] == ["baseline", "online", "hindsight"]
  hindsight = json.load(open(os.path.join(workdir, "hindsight", "online", "sft", "summary.json")))
  replayed = next(c for c in hindsight["controls"] if c.get("kind") == "online")["events"][-1]["replay"]
  attribution = pd.read_parquet(layout.attribution).set_index("id").reindex(pd.read_parquet(layout.examples)["id"])
  expected = attribution["unlearned"].astype(bool) & attribution["cause"].isin(ONLINE["replay_causes"])
  assert expected.any()
  assert replayed == np.flatnonzero(expected.to_numpy()).tolist()

  summary = json.load(open(layout.compare_summary))["arms"]
  assert set(summary) == {"knowledge", "shuffle", "conflict", "online"}
  base = pd.read_parquet(layout.attribution)
  for name, s in summary.items():
    arm = pd.read_parquet(layout.arm(name).attribution)
    joined = base.merge(arm, on="id", suffixes=("", "_arm"))
    assert s["examples"] == len(joined) and s["missing_from_arm"] == len(base) - len(joined)
    assert s["unlearned"]["baseline_rate"] == pytest.approx(joined["unlearned"].mean())
    assert s["unlearned"]["arm_rate"] == pytest.approx(joined["unlearned_arm"].mean())
    for cause, row in s["by_cause"].items():
      if cause in ("I", "II", "III", "IV", "V"):
        sel = joined["cause"] == cause
        assert row["n"] == sel.sum() and row["arm_rate"] == pytest.approx(joined.loc[sel, "unlearned_arm"].mean())
  table = pd.read_parquet(layout.comparison)
  assert set(table["arm"]) == set(summary)
  assert "Interventions against the baseline" in open(layout.compare_report).read()
  assert "Interventions against the baseline" in open(os.path.join(layout.report, "report.md")).read()
  result = subprocess.run(
    [
      sys.executable,
      os.path.join(ROOT, "scripts", "evaluate_interventions.py"),
      f"--workdirs={workdir}",
      "--samples=200",
    ],
    capture_output=True,
    text=True,
    timeout=120,
  )
  assert result.returncode == 0, result.stderr[-2000:]
  assert set(json.load(open(os.path.join(workdir, "interventions_eval.json")))["arms"]) == set(summary)

  pipeline.run(config, workdir)  # everything finished: resumes to nothing, recomputes the comparison
  assert json.load(open(layout.compare_summary))["arms"] == summary

  # two arms at once, each in its own process, from a copy of the baseline: the same tables
  parallel = str(tmp_path / "parallel")
  shutil.copytree(workdir, parallel, ignore=shutil.ignore_patterns("arms", "compare", "report"))
  config.interventions.update(workers=2, arms=config.interventions.arms[1:3])
  pipeline.run(config, parallel)
  for name in ("shuffle", "conflict"):
    for table in ("detection", "attribution"):
      pd.testing.assert_frame_equal(
        pd.read_parquet(getattr(Layout(parallel).arm(name), table)), pd.read_parquet(getattr(layout.arm(name), table))
      )
