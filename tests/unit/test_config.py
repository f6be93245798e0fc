"""The typed config: every bad field is one ConfigError naming it, raised before anything is written."""

import os
import subprocess
import sys

import jax
import ml_collections
import pytest

from configs import base, tiny_test, world
from ilp import config as config_lib
from ilp import describe, pipeline, typed
from ilp.typed import ConfigError
from ilp.world.config import WorldConfig
from tests import ROOT


def _sft_config() -> ml_collections.ConfigDict:
  config = tiny_test.get_config()
  config.stages = ("init_model", "sft", "detect")
  config.data.sft = ({"path": "/nonexistent/never-read.jsonl"},)  # the config fails before any file is read
  return config


def _set(config: ml_collections.ConfigDict, path: str, value) -> None:
  *parents, leaf = path.split(".")
  section = config
  for name in parents:
    section = section[name]
  with section.unlocked():
    section[leaf] = value


# (field, value, the error's message): every field the architecture issue and the reliability probe listed.
BAD_FIELDS = [
  ("sft.nonexistent", 1, "'sft.nonexistent': unknown field"),
  ("sft.batch_size", 0, "'sft.batch_size': must be >= 1, got 0"),
  ("sft.grad_accum_steps", 3, "'sft.batch_size': 16 is not divisible by grad_accum_steps=3"),
  ("sft.epochs", -1, "'sft.epochs': must be >= 1, got -1"),
  ("sft.optimizer.learning_rate", -1e-3, "'sft.optimizer.learning_rate': must be > 0"),
  ("sft.optimizer.decay", "exponential", "'sft.optimizer.decay': 'exponential' is not one of"),
  ("sft.init_from", "checkpoints/relative", "'sft.init_from': 'checkpoints/relative' is none of"),
  ("sft.phases", ({"name": "one", "phase": 1},), "'sft.phases[0]'"),
  ("sft.phases", ({"name": "one", "epochs": 0},), "'sft.phases[0].epochs': must be >= 1, got 0"),
  ("pretrain.steps", -5, "'pretrain.steps': must be >= 1, got -5"),
  ("pretrain.init_from", "pretrain", "'pretrain.init_from': 'pretrain' is none of"),
  (
    "mesh.shape",
    (3, -1, 1),
    f"'mesh.shape': mesh shape (3, -1, 1) does not divide the {jax.device_count()} available devices",
  ),
  ("mesh.shape", (1, 2), "'mesh.shape': expected 3 entries, got 2"),
  ("distributed.heartbeat_timeout_seconds", 0, "'distributed.heartbeat_timeout_seconds': must be >= 1, got 0"),
  ("machine.peak_flops", -1.0, "'machine.peak_flops': must be >= 0, got -1.0"),
  ("sft.peak_flops", 1e12, "'sft.peak_flops': unknown field"),  # a machine knob: machine.peak_flops
  ("detect.num_samples", 0, "'detect.num_samples': must be >= 1, got 0"),
  ("detect.threshold", 1.5, "'detect.threshold': must lie in [0, 1], got 1.5"),
  ("detect.temperature", -1.0, "'detect.temperature': must be >= 0 (0: greedy), got -1.0"),
  ("detect.top_p", 0.0, "'detect.top_p': must lie in (0, 1], got 0.0"),
  ("detect.pass_k", (1, 10), "'detect.pass_k': k=10 is not in 1..num_samples=5"),
  ("detect.verifier", "bleu", "'detect.verifier': unknown verifier 'bleu'"),
  ("detect.mc.distractors", "nearest", "'detect.mc.distractors': 'nearest' is not one of"),
  ("detect.model", "final", "'detect.model': 'final' is none of"),
  ("detect.protocol", "cloze", "'detect.protocol': 'cloze' is not one of"),
  ("detect.repeat_rule", "most", "'detect.repeat_rule': 'most' is not one of"),
  ("detect.blind_bon_k", 20, "'detect.blind_bon_k': 20 is not in 1..base_samples=10"),
  ("detect.confidence_temperature", 0.0, "'detect.confidence_temperature': must be > 0"),
  ("data.overlong", "chop", "'data.overlong': 'chop' is not one of"),
  ("data.buckets", (), "'data.buckets': must list lengths >= 2"),
  ("data.corpora", ({"path": "x.txt", "weight": 0.0},), "'data.corpora[0].weight': must be a positive number"),
  ("data.template.turn", "{role}", "'data.template.turn': must contain '{content}'"),
  ("diagnose.rules.order", ("III", "VI"), "'diagnose.rules.order': ['III', 'VI'] must list distinct causes"),
  ("diagnose.signals.similarity_threshold", 0.0, "'diagnose.signals.similarity_threshold': must lie in (0, 1]"),
  ("model.num_kv_heads", 3, "'model.num_heads': 4 must be a multiple of num_kv_heads (3)"),
  ("model.dtype", "float8", "'model.dtype': 'float8' is not one of"),
  ("init.dtype", "int8", "'init.dtype': 'int8' is not one of"),
  ("stages", ("init_model", "fine_tune"), "'stages': unknown stage(s) fine_tune"),
  ("sft.order", "random", "'sft.order': 'random' is not one of"),
  ("sft.spread.buckets", 1, "'sft.spread.buckets': must be >= 2, got 1"),
  ("sft.resample.drop", 1.5, "'sft.resample.drop': must be in (0, 1), got 1.5"),
  ("sft.resample.every_steps", 10, "'data.dev': sft.resample and sft.progressive watch a dev set"),
  ("sft.progressive.max_epochs", 0, "'sft.progressive.max_epochs': must be >= 1, got 0"),
  ("data.dev_fraction", 1.0, "'data.dev_fraction': must be in [0, 1), got 1.0"),
  ("interventions.arms", ({"name": "a b", "intervention": "epochs"},), "'interventions.arms[0].name'"),
  (
    "interventions.arms",
    ({"name": "..", "intervention": "epochs"},),
    "'interventions.arms[0].name': '..' must be a non-empty directory name",
  ),
  (
    "model.max_position_embeddings",
    32,
    "'model.max_position_embeddings': is 32, shorter than the longest sequence (data.buckets' largest: 256)",
  ),
  (
    "interventions.arms",
    ({"name": "x", "intervention": "shuffle", "settings": {"share": 0}},),
    "'interventions.arms[0].settings.share': must be in (0, 1]",
  ),
  (
    "interventions.arms",
    ({"name": "x", "intervention": "epochs"}, {"name": "x", "intervention": "epochs"}),
    "'interventions.arms': arm names repeat",
  ),
]


