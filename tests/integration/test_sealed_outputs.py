"""Sealed stage outputs: a damaged output makes its stage run again (resumed where only what a
resume rewrites is damaged, else from scratch) with every later stage, naming the file; the
provenance is sealed, and outputs it does not vouch for are refused unless adopted; the arms
stage's index decides whether the comparison and the report are rebuilt, so a killed re-run
cannot leave a report older than the comparison."""

import dataclasses
import json
import logging
import os
import shutil

import pandas as pd
import pytest

from ilp import config as ilp_config
from ilp import faults, fileio, pipeline, provenance
from ilp.interventions import arms
from ilp.layout import Layout
from ilp.scoring import dynamics_log
from tests import sft_data


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
  base = tmp_path_factory.mktemp("sealed")
  paths = sft_data.make_inputs(str(base / "data"), per_dataset=8)
  config = sft_data.sft_config(paths, epochs=1)
  workdir = str(base / "work")
  pipeline.run(config, workdir)
  return config, workdir


def _copy(reference, tmp_path):
  workdir = str(tmp_path / "work")
  shutil.copytree(reference[1], workdir)
  return workdir


def _mtime(path):
  return os.path.getmtime(path)


def test_every_stage_is_sealed_in_the_provenance(reference):
  record = provenance.Record(Layout(reference[1]).provenance, writer=False)
  sft = record.seal("sft")
  assert {"examples.parquet", "sft/summary.json", "sft/dynamics/parts.json"} <= set(sft)
  assert any(name.startswith("sft/final/params/") for name in sft) and "init_model" in record.stages
  on_disk = json.load(open(Layout(reference[1]).provenance))
  on_disk["stages"]["sft"]["finished"] = False  # a hand edit breaks the seal
  fileio.write_json_atomic(os.path.join(reference[1] + "-edited.json"), on_disk)
  with pytest.raises(fileio.ResumeError, match="-edited.json is damaged"):
    provenance.Record(reference[1] + "-edited.json", writer=False)


@pytest.mark.parametrize(
  "damaged, how",
  [
    ("examples.parquet", "resumes and writes it again"),
    ("sft/summary.json", "resumes and writes it again"),
    ("dynamics", "is redone from scratch"),
  ],
)
def test_a_damaged_output_runs_its_stage_again_naming_the_file(reference, tmp_path, caplog, damaged, how):
  config, ref = reference
  workdir = _copy(reference, tmp_path)
  layout = Layout(workdir)
  if damaged == "dynamics":
    damaged = os.path.relpath(sorted(p for p in os.listdir(layout.dynamics()) if p.startswith("batch"))[0], ".")
    damaged = os.path.join("sft", "dynamics", damaged)
  path = os.path.join(workdir, damaged)
  faults.truncate(path)
  stamp = _mtime(layout.model_init)
  with caplog.at_level(logging.WARNING):
    pipeline.run(config, workdir)
  assert f"stage sft: output {path}: " in caplog.text and how in caplog.text
  assert _mtime(layout.model_init) == stamp  # the earlier stage untouched
  sft_data.assert_same_final_params(ref, workdir)
  pd.testing.assert_frame_equal(dynamics_log.load(layout.dynamics()), dynamics_log.load(Layout(ref).dynamics()))
  pd.testing.assert_frame_equal(pd.read_parquet(layout.examples), pd.read_parquet(Layout(ref).examples))


def test_a_damaged_log_file_is_refused_by_its_reader(reference, tmp_path):
  layout = Layout(_copy(reference, tmp_path))
  name = sorted(p for p in os.listdir(layout.dynamics()) if p.startswith("batch"))[0]
  path = os.path.join(layout.dynamics(), name)
  pd.read_parquet(path).iloc[:-3].to_parquet(path, index=False)  # three rows lost
  with pytest.raises(fileio.ResumeError, match=f"{path}: .* rows, .* when written"):
    dynamics_log.load(layout.dynamics())


