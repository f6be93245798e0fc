"""Reliability: the work-directory lock, offline by construction (no URL or Hub id sources, HF
offline mode set by the package), one-document-per-line corpora, and non-finite parameters
refused on load."""

import json
import logging
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

import ilp
from ilp import fileio, lock, pipeline, provenance
from ilp.data import loaders
from ilp.data.records import DataError
from ilp.model import checkpoint
from ilp.typed import ConfigError
from tests import sft_data


def _hold(root, pid, host=None):
  os.makedirs(root, exist_ok=True)
  with open(os.path.join(root, lock.NAME), "w") as f:
    json.dump({"pid": pid, "host": host or socket.gethostname(), "started": "then"}, f)


def test_a_second_launch_on_a_held_workdir_stops_at_once(tmp_path):
  paths = sft_data.make_inputs(str(tmp_path / "data"), per_dataset=8)
  workdir = tmp_path / "work"
  _hold(workdir, os.getppid())  # a live process on this host
  with pytest.raises(lock.LockError, match=f"in use by pid {os.getppid()} on host {socket.gethostname()}"):
    pipeline.run(sft_data.sft_config(paths), str(workdir))
  assert sorted(os.listdir(workdir)) == [lock.NAME]  # nothing else written, the owner's lock kept
  _hold(workdir, 1, host="elsewhere")  # another host: cannot be checked, refused
  with pytest.raises(lock.LockError, match="host elsewhere"):
    pipeline.run(sft_data.sft_config(paths), str(workdir))


def test_a_stale_lock_is_taken_over_and_released(tmp_path, caplog):
  dead = subprocess.Popen([sys.executable, "-c", "pass"])
  dead.wait()
  root = str(tmp_path / "work")
  _hold(root, dead.pid)
  with caplog.at_level(logging.WARNING), lock.workdir_lock(root):
    owner = json.load(open(os.path.join(root, lock.NAME)))
    assert owner["pid"] == os.getpid()
  assert "stale lock" in caplog.text and not os.path.exists(os.path.join(root, lock.NAME))


def test_an_unwritable_work_directory_is_one_line_error(tmp_path):
  (tmp_path / "file").write_text("not a directory")
  for root in (tmp_path / "file", tmp_path / "file" / "work"):  # a file; a path under a file
    with pytest.raises(lock.LockError, match=f"^{root}: cannot write the work directory \\(.+\\); give a writable"):
      with lock.workdir_lock(str(root)):
        pass


def test_a_refused_run_leaves_no_directory(tmp_path):
  paths = sft_data.make_inputs(str(tmp_path / "data"), per_dataset=8)
  config = sft_data.sft_config(paths)
  bad = tmp_path / "bad.jsonl"
  bad.write_text('{"id": "x", "prompt": "w5"}\n')
  config.data.sft = ({"path": str(bad)},)
  with pytest.raises(DataError):
    pipeline.run(config, str(tmp_path / "work"))
  assert not (tmp_path / "work").exists()


def test_offline_by_construction():
  assert ilp.__name__ and all(
    os.environ[k] == "1" for k in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")
  )
  with pytest.raises(DataError, match="is a URL; sources must be local paths"):
    loaders.load_sft([{"path": "https://example.com/train.jsonl"}])
  with pytest.raises(DataError, match="'name': 'someone/some-dataset' is neither a local dataset directory"):
    loaders.load_sft([{"format": "hf", "name": "someone/some-dataset"}])
  code = (
    "import socket\n"
    "def refuse(*a, **k): raise AssertionError('network use')\n"
    "socket.socket.connect = refuse\n"
    "import ilp, transformers, datasets\n"
    "from huggingface_hub import constants\n"
    "assert constants.HF_HUB_OFFLINE and datasets.config.HF_DATASETS_OFFLINE\n"
  )
  result = subprocess.run(
    [sys.executable, "-c", code],
    capture_output=True,
    text=True,
    env={k: v for k, v in os.environ.items() if "OFFLINE" not in k},
  )
  assert result.returncode == 0, result.stderr[-2000:]


def test_one_document_per_line(tmp_path, caplog):
  path = tmp_path / "corpus.txt"
  path.write_text("".join(f"document number {i} .\n" for i in range(150)))
  with caplog.at_level(logging.WARNING):
    as_text = loaders.load_corpus([{"path": str(path)}])
  assert len(as_text) == 1 and "set the source's format to 'lines'" in caplog.text
  as_lines = loaders.load_corpus([{"path": str(path), "format": "lines"}])
  assert [d.text for d in as_lines[:2]] == ["document number 0 .", "document number 1 ."] and len(as_lines) == 150
  with pytest.raises(DataError, match="format 'lines' is not for SFT data"):
    loaders.load_sft([{"path": str(path), "format": "lines"}])