@pytest.mark.parametrize("field, value, message", BAD_FIELDS, ids=[f"{f}={v}" for f, v, _ in BAD_FIELDS])
def test_bad_field_is_one_config_error_naming_it_and_nothing_is_written(tmp_path, field, value, message):
  config = _sft_config()
  _set(config, field, value)
  workdir = tmp_path / "work"
  with pytest.raises(ConfigError) as raised:
    pipeline.run(config, str(workdir))
  assert message in str(raised.value)
  assert str(raised.value).startswith("config field '")
  assert not workdir.exists()


def test_wrong_types_are_named():
  """ml_collections refuses a retyped override itself; a plain mapping reaches the typed check."""
  with pytest.raises(ConfigError, match="'sft.batch_size': expected int, got str '16'"):
    config_lib.load({"sft": {"batch_size": "16"}})
  with pytest.raises(ConfigError, match=r"'detect.pass_k\[1\]': expected int, got float 2.5"):
    config_lib.load({"detect": {"pass_k": [1, 2.5]}})
  with pytest.raises(ConfigError, match="'mesh': expected a section"):
    config_lib.load({"mesh": 3})


def test_combinations_across_sections():
  config = _sft_config()
  config.data.sft = ()
  with pytest.raises(ConfigError, match="'data.sft': the sft stage needs at least one source"):
    config_lib.load(config)
  config = world.get_config()
  config.data.corpora = ()
  with pytest.raises(ConfigError, match="'data.corpora': the pretrain stage needs at least one corpus"):
    config_lib.load(config)
  config = tiny_test.get_config()
  config.model.vocab_size = 0
  with pytest.raises(ConfigError, match="'model.vocab_size': is 0 .* 'data.tokenizer' is empty"):
    config_lib.load(config)
  config = _sft_config()
  config.stages = ("init_model", "sft", "detect", "diagnose")
  config.detect.protocol = "generative"
  with pytest.raises(ConfigError, match="'diagnose.protocol': 'multiple_choice' is not run by detect.protocol"):
    config_lib.load(config)
  config.detect.update(protocol="both", model="pretrain")
  with pytest.raises(ConfigError, match="'detect.model': is 'pretrain', but the diagnosis reads the training dynamics"):
    config_lib.load(config)
  config.detect.update(protocol="multiple_choice", model="sft")
  config.detect.mc.enabled = False
  with pytest.raises(ConfigError, match="'detect.mc.enabled': the multiple_choice protocol needs"):
    config_lib.load(config)
  config = base.get_config()
  config.stages = ("world",)
  with pytest.raises(ConfigError, match="'world': the world stage needs a `world` section"):
    config_lib.load(config)
  config = world.get_config()
  config.world.interference = -3
  with pytest.raises(ConfigError, match="'world.interference': must be >= 0, got -3"):
    config_lib.load(config)


def test_defaults_live_in_the_dataclasses_and_round_trip():
  """The ConfigDicts of the config files are the dataclasses' defaults; building one back gives them."""
  assert config_lib.load(base.get_config()) == config_lib.Config()
  loaded = config_lib.load(world.get_config())
  assert loaded.world == WorldConfig() and loaded.world.interference == 400 and loaded.world.cities == 40
  assert config_lib.load(typed.config_dict(loaded)) == loaded
  # Optional fields are typed placeholders, so a command line can set them.
  cd = base.get_config()
  cd.model.bos_token_id = 3
  assert config_lib.load(cd).model.bos_token_id == 3


