"""The convert_hf CLI round trip, orbax re-sharding, and clear errors for bad checkpoints."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
import torch
import transformers
from flax import nnx
from safetensors.numpy import load_file, save_file

from ilp import parallel
from ilp.model import build, checkpoint, hf
from ilp.model.config import ModelConfigError
from ilp.model.safetensors_io import CheckpointError
from tests import ROOT, hf_models


def _convert(*args: str) -> None:
  env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
  result = subprocess.run(
    [sys.executable, os.path.join(ROOT, "scripts", "convert_hf.py"), *args],
    capture_output=True,
    text=True,
    env=env,
    timeout=300,
  )
  assert result.returncode == 0, result.stderr[-3000:]


def test_convert_hf_cli_round_trip(tmp_path):
  src, ckpt, back = str(tmp_path / "hf"), str(tmp_path / "orbax"), str(tmp_path / "hf_back")
  model = hf_models.save_hf_model("olmo2", src)
  hf_models.save_tiny_tokenizer(src)
  _convert("--to=orbax", f"--src={src}", f"--dst={ckpt}", "--mesh_shape=1,4,1")
  assert sorted(os.listdir(ckpt)) == ["checksums.json", "model_config.json", "params", "tokenizer"]
  _convert("--to=hf", f"--src={ckpt}", f"--dst={back}", "--mesh_shape=2,1,2")
  reloaded = transformers.AutoModelForCausalLM.from_pretrained(back, dtype=torch.float32)
  for name, tensor in model.state_dict().items():
    np.testing.assert_array_equal(reloaded.state_dict()[name].numpy(), tensor.numpy(), err_msg=name)
  tokenizer = hf.load_tokenizer(back)
  assert tokenizer("w5 w7").input_ids == [5, 7] and tokenizer.eos_token_id == 2


@pytest.mark.mesh
def test_orbax_checkpoint_restores_onto_another_mesh(tmp_path):
  src = str(tmp_path / "hf")
  hf_models.save_hf_model("llama", src)
  cfg, graphdef, state = hf.load_hf(src, parallel.make_mesh((1, 8, 1)))
  checkpoint.save_params(str(tmp_path / "ckpt"), cfg, state)
  cfg2, _, restored = checkpoint.load_params(str(tmp_path / "ckpt"), parallel.make_mesh((2, 2, 2)))
  assert cfg2 == cfg
  for (path, a), (_, b) in zip(build.flat_variables(state), build.flat_variables(restored)):
    assert b.get_value().sharding.mesh.shape["tensor"] == 2
    np.testing.assert_array_equal(np.asarray(a.get_value()), np.asarray(b.get_value()), err_msg=str(path))


@pytest.fixture
def checkpoint_dir(tmp_path):
  directory = str(tmp_path / "hf")
  hf_models.save_hf_model("qwen2", directory)
  return directory


def _edit_config(directory, **changes):
  path = os.path.join(directory, "config.json")
  with open(path) as f:
    config = json.load(f)
  config.update(changes)
  with open(path, "w") as f:
    json.dump(config, f)


def _edit_tensors(directory, edit):
  path = os.path.join(directory, "model.safetensors")
  tensors = load_file(path)
  edit(tensors)
  save_file(tensors, path)


def _load(directory):
  return hf.load_hf(directory, parallel.make_mesh((1, 1, 1), jax.devices()[:1]))


def test_missing_tensor_is_named(checkpoint_dir):
  _edit_tensors(checkpoint_dir, lambda t: t.pop("model.layers.1.mlp.up_proj.weight"))
  with pytest.raises(CheckpointError, match=r"tensor 'model\.layers\.1\.mlp\.up_proj\.weight' is missing"):
    _load(checkpoint_dir)


def test_shape_mismatch_is_named(checkpoint_dir):
  _edit_config(checkpoint_dir, intermediate_size=100)
  with pytest.raises(
    CheckpointError,
    match=r"model\.safetensors: tensor 'model\.layers\.0\.mlp\.gate_proj\.weight' "
    r"has shape \(112, 64\), expected \(100, 64\)",
  ):
    _load(checkpoint_dir)


def test_unknown_model_type_is_named(checkpoint_dir):
  _edit_config(checkpoint_dir, model_type="gpt2")
  with pytest.raises(ModelConfigError, match=r"config\.json: field 'model_type': 'gpt2' is not supported"):
    _load(checkpoint_dir)


def test_unexpected_tensor_is_named(checkpoint_dir):
  _edit_tensors(checkpoint_dir, lambda t: t.update({"model.layers.0.mlp.up_proj.bias": np.zeros(112, np.float32)}))
  with pytest.raises(CheckpointError, match=r"not used by a qwen2 model.*up_proj\.bias"):
    _load(checkpoint_dir)


@pytest.mark.parametrize(
  "change, message",
  [
    ({"hidden_act": "gelu"}, "field 'hidden_act': 'gelu' is not supported"),
    ({"rope_parameters": {"rope_type": "yarn", "rope_theta": 1e4}}, "'rope.type': 'yarn' is not supported"),
    ({"num_hidden_layers": None}, "required field 'num_hidden_layers' is missing"),
  ],
)
def test_unsupported_config_fields_are_named(checkpoint_dir, change, message):
  _edit_config(checkpoint_dir, **change)
  with pytest.raises(ModelConfigError, match=message):
    _load(checkpoint_dir)


def test_missing_and_malformed_files(tmp_path, checkpoint_dir):
  with pytest.raises(CheckpointError, match="config.json: not found"):
    _load(str(tmp_path))
  os.remove(os.path.join(checkpoint_dir, "model.safetensors"))
  with pytest.raises(CheckpointError, match="neither model.safetensors nor model.safetensors.index.json"):
    _load(checkpoint_dir)
  with open(os.path.join(checkpoint_dir, "config.json"), "w") as f:
    f.write('{"model_type": "qwen2",\n "vocab_size": }')
  with pytest.raises(CheckpointError, match="config.json: line 2: invalid JSON"):
    _load(checkpoint_dir)


def test_failed_export_leaves_nothing(tmp_path, checkpoint_dir):
  """An export that fails midway (here: a parameter is absent) leaves no directory behind."""
  cfg, _, state = _load(checkpoint_dir)
  broken = nnx.from_flat_state([(p, v) for p, v in build.flat_variables(state) if p != ("embed",)])
  with pytest.raises(KeyError):
    hf.save_hf(cfg, broken, str(tmp_path / "out"))
  assert not (tmp_path / "out").exists()
  assert [p for p in tmp_path.iterdir() if p.name.startswith(".tmp")] == []
