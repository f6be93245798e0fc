"""Detection after convergence: `detect.require_converged` refuses a model whose SFT's last phase
did not converge (message against the figures computed directly), bad combinations fail at config
load, arms inherit the check, and the report's "Convergence" section and figure from a summary."""

import dataclasses
import json
import os

import pytest

from ilp import config as config_lib
from ilp.detection import converged
from ilp.detection.config import settings_hash
from ilp.interventions import arms
from ilp.layout import Layout
from ilp.report import plots
from ilp.report import run as report
from ilp.stages import detect as detect_stage
from ilp.train import convergence
from ilp.typed import ConfigError

# Phase "one" flattens out; phase "two" still falls at half the peak learning rate in its last epoch.
LOSSES = {
  "one": {"a": {1: 2.0, 2: 1.0, 3: 0.995}},
  "two": {"a": {1: 2.0, 2: 1.5, 3: 1.4}, "b": {1: 1.0, 2: 0.9, 3: 0.899}},
}
RATES = {"one": {1: 1.0, 2: 1.0, 3: 1.0}, "two": {1: 1.0, 2: 1.0, 3: 0.5}}
DELTA = 0.02


def _record() -> dict:
  """`sft/summary.json`'s `convergence` as `ilp.train.convergence.report` writes it."""
  cfg = convergence.ConvergenceConfig(delta=DELTA)
  phases = {name: convergence.judge(LOSSES[name], RATES[name], cfg) for name in LOSSES}
  phases["one"].update(trained_epochs=4, stopped_by="converged")
  return {"phases": phases, "converged": phases["two"]["converged"], "last_phase": "two"}


def _write(layout: Layout, summary: dict) -> None:
  os.makedirs(layout.training("sft"), exist_ok=True)
  with open(layout.summary("sft"), "w") as f:
    json.dump(summary, f)


def _config(**detect):
  return config_lib.load({"stages": ("detect",), "detect": {"require_converged": True, **detect}})


def test_detect_refuses_an_unconverged_model_before_any_work(tmp_path):
  layout = Layout(str(tmp_path / "run"))
  _write(layout, {"steps": 9, "convergence": _record()})
  with pytest.raises(converged.NotConvergedError) as e:
    detect_stage.run(_config(), layout)  # no model exists: any work would fail otherwise
  message = str(e.value)
  relative_a, relative_b = (1.5 - 1.4) / 1.5, (0.9 - 0.899) / 0.9
  assert "last phase 'two' did not converge" in message and "judged at epoch 3 of 3 trained" in message
  assert "learning rate 0.5 of its peak" in message
  assert (
    f"a: loss 1.5 -> 1.4, relative improvement {relative_a:.4g}, adjusted {relative_a / 0.5:.4g} >= delta {DELTA}"
  ) in message
  assert f"b: loss 0.9 -> 0.899, relative improvement {relative_b:.4g}, adjusted {relative_b / 0.5:.4g} < " in message
  assert "|loss change| 0.001 < min_delta" not in message  # 0.001 is not below min_delta = 0.001
  assert not os.path.exists(layout.detect)


def test_a_converged_model_passes_and_a_missing_verdict_is_refused(tmp_path):
  layout = Layout(str(tmp_path / "run"))
  record = _record()
  record["converged"], record["last_phase"] = True, "one"
  _write(layout, {"convergence": record})
  assert converged.require(layout.summary("sft")) is None
  _write(layout, {"steps": 9})  # an SFT run from before convergence was judged
  with pytest.raises(converged.NotConvergedError, match="has no `convergence` record.*re-run the sft stage"):
    converged.require(layout.summary("sft"))
  with pytest.raises(converged.NotConvergedError, match="not found: no SFT run to judge"):
    converged.require(Layout(str(tmp_path / "none")).summary("sft"))


@pytest.mark.parametrize("model", ["model_init", "pretrain", "/checkpoints/elsewhere"])
def test_require_converged_needs_this_runs_sft(model):
  with pytest.raises(ConfigError) as e:
    _config(model=model)
  assert e.value.field == "detect.require_converged" and model in str(e.value)
  assert _config().detect.require_converged and not config_lib.load({}).detect.require_converged


def test_arms_inherit_the_check(tmp_path):
  config = _config()
  arm = arms.base_config(config, Layout(str(tmp_path)))
  assert arm.detect.require_converged and arm.detect.model == "sft"  # the arm's own SFT is judged


def test_report_section_and_figure_from_a_summary(tmp_path):
  record = _record()
  section = report.convergence_section(record)
  assert section.startswith("## Convergence") and f"delta = {DELTA:g}" in section
  assert "SFT's last phase, two, did **not** converge" in section
  rows = [line for line in section.splitlines() if line.startswith("| one") or line.startswith("| two")]
  assert len(rows) == 3
  one = (1.0 - 0.995) / 1.0
  assert rows[0] == (f"| one | yes | 3 | 4 (converged) | 1.00 | a | 1 → 0.995 | {one:.4g} | {one:.4g} | yes |")
  relative_a = (1.5 - 1.4) / 1.5
  assert rows[1] == (
    f"| two | **no** | 3 | 3 | 0.50 | a | 1.5 → 1.4 | {relative_a:.4g} | {relative_a / 0.5:.4g} | **no** |"
  )
  assert rows[2].startswith("| two | **no** | 3 | 3 | 0.50 | b | 0.9 → 0.899 |") and rows[2].endswith("| yes |")
  assert "![convergence](convergence.png)" in section
  plots.convergence(record, str(tmp_path / "convergence.png"))
  assert (tmp_path / "convergence.png").stat().st_size > 1000


def test_trained_epochs_without_a_decision_is_the_last_logged_epoch():
  record = _record()
  assert converged.trained_epochs(record["phases"]["one"]) == 4
  assert converged.trained_epochs(record["phases"]["two"]) == 3


def test_a_loss_near_zero_meets_the_criterion_by_min_delta():
  cfg = convergence.ConvergenceConfig(delta=DELTA, min_delta=1e-3)
  verdict = convergence.judge({"c": {1: 0.01, 2: 0.0095}}, {1: 1.0, 2: 1.0}, cfg)  # 5% relative, 0.0005 nats
  assert verdict["converged"] and verdict["datasets"]["c"]["adjusted_improvement"] == pytest.approx(0.05)
  words = converged.dataset_figures("c", verdict["datasets"]["c"], DELTA, 1e-3)
  assert words.endswith("adjusted 0.05 >= delta 0.02, |loss change| 0.0005 < min_delta 0.001")
  section = report.convergence_section({"phases": {"p": verdict}, "converged": True, "last_phase": "p"})
  assert "SFT's last phase, p, converged." in section and section.count("| yes (loss moved < min_delta) |") == 1


def test_the_guard_leaves_detections_resumable_parts_valid():
  config = _config()
  off = dataclasses.replace(config.detect, require_converged=False)
  assert settings_hash(config.detect, config.data, 0, "/w") == settings_hash(off, config.data, 0, "/w")