def test_launch_names_an_unknown_override_without_a_traceback(tmp_path):
  result = subprocess.run(
    [
      sys.executable,
      os.path.join(ROOT, "launch.py"),
      "--config=configs/tiny_test.py",
      "--config.sft.nonexistent=1",
      f"--workdir={tmp_path / 'w'}",
    ],
    cwd=ROOT,
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert result.returncode != 0
  assert "config field 'sft.nonexistent': unknown field" in result.stderr
  assert "Traceback" not in result.stderr
  assert not (tmp_path / "w").exists()


def test_the_config_is_built_and_checked_without_jax():
  """Every section lives in a module that imports no JAX: building, checking and describing a config
  starts none of it (only `load`'s device count does). A subprocess: this one has JAX loaded."""
  script = (
    "import sys\nfrom configs import interventions\nfrom ilp import config, describe, typed\n"
    "typed.build(config.Config, interventions.get_config())\ndescribe.markdown(config.Config)\n"
    "print(sorted(m for m in sys.modules if m.split('.')[0] in ('jax', 'jaxlib', 'flax', 'optax', 'orbax')))"
  )
  result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr
  assert result.stdout.strip() == "[]"


def test_every_field_says_what_it_means():
  """The config reference (`ilp.describe`) is each field's comment in the source: every section field
  and every intervention's setting has one."""
  assert describe.missing(config_lib.Config) == []


def test_the_configuration_reference_is_generated_and_current():
  """docs/configuration.md is `python launch.py --describe`'s output; regenerate it after a change."""
  with open(os.path.join(ROOT, "docs", "configuration.md")) as f:
    assert f.read() == describe.markdown(config_lib.Config) + "\n", (
      "docs/configuration.md is stale: python launch.py --describe > docs/configuration.md"
    )
  result = subprocess.run(
    [sys.executable, os.path.join(ROOT, "launch.py"), "--describe"],
    cwd=ROOT,
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert result.returncode == 0 and result.stdout == describe.markdown(config_lib.Config) + "\n", result.stderr


def test_the_real_model_interventions_configs_load_for_every_family():
  """Each family's study: its SFT run as the baseline, the five mitigations with continual
  pre-training set from SFT (its learning rate, half its steps), the base model asked plainly."""
  from configs import real_model_interventions

  for family in real_model_interventions.FAMILIES:
    config = config_lib.load(real_model_interventions.get_config(family))
    assert config.stages[-4:] == ("capability", "arms", "compare", "report") and config.detect.base_format == "plain"
    knowledge = config.interventions.arms[0].typed_settings()
    assert (knowledge.steps_fraction, knowledge.learning_rate, knowledge.query) == (0.5, 1e-5, "entities")
    assert config.sft.optimizer.learning_rate == knowledge.learning_rate
  with pytest.raises(ValueError, match="family 'gpt2' is not one of"):
    real_model_interventions.get_config("gpt2")


def test_a_recorded_config_with_fields_this_version_no_longer_has_still_reads(tmp_path, caplog):
  """A run's config.json from before a field was removed: read, the field named in a warning; a
  field that is unknown in a config given now is still an error."""
  import dataclasses
  import json as json_lib
  import logging

  recorded = json_lib.loads(json_lib.dumps(dataclasses.asdict(config_lib.load(world.get_config())), default=str))
  recorded["detect"]["mc"]["same_answer_rouge_l"] = 0.9  # moved to detect.answers.rouge_l
  recorded["retired_section_field"] = 1
  path = tmp_path / "config.json"
  path.write_text(json_lib.dumps(recorded))
  with caplog.at_level(logging.WARNING, logger="ilp.config"):
    config = config_lib.read(str(path))
  assert config.detect.answers.rouge_l == 0.9 and config.world is not None
  assert "detect.mc.same_answer_rouge_l, retired_section_field" in caplog.text
  with pytest.raises(ConfigError, match="'retired_section_field': unknown field"):
    config_lib.load(recorded)
  del recorded["retired_section_field"]
  with pytest.raises(ConfigError, match="'detect.mc.same_answer_rouge_l': unknown field"):
    config_lib.load(recorded)


def test_indexes_are_kept_only_under_a_runs_work_directory():
  """`data.index_dir` keeps BM25 indexes once a run resolved `{workdir}`; a library call on an
  unresolved config builds them in memory instead of a literal `{workdir}` directory."""
  from ilp.data.config import DataConfig

  assert DataConfig().index_directory is None and DataConfig(index_dir="").index_directory is None
  assert DataConfig().resolved("/runs/w").index_directory == "/runs/w/indexes"
