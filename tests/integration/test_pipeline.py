"""The pipeline runner and launch.py: stages run once, config overrides apply, bad configs fail clearly."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from configs import tiny_test
from ilp import pipeline
from ilp.model import checkpoint
from ilp.model.config import ModelConfig, ModelConfigError
from ilp.typed import ConfigError
from tests import ROOT


def test_init_model_stage_writes_checkpoint_and_skips_when_done(tmp_path):
  config = tiny_test.get_config()
  pipeline.run(config, str(tmp_path))
  summary = json.loads((tmp_path / "model_init.json").read_text())
  assert summary["parameters"] == 128 * 32 * 2 + 32 + 2 * (32 * 8 * (4 + 2 + 2 + 4) + 3 * 32 * 64 + 2 * 32)
  assert summary["cached_decode_max_abs_logit_gap"] < 1e-5
  assert summary["mesh"] == {"data": 1, "fsdp": jax.device_count(), "tensor": 1}
  assert checkpoint.read_model_config(str(tmp_path / "model_init")).num_layers == 2
  assert json.loads((tmp_path / "config.json").read_text())["model"]["hidden_size"] == 32
  stamp = os.path.getmtime(tmp_path / "model_init.json")
  pipeline.run(config, str(tmp_path))
  assert os.path.getmtime(tmp_path / "model_init.json") == stamp


def test_unknown_stage_is_rejected_before_anything_is_written(tmp_path):
  config = tiny_test.get_config()
  config.stages = ("init_model", "train_everything")
  with pytest.raises(ConfigError, match="'stages': unknown stage.*train_everything"):
    pipeline.run(config, str(tmp_path / "w"))
  assert not (tmp_path / "w").exists()


def test_a_workdir_source_no_stage_writes_is_rejected_before_any_work(tmp_path):
  """`{workdir}/world/...` sources exist only when the world stage runs (or ran): a run without
  it, e.g. a user's own data on the world's config with its replay left in, stops at once
  instead of at the stage that reads the file."""
  from ilp.data.records import DataError

  config = tiny_test.get_config()
  config.data.replay = ({"path": "{workdir}/world/replay.jsonl"},)
  workdir = tmp_path / "w"
  with pytest.raises(
    DataError,
    match=r"data\.replay\[0\]\.path: .*w/world/replay\.jsonl does not exist, and no "
    r"stage of this run writes it \(stages to run: init_model\)",
  ):
    pipeline.run(config, str(workdir))
  assert not (workdir / "model_init").exists() and not (workdir / "provenance.json").exists()
  # with the world stage pending (it writes world/), the same source passes the check
  pipeline._check_workdir_sources(
    pipeline.config_lib.load(config),
    pipeline.Layout(str(workdir)),
    [pipeline.STAGES["world"], pipeline.STAGES["init_model"]],
  )


def test_model_config_errors_name_the_field():
  fields = tiny_test.get_config().model.to_dict()
  with pytest.raises(ModelConfigError, match="unknown model config field.*num_expert"):
    ModelConfig.from_dict({**fields, "num_expert": 4})
  with pytest.raises(ConfigError, match="'dtype': 'float8' is not one of"):
    ModelConfig.from_dict({**fields, "dtype": "float8"})
  with pytest.raises(ConfigError, match="'num_heads': 4 must be a multiple of num_kv_heads"):
    ModelConfig.from_dict({**fields, "num_kv_heads": 3})


def test_launch_cli_applies_overrides(tmp_path):
  """Overrides reach the run; `machine.compilation_cache` with `{workdir}` puts XLA's compiled
  programs under the work directory (the suite's own cache variable is dropped for it)."""
  env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
  env.pop("JAX_COMPILATION_CACHE_DIR", None)
  result = subprocess.run(
    [
      sys.executable,
      os.path.join(ROOT, "launch.py"),
      "--config=configs/tiny_test.py",
      "--config.model.num_layers=1",
      "--config.mesh.shape=(1,1,2)",
      "--config.machine.compilation_cache={workdir}/xla",
      f"--workdir={tmp_path}",
    ],
    cwd=ROOT,
    capture_output=True,
    text=True,
    env=env,
    timeout=300,
  )
  assert result.returncode == 0, result.stderr[-3000:]
  assert "stage init_model: done" in result.stderr
  assert checkpoint.read_model_config(str(tmp_path / "model_init")).num_layers == 1
  assert json.loads((tmp_path / "model_init.json").read_text())["mesh"]["tensor"] == 2
  assert json.loads((tmp_path / "config.json").read_text())["machine"]["compilation_cache"] == str(tmp_path / "xla")
  assert any(name.startswith("jit_") for name in os.listdir(tmp_path / "xla"))


@pytest.mark.parametrize(
  "name, variant", [("qwen2_5_0_5b", "qwen2_tied"), ("llama3_2_1b", "llama3_rope_bias"), ("olmo2_1b", "olmo2")]
)
def test_real_model_configs_fine_tune_the_base_and_probe_it_through_diagnosis(name, variant, tmp_path):
  """A real-model config pointed at a tiny pretrained base of its family (SFT starts from it, the
  probes ask it) and a separate tiny instruct model (the reference) runs every stage."""
  import importlib

  import pandas as pd

  from tests import hf_models, sft_data

  for directory, seed in (("base", 0), ("instruct", 1)):
    hf_models.save_hf_model(variant, str(tmp_path / directory), seed=seed)
    hf_models.save_tiny_tokenizer(str(tmp_path / directory))
  config = importlib.import_module(f"configs.{name}").get_config()
  assert config.init.hf_dir.startswith("/models/") and not config.init.hf_dir.endswith("Instruct")
  assert config.detect.reference.endswith("Instruct") and config.detect.base == "model_init"
  assert config.stages == ("init_model", "sft", "detect", "diagnose", "report")
  assert config.sft.compute_dtype == "bfloat16" and config.sft.init_from == "model_init"
  data = tmp_path / "data"
  data.mkdir()
  sft_data.write_sft_jsonl(str(data / "a.jsonl"), "a", 1, 8, seed=1)
  config.init.hf_dir = str(tmp_path / "base")
  config.data.update(sft=({"path": str(data / "a.jsonl")},), buckets=(32,))
  config.sft.update(batch_size=8, epochs=1)
  config.detect.update(
    reference=str(tmp_path / "instruct"),
    num_samples=2,
    pass_k=(1, 2),
    bon_k=(1, 2),
    max_new_tokens=3,
    base_samples=2,
    blind_bon_k=2,
    batch_size=8,
  )
  workdir = tmp_path / "work"
  pipeline.run(config, str(workdir))
  cfg = checkpoint.read_model_config(str(workdir / "model_init"))
  assert cfg.family == variant.split("_")[0].replace("llama3", "llama") and cfg.dtype == "bfloat16"
  detection = pd.read_parquet(workdir / "detect" / "detection.parquet")
  for column in ("mc_unlearned", "gen_unlearned", "p_exist", "base_blind", "reference_p_true", "jsd_base_sft"):
    assert column in detection, column
  assert detection["reference_p_true"].between(0, 1).all() and detection["p_exist"].dtype == bool
  attributed = pd.read_parquet(workdir / "diagnosis" / "attribution.parquet")
  np.testing.assert_array_equal(attributed.set_index("id").loc[detection["id"], "unlearned"], detection["mc_unlearned"])
  assert (workdir / "report" / "report.md").exists()


def test_stages_are_wiring_only():
  """No stage module imports another stage, and each stays short: the library holds the logic."""
  import ast
  import glob

  for path in glob.glob(os.path.join(ROOT, "ilp", "stages", "*.py")):
    source = open(path).read()
    assert len(source.splitlines()) <= 100, path
    for node in ast.walk(ast.parse(source)):
      if isinstance(node, ast.ImportFrom):
        assert not (node.module or "").startswith("ilp.stages"), f"{path} imports {node.module}"
      if isinstance(node, ast.Import):
        assert not any(a.name.startswith("ilp.stages") for a in node.names), path


def test_layout_nests_arms():
  from ilp.layout import Layout

  layout = Layout("/runs/base")
  arm = layout.arm("knowledge_cpt")
  assert arm.root == "/runs/base/arms/knowledge_cpt"
  assert arm.detection == "/runs/base/arms/knowledge_cpt/detect/detection.parquet"
  assert arm.model("sft") == "/runs/base/arms/knowledge_cpt/sft/final" and arm.model("/ckpt/x") == "/ckpt/x"
  assert layout.dynamics() == "/runs/base/sft/dynamics" and layout.examples == "/runs/base/examples.parquet"