def test_non_finite_parameters_are_refused_on_load(tmp_path):
  import jax

  from ilp import parallel
  from ilp.config import DEFAULT_MODEL as cfg
  from ilp.model import build

  mesh = parallel.make_mesh((1, 1, 1), jax.devices()[:1])
  _, params = build.init_params(cfg, mesh, parallel.DEFAULT_RULES, seed=0)
  leaves, treedef = jax.tree.flatten(params)
  leaves[1] = leaves[1].at[0].set(np.nan)
  checkpoint.save_params(str(tmp_path / "model"), cfg, jax.tree.unflatten(treedef, leaves))
  with pytest.raises(checkpoint.CorruptModelError, match=r"model: parameters hold NaN or infinite values"):
    checkpoint.load_params(str(tmp_path / "model"), mesh)


def test_detection_settings_do_not_depend_on_where_the_workdir_lies():
  from ilp.data.config import DataConfig
  from ilp.detection.config import DetectConfig, settings_hash

  data = DataConfig(sft=({"path": "{workdir}/world/sft.jsonl"},), tokenizer="{workdir}/world/tokenizer")
  a = settings_hash(DetectConfig(), data.resolved("/runs/a"), 0, "/runs/a")
  assert a == settings_hash(DetectConfig(), data.resolved("/elsewhere/b"), 0, "/elsewhere/b/")
  assert a != settings_hash(DetectConfig(temperature=0.5), data.resolved("/runs/a"), 0, "/runs/a")


def test_an_empty_source_file_is_refused_before_any_work(tmp_path):
  paths = sft_data.make_inputs(str(tmp_path / "data"), per_dataset=8)
  open(paths["b"], "w").close()
  with pytest.raises(DataError, match=f"{paths['b']}: holds no SFT data"):
    pipeline.run(sft_data.sft_config(paths), str(tmp_path / "work"))
  assert not (tmp_path / "work").exists()


@pytest.mark.parametrize("field", ["data.tokenizer", "init.hf_dir", "detect.model"])
def test_a_missing_directory_the_config_names_is_refused_before_any_work(tmp_path, field):
  paths = sft_data.make_inputs(str(tmp_path / "data"), per_dataset=8)
  config = sft_data.sft_config(paths)
  section, name = field.split(".")
  config[section][name] = str(tmp_path / "nowhere")
  with pytest.raises(ConfigError, match=f"'{field}': {tmp_path / 'nowhere'}: no such directory"):
    pipeline.run(config, str(tmp_path / "work"))
  assert not (tmp_path / "work").exists()


def test_a_vocabulary_smaller_than_the_tokenizer_is_refused_before_any_work(tmp_path):
  paths = sft_data.make_inputs(str(tmp_path / "data"), per_dataset=8)
  config = sft_data.sft_config(paths)
  config.model.vocab_size = 10
  with pytest.raises(ConfigError, match="'model.vocab_size': 10 is smaller than the tokenizer's"):
    pipeline.run(config, str(tmp_path / "work"))
  assert not (tmp_path / "work").exists()


def test_a_hub_id_as_a_dataset_name_is_refused_before_any_work(tmp_path):
  paths = sft_data.make_inputs(str(tmp_path / "data"), per_dataset=8)
  config = sft_data.sft_config(paths)
  config.data.sft = ({"name": "tatsu-lab/alpaca", "format": "hf"},)
  with pytest.raises(DataError, match="'tatsu-lab/alpaca' is neither a local dataset directory"):
    pipeline.run(config, str(tmp_path / "work"))
  assert not (tmp_path / "work").exists()


def test_a_killed_runs_temporaries_are_removed_when_the_next_run_locks(tmp_path, caplog):
  (tmp_path / "sft" / ".tmp-dynamics-x1").mkdir(parents=True)
  (tmp_path / "sft" / ".tmp-dynamics-x1" / "part.parquet").write_text("half")
  (tmp_path / ".tmp-summary.json-x2").write_text("{")
  (tmp_path / "sft" / "kept.json").write_text("{}")
  with caplog.at_level(logging.WARNING), pipeline._locked(str(tmp_path)):
    pass
  assert sorted(p.name for p in tmp_path.rglob("*")) == ["kept.json", "sft"]
  assert "removed 2 temporary file(s) a killed run left" in caplog.text


@pytest.mark.parametrize("content", [b'{"sft": {"settings": {"a"', b"[1, 2]", b"\xff\xfe", b'{"sft": 3}'])
def test_a_damaged_provenance_is_one_line_error_naming_it(tmp_path, content):
  (tmp_path / "provenance.json").write_bytes(content)
  with pytest.raises(fileio.ResumeError, match=f"^{tmp_path}/provenance.json is damaged .*use a new work directory"):
    provenance.Record(str(tmp_path / "provenance.json"), True)
