"""Config-aware resume: a finished or started stage recorded with other settings is refused
(naming the fields) unless forced; a stage that runs again makes every later stage run from
scratch; a moved work directory still resumes."""

import os
import shutil

import pandas as pd
import pytest

from ilp import fileio, pipeline, provenance
from tests import sft_data


def _config(paths, **sft):
  config = sft_data.sft_config(paths, **{"epochs": 1, **sft})
  config.stages = ("init_model", "sft")
  return config


def test_changed_settings_are_refused_then_forced(tmp_path):
  paths = sft_data.make_inputs(str(tmp_path / "data"), per_dataset=8)
  workdir = str(tmp_path / "work")
  pipeline.run(_config(paths), workdir)
  final = os.path.join(workdir, "sft", "final")
  stamp = os.path.getmtime(final)
  changed = _config(paths)
  changed.sft.optimizer.learning_rate = 1e-3
  changed.seed = 5
  with pytest.raises(fileio.ResumeError) as raised:
    pipeline.run(changed, workdir)
  message = str(raised.value)
  assert "sft: sft.optimizer.learning_rate: 0.003 -> 0.001" in message and "init_model: seed: 0 -> 5" in message
  assert "--force_rerun=init_model" in message and os.path.getmtime(final) == stamp
  pipeline.run(changed, workdir, force=("init_model",))
  assert os.path.getmtime(final) > stamp
  record = provenance.Record(os.path.join(workdir, "provenance.json"), writer=True)
  sft = record.stages["sft"]
  assert sft["finished"] and sft["settings"]["sft"]["optimizer"]["learning_rate"] == 1e-3
  pipeline.run(changed, workdir)  # now consistent: everything skipped

  # a run recorded before a field existed: the field at its default is no change, set otherwise it is
  del sft["settings"]["sft"]["eval_every_steps"]
  sft["settings"]["sft"]["retired_field"] = 7  # a field the config no longer has
  record.save()
  stamp = os.path.getmtime(final)
  pipeline.run(changed, workdir)  # skipped, not refused
  assert os.path.getmtime(final) == stamp
  changed.sft.eval_every_steps = 5
  with pytest.raises(fileio.ResumeError, match=r"sft\.eval_every_steps: None -> 5"):
    pipeline.run(changed, workdir)


def test_a_stage_that_runs_again_redoes_the_later_ones(tmp_path):
  paths = sft_data.make_inputs(str(tmp_path / "data"), per_dataset=8)
  workdir = str(tmp_path / "work")
  config = _config(paths)
  pipeline.run(config, workdir)
  stamp = os.path.getmtime(os.path.join(workdir, "sft", "final"))
  shutil.rmtree(os.path.join(workdir, "model_init"))
  pipeline.run(config, workdir)  # init_model runs again, so sft (built on the old model) is redone
  assert os.path.getmtime(os.path.join(workdir, "sft", "final")) > stamp


def test_a_moved_workdir_resumes_and_an_interrupted_stage_keeps_its_settings(tmp_path):
  paths = sft_data.make_inputs(str(tmp_path / "data"), per_dataset=8)
  config = _config(paths)
  pipeline.run(config, str(tmp_path / "work"))
  shutil.move(str(tmp_path / "work"), str(tmp_path / "moved"))
  stamp = os.path.getmtime(tmp_path / "moved" / "sft" / "final")
  pipeline.run(config, str(tmp_path / "moved"))
  assert os.path.getmtime(tmp_path / "moved" / "sft" / "final") == stamp
  shutil.rmtree(tmp_path / "moved" / "sft" / "final")  # as if interrupted after starting sft
  os.remove(tmp_path / "moved" / "sft" / "summary.json")
  changed = _config(paths, batch_size=4)
  with pytest.raises(fileio.ResumeError, match="sft: sft.batch_size: 8 -> 4"):
    pipeline.run(changed, str(tmp_path / "moved"))


def test_a_data_file_edited_after_its_stage_ran_is_a_changed_setting(tmp_path):
  """The records' content is part of the settings: a fixed (or broken) file after SFT finished is
  refused, naming the file, instead of the old training being kept silently."""
  paths = sft_data.make_inputs(str(tmp_path / "data"), per_dataset=8)
  workdir = str(tmp_path / "work")
  pipeline.run(_config(paths), workdir)
  lines = open(paths["a"]).read().splitlines()
  with open(paths["a"], "w") as f:
    f.write("\n".join(lines[:-1]) + "\n")
  with pytest.raises(fileio.ResumeError, match=rf"sft: data file {paths['a']}: content changed \(sha256 \w{{12}} ->"):
    pipeline.run(_config(paths), workdir)
  pipeline.run(_config(paths), workdir, force=("sft",))
  assert len(pd.read_parquet(os.path.join(workdir, "examples.parquet"))) == 2 * 8 - 1
