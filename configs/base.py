"""Defaults shared by every run; other config files start from `get_config()` here and override.

Launch with `python launch.py --config=configs/<file>.py --workdir=<dir> [--config.a.b=value ...]`.
"""
import ml_collections
from ml_collections import config_dict

from ilp import parallel


def get_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0
  # Pipeline stages to run, in order; a stage whose outputs exist is skipped.
  c.stages = ("init_model",)

  # Architecture, used when no HF checkpoint is given (fields of ilp.model.config.ModelConfig).
  c.model = ml_collections.ConfigDict(dict(
      family="llama", vocab_size=256, hidden_size=64, intermediate_size=176, num_layers=2, num_heads=4,
      num_kv_heads=2, head_dim=16, rms_norm_eps=1e-6, max_position_embeddings=512, tie_embeddings=False,
      qkv_bias=False, o_bias=False, param_dtype="float32", dtype="float32",
      bos_token_id=config_dict.placeholder(int), eos_token_ids=(), pad_token_id=config_dict.placeholder(int),
      rope=dict(theta=10000.0, type="default", factor=1.0, low_freq_factor=1.0, high_freq_factor=4.0,
                original_max_position_embeddings=8192)))

  # Where the initial model comes from: a local HF directory (config.json + safetensors), or
  # random initialisation from `model` when empty.
  c.init = ml_collections.ConfigDict(dict(hf_dir="", param_dtype="float32", dtype="float32"))

  # Device mesh (data, fsdp, tensor); one entry may be -1 (= the remaining devices).
  c.mesh = ml_collections.ConfigDict(dict(shape=(1, -1, 1), rules=parallel.DEFAULT_RULES))

  # Multi-host runtime (TPU pods, GPU clusters). Unset fields are auto-detected by JAX.
  c.distributed = ml_collections.ConfigDict(dict(
      enabled=False, coordinator_address=config_dict.placeholder(str),
      num_processes=config_dict.placeholder(int), process_id=config_dict.placeholder(int)))
  return c
