"""Hugging Face checkpoint directories <-> ModelConfig and sharded NNX parameters.

Reading places every tensor straight onto its devices with its target sharding, slicing a
memory-mapped view per shard, so no full host copy of the model is ever made. Writing produces
a directory (`config.json` + safetensors) that `transformers.AutoModelForCausalLM` loads. A
scanned model (`scan_layers`) stacks HF's per-layer tensors on its leading `layers` axis when
reading and writes each layer's slice back, so its HF directory is the unscanned model's.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from typing import Any, Iterator, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.experimental import multihost_utils
from jax.sharding import Mesh

from ilp import fileio, parallel
from ilp.model import build
from ilp.model.config import FAMILIES, ModelConfig, ModelConfigError, RopeConfig
from ilp.model.safetensors_io import CheckpointError, SafetensorsDir, write_sharded
from ilp.typed import ConfigError

_ARCHITECTURES = {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM", "olmo2": "Olmo2ForCausalLM"}
# Tensors HF checkpoints may carry that are recomputed rather than learned.
_IGNORED_SUFFIXES = ("rotary_emb.inv_freq",)


def _load_json(path: str) -> dict[str, Any]:
  if not os.path.exists(path):
    raise CheckpointError(f"{path}: not found")
  try:
    with open(path) as f:
      return json.load(f)
  except json.JSONDecodeError as e:
    raise CheckpointError(f"{path}: line {e.lineno}: invalid JSON ({e.msg})") from e


def config_from_hf(
  directory: str, param_dtype: str = "float32", dtype: str = "float32", scan_layers: bool = False, remat: str = "none"
) -> ModelConfig:
  """Reads `config.json` of an HF checkpoint into a ModelConfig; the other arguments are how the
  model is stored and run, which HF's config does not say."""
  path = os.path.join(directory, "config.json")
  d = _load_json(path)
  family = d.get("model_type")
  if family not in FAMILIES:
    raise ModelConfigError(
      f"{path}: field 'model_type': '{family}' is not supported (supported: {', '.join(FAMILIES)})"
    )

  def need(key: str) -> Any:
    if d.get(key) is None:
      raise ModelConfigError(f"{path}: required field '{key}' is missing")
    return d[key]

  def unsupported(key: str, reason: str) -> None:
    raise ModelConfigError(f"{path}: field '{key}': {reason} is not supported")

  if d.get("hidden_act", "silu") != "silu":
    unsupported("hidden_act", f"'{d['hidden_act']}'")
  if d.get("mlp_bias"):
    unsupported("mlp_bias", "an MLP bias")
  if d.get("use_sliding_window"):
    unsupported("use_sliding_window", "sliding-window attention")

  rope = d.get("rope_parameters") or d.get("rope_scaling") or {}
  rope_type = rope.get("rope_type", rope.get("type", "default"))
  defaults = RopeConfig()
  rope_cfg = RopeConfig(
    theta=float(rope.get("rope_theta", d.get("rope_theta", defaults.theta))),
    type=rope_type,
    factor=float(rope.get("factor", 1.0)),
    low_freq_factor=float(rope.get("low_freq_factor", defaults.low_freq_factor)),
    high_freq_factor=float(rope.get("high_freq_factor", defaults.high_freq_factor)),
    original_max_position_embeddings=int(
      rope.get("original_max_position_embeddings", defaults.original_max_position_embeddings)
    ),
  )
  hidden, heads = int(need("hidden_size")), int(need("num_attention_heads"))
  attention_bias = bool(d.get("attention_bias", False))
  eos = d.get("eos_token_id")
  eos_ids = tuple(int(e) for e in (eos if isinstance(eos, list) else [] if eos is None else [eos]))
  try:
    return ModelConfig(
      family=family,
      vocab_size=int(need("vocab_size")),
      hidden_size=hidden,
      intermediate_size=int(need("intermediate_size")),
      num_layers=int(need("num_hidden_layers")),
      num_heads=heads,
      num_kv_heads=int(d.get("num_key_value_heads") or heads),
      head_dim=int(d.get("head_dim") or hidden // heads),
      rms_norm_eps=float(d.get("rms_norm_eps", 1e-6)),
      rope=rope_cfg,
      max_position_embeddings=int(d.get("max_position_embeddings", 2048)),
      tie_embeddings=bool(d.get("tie_word_embeddings", False)),
      qkv_bias=family == "qwen2" or attention_bias,
      o_bias=family != "qwen2" and attention_bias,
      param_dtype=param_dtype,
      dtype=dtype,
      bos_token_id=d.get("bos_token_id"),
      eos_token_ids=eos_ids,
      pad_token_id=d.get("pad_token_id"),
      scan_layers=scan_layers,
      remat=remat,
    )
  except (ModelConfigError, ConfigError) as e:
    raise ModelConfigError(f"{path}: {e}") from e


def config_to_hf(cfg: ModelConfig) -> dict[str, Any]:
  """The `config.json` transformers needs to rebuild the same architecture."""
  rope: dict[str, Any] = {"rope_type": cfg.rope.type, "rope_theta": cfg.rope.theta}
  if cfg.rope.type in ("linear", "llama3"):
    rope["factor"] = cfg.rope.factor
  if cfg.rope.type == "llama3":
    rope.update(
      low_freq_factor=cfg.rope.low_freq_factor,
      high_freq_factor=cfg.rope.high_freq_factor,
      original_max_position_embeddings=cfg.rope.original_max_position_embeddings,
    )
  out = {
    "model_type": cfg.family,
    "architectures": [_ARCHITECTURES[cfg.family]],
    "vocab_size": cfg.vocab_size,
    "hidden_size": cfg.hidden_size,
    "intermediate_size": cfg.intermediate_size,
    "num_hidden_layers": cfg.num_layers,
    "num_attention_heads": cfg.num_heads,
    "num_key_value_heads": cfg.num_kv_heads,
    "head_dim": cfg.head_dim,
    "hidden_act": "silu",
    "rms_norm_eps": cfg.rms_norm_eps,
    "max_position_embeddings": cfg.max_position_embeddings,
    "rope_parameters": rope,
    "tie_word_embeddings": cfg.tie_embeddings,
    "dtype": cfg.param_dtype,
    "bos_token_id": cfg.bos_token_id,
    "pad_token_id": cfg.pad_token_id,
    "eos_token_id": (
      list(cfg.eos_token_ids) if len(cfg.eos_token_ids) > 1 else cfg.eos_token_ids[0] if cfg.eos_token_ids else None
    ),
  }
  if cfg.family != "qwen2":
    out["attention_bias"] = cfg.o_bias
  return out


@dataclasses.dataclass(frozen=True)
class TensorMap:
  """Where one HF tensor lives in our state and how its layout differs.

  HF linear weights are [out, in]; ours are [in, out] with the head axis split out, so
  `transpose` flips HF's two axes and a reshape then yields our shape. In a scanned model the
  variable at `path` stacks every layer's tensor and this one is its slice `layer`.
  """

  hf_name: str
  path: tuple[Any, ...]
  hf_shape: tuple[int, ...]
  transpose: bool
  layer: int | None = None

  def to_ours(self, hf_array: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """A view (no copy) of the HF tensor in our layout."""
    return (hf_array.T if self.transpose else hf_array).reshape(tuple(shape))

  def to_hf(self, array: np.ndarray) -> np.ndarray:
    if self.transpose:
      return array.reshape(self.hf_shape[::-1]).T
    return array.reshape(self.hf_shape)


def tensor_maps(cfg: ModelConfig) -> list[TensorMap]:
  """Every parameter of the model, paired with its HF name."""
  e, m, v = cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size
  q_out, kv_out = cfg.num_heads * cfg.head_dim, cfg.num_kv_heads * cfg.head_dim
  maps = [
    TensorMap("model.embed_tokens.weight", ("embed",), (v, e), False),
    TensorMap("model.norm.weight", ("final_norm", "scale"), (e,), False),
  ]
  if not cfg.tie_embeddings:
    maps.append(TensorMap("lm_head.weight", ("lm_head",), (v, e), True))
  if cfg.post_norm:
    norm_names = {"attn_norm": "post_attention_layernorm", "mlp_norm": "post_feedforward_layernorm"}
  else:
    norm_names = {"attn_norm": "input_layernorm", "mlp_norm": "post_attention_layernorm"}
  for i in range(cfg.num_layers):
    hf, ours = f"model.layers.{i}", ("layers",) if cfg.scan_layers else ("layers", i)
    attn = ours + ("attn",)
    layer_maps = [
      TensorMap(f"{hf}.self_attn.q_proj.weight", attn + ("q",), (q_out, e), True),
      TensorMap(f"{hf}.self_attn.k_proj.weight", attn + ("k",), (kv_out, e), True),
      TensorMap(f"{hf}.self_attn.v_proj.weight", attn + ("v",), (kv_out, e), True),
      TensorMap(f"{hf}.self_attn.o_proj.weight", attn + ("o",), (e, q_out), True),
      TensorMap(f"{hf}.mlp.gate_proj.weight", ours + ("mlp", "gate"), (m, e), True),
      TensorMap(f"{hf}.mlp.up_proj.weight", ours + ("mlp", "up"), (m, e), True),
      TensorMap(f"{hf}.mlp.down_proj.weight", ours + ("mlp", "down"), (e, m), True),
    ]
    layer_maps += [
      TensorMap(f"{hf}.{hf_norm}.weight", ours + (norm, "scale"), (e,), False) for norm, hf_norm in norm_names.items()
    ]
    if cfg.qkv_bias:
      layer_maps += [
        TensorMap(f"{hf}.self_attn.{p}_proj.bias", attn + (f"{p}_bias",), (n,), False)
        for p, n in (("q", q_out), ("k", kv_out), ("v", kv_out))
      ]
    if cfg.o_bias:
      layer_maps.append(TensorMap(f"{hf}.self_attn.o_proj.bias", attn + ("o_bias",), (e,), False))
    if cfg.qk_norm:
      layer_maps += [
        TensorMap(f"{hf}.self_attn.q_norm.weight", attn + ("q_norm", "scale"), (q_out,), False),
        TensorMap(f"{hf}.self_attn.k_norm.weight", attn + ("k_norm", "scale"), (kv_out,), False),
      ]
    maps += [dataclasses.replace(t, layer=i) for t in layer_maps] if cfg.scan_layers else layer_maps
  return maps


def load_hf(
  directory: str,
  mesh: Mesh,
  rules: Sequence[tuple[str, Any]] = parallel.DEFAULT_RULES,
  param_dtype: str = "float32",
  dtype: str = "float32",
  scan_layers: bool = False,
  remat: str = "none",
) -> tuple[ModelConfig, nnx.GraphDef, nnx.State]:
  """Reads an HF checkpoint directory into sharded parameters on `mesh`; the keyword arguments are
  `config_from_hf`'s."""
  cfg = config_from_hf(directory, param_dtype=param_dtype, dtype=dtype, scan_layers=scan_layers, remat=remat)
  graphdef, abstract = build.abstract_model(cfg)
  shardings = dict(build.flat_variables(parallel.state_shardings(abstract, mesh, rules)))
  variables = dict(build.flat_variables(abstract))
  reader = SafetensorsDir(directory)
  maps = tensor_maps(cfg)
  unexpected = set(reader.names()) - {t.hf_name for t in maps}
  if cfg.tie_embeddings:
    unexpected.discard("lm_head.weight")  # some tied checkpoints store the copy anyway
  unexpected = sorted(n for n in unexpected if not n.endswith(_IGNORED_SUFFIXES))
  if unexpected:
    raise CheckpointError(
      f"{directory}: tensors not used by a {cfg.family} model with this config.json: "
      f"{', '.join(unexpected[:5])}{' ...' if len(unexpected) > 5 else ''}"
    )
  np_dtype = jnp.dtype(param_dtype)
  by_path: dict[tuple[Any, ...], list[TensorMap]] = {}
  for t in maps:  # a scanned model's stacked variable gathers its layers' tensors, in layer order
    if t.hf_name not in reader:
      raise CheckpointError(f"{directory}: tensor '{t.hf_name}' is missing")
    if reader.shape(t.hf_name) != t.hf_shape:
      raise CheckpointError(
        f"{reader.file_of(t.hf_name)}: tensor '{t.hf_name}' has shape "
        f"{reader.shape(t.hf_name)}, expected {t.hf_shape} from config.json"
      )
    by_path.setdefault(t.path, []).append(t)
  flat = []
  for path, group in by_path.items():
    var = variables[path]
    stacked = group[0].layer is not None
    views = [t.to_ours(reader.get(t.hf_name), var.shape[1:] if stacked else var.shape) for t in group]
    if stacked:  # a device's slice [layers, ...] stacks its layers' slices
      read = lambda idx, views=views: np.stack([np.array(v[idx[1:]], dtype=np_dtype) for v in views[idx[0]]])
    else:
      read = lambda idx, view=views[0]: np.array(view[idx], dtype=np_dtype)  # copy: never alias the mmap
    flat.append((path, var.replace(jax.make_array_from_callback(var.shape, shardings[path].get_value(), read))))
  return cfg, graphdef, nnx.from_flat_state(flat)


def _host_tensors(cfg: ModelConfig, state: nnx.State, dtype: np.dtype) -> Iterator[tuple[str, np.ndarray]]:
  variables = dict(build.flat_variables(state))
  for t in tensor_maps(cfg):
    array = variables[t.path].get_value()
    if t.layer is not None:
      array = array[t.layer]  # sliced on its devices: only this layer is gathered
    host = multihost_utils.process_allgather(array, tiled=True) if jax.process_count() > 1 else jax.device_get(array)
    yield t.hf_name, t.to_hf(np.asarray(host)).astype(dtype)


def save_hf(
  cfg: ModelConfig, state: nnx.State, directory: str, max_shard_bytes: int = 2 << 30, dtype: str | None = None
) -> None:
  """Writes an HF checkpoint directory atomically; tensors are gathered to the host one by one."""
  np_dtype = jnp.dtype(dtype or cfg.param_dtype)
  tensors = _host_tensors(cfg, state, np_dtype)
  if jax.process_index() != 0:
    for _ in tensors:  # take part in every gather, write nothing
      pass
    return
  hf_config = config_to_hf(cfg)
  hf_config["dtype"] = str(np_dtype)
  with fileio.atomic_directory(directory) as tmp:
    write_sharded(tensors, tmp, max_shard_bytes)
    with open(os.path.join(tmp, "config.json"), "w") as f:
      json.dump(hf_config, f, indent=2)


def load_tokenizer(directory: str):
  """The checkpoint's own tokenizer, read locally with transformers.AutoTokenizer."""
  import transformers  # heavy import, only where a tokenizer is needed

  try:
    return transformers.AutoTokenizer.from_pretrained(directory, local_files_only=True)
  except (OSError, ValueError) as e:
    raise CheckpointError(f"{directory}: no loadable tokenizer ({e})") from e


def find_tokenizer(directory: str):
  """The directory's tokenizer, or None (logged) when it has none: weights can travel alone."""
  try:
    return load_tokenizer(directory)
  except CheckpointError:
    logging.getLogger(__name__).info("no tokenizer in %s", directory)
    return None