def test_outputs_without_provenance_are_refused_until_adopted(reference, tmp_path):
  config, _ = reference
  workdir = _copy(reference, tmp_path)
  layout = Layout(workdir)
  os.remove(layout.provenance)
  written = _mtime(layout.config)
  changed = ilp_config.load({**config.to_dict(), "sft": {**config.sft.to_dict(), "epochs": 3}})
  for attempt in (config, changed):  # a changed setting is no way around it
    with pytest.raises(fileio.ResumeError, match=r"outputs of init_model, sft whose settings are unknown .*--adopt"):
      pipeline.run(attempt, workdir)
  assert _mtime(layout.config) == written and not os.path.exists(layout.provenance)
  stamp = _mtime(layout.final("sft"))
  pipeline.run(config, workdir, adopt=True)
  assert _mtime(layout.final("sft")) == stamp
  assert provenance.Record(layout.provenance, writer=False).seal("sft")
  with pytest.raises(fileio.ResumeError, match="made with other settings"):
    pipeline.run(changed, workdir)  # adopted: the record now vouches for the outputs


def _fake_arms_stages(monkeypatch, kill_after: str | None = None):
  """The arms, compare and report stages as stand-ins that run in milliseconds: each arm records
  a finished stage in its own provenance (as its pipeline would), the comparison lists the index's
  arms, and the report copies the comparison."""

  def run_arms(config, layout, run_pipeline):
    del run_pipeline
    for arm in config.interventions.arms:
      record = provenance.Record(layout.arm(arm.name).provenance, writer=True)
      if not record.seal("sft"):
        record.mark("sft", {"arm": arm.name}, True, {})
      if arm.name == kill_after:
        raise KeyboardInterrupt("simulated kill")
    fileio.write_json_atomic(layout.arms_index, arms.index(layout, [a.name for a in config.interventions.arms]))

  def compare(config, layout):
    names = sorted(json.load(open(layout.arms_index)))
    fileio.write_text_atomic(layout.compare_report, "arms: " + ", ".join(names))

  def report(config, layout):
    os.makedirs(layout.report, exist_ok=True)
    shutil.copy(layout.compare_report, os.path.join(layout.report, "report.md"))

  monkeypatch.setattr(arms, "run", run_arms)
  for name, run in (("compare", compare), ("report", report)):
    monkeypatch.setitem(pipeline.STAGES, name, dataclasses.replace(pipeline.STAGES[name], run=run))


def _arms_config(*names):
  arm = lambda name: {"name": name, "intervention": "conflict", "settings": {"delete": "minority"}}
  return ilp_config.load({"stages": ("arms", "compare", "report"), "interventions": {"arms": tuple(map(arm, names))}})


def test_a_killed_forced_arms_rerun_leaves_no_stale_report(tmp_path, monkeypatch):
  layout = Layout(str(tmp_path / "work"))
  report = lambda: open(os.path.join(layout.report, "report.md")).read()
  _fake_arms_stages(monkeypatch)
  pipeline.run(_arms_config("a"), layout.root)
  assert report() == "arms: a"
  stamps = {p: _mtime(p) for p in (layout.compare_report, layout.report)}
  pipeline.run(_arms_config("a"), layout.root)  # nothing changed: the arms stage runs, the rest is kept
  assert {p: _mtime(p) for p in stamps} == stamps

  _fake_arms_stages(monkeypatch, kill_after="b")  # an arm added, a forced re-run killed in it
  with pytest.raises(KeyboardInterrupt):
    pipeline.run(_arms_config("a", "b"), layout.root, force=("arms",))
  _fake_arms_stages(monkeypatch)
  pipeline.run(_arms_config("a", "b"), layout.root)
  assert report() == open(layout.compare_report).read() == "arms: a, b"

  os.remove(os.path.join(layout.report, "report.md"))  # a damaged report alone: only the report is redone
  stamp = _mtime(layout.compare_report)
  pipeline.run(_arms_config("a", "b"), layout.root)
  assert report() == "arms: a, b" and _mtime(layout.compare_report) == stamp
