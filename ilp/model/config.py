"""One model config for the three decoder families (Llama, Qwen2, OLMo2).

The families differ only in a handful of switches (biases, where the norms sit, q/k norms, RoPE
scaling), so a single frozen dataclass describes all of them; `family` fixes the defaults that
are architectural rather than per-checkpoint.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import jax.numpy as jnp

FAMILIES = ("llama", "qwen2", "olmo2")
ROPE_TYPES = ("default", "linear", "llama3")
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


class ModelConfigError(ValueError):
  """A model config names an unsupported family, dtype or shape."""


@dataclasses.dataclass(frozen=True)
class RopeConfig:
  """Rotary embedding parameters, in the vocabulary of HF's `rope_parameters`."""
  theta: float = 10000.0
  type: str = "default"
  factor: float = 1.0
  # Llama-3 scaling only.
  low_freq_factor: float = 1.0
  high_freq_factor: float = 4.0
  original_max_position_embeddings: int = 8192


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Architecture of one decoder; frozen so it can be a static jit argument."""
  family: str
  vocab_size: int
  hidden_size: int
  intermediate_size: int
  num_layers: int
  num_heads: int
  num_kv_heads: int
  head_dim: int
  rms_norm_eps: float = 1e-6
  rope: RopeConfig = RopeConfig()
  max_position_embeddings: int = 2048
  tie_embeddings: bool = False
  qkv_bias: bool = False
  o_bias: bool = False
  param_dtype: str = "float32"
  dtype: str = "float32"
  bos_token_id: int | None = None
  eos_token_ids: tuple[int, ...] = ()
  pad_token_id: int | None = None

  def __post_init__(self):
    if self.family not in FAMILIES:
      raise ModelConfigError(f"model family '{self.family}' is not supported (supported: {', '.join(FAMILIES)})")
    if self.rope.type not in ROPE_TYPES:
      raise ModelConfigError(f"rope type '{self.rope.type}' is not supported (supported: {', '.join(ROPE_TYPES)})")
    for field in ("param_dtype", "dtype"):
      if getattr(self, field) not in DTYPES:
        raise ModelConfigError(f"model.{field} '{getattr(self, field)}' is not one of {sorted(DTYPES)}")
    if self.num_heads % self.num_kv_heads:
      raise ModelConfigError(
          f"model.num_heads ({self.num_heads}) must be a multiple of model.num_kv_heads ({self.num_kv_heads})")

  @property
  def post_norm(self) -> bool:
    """OLMo2 normalises each sublayer's output before the residual add instead of its input."""
    return self.family == "olmo2"

  @property
  def qk_norm(self) -> bool:
    """OLMo2 RMS-normalises the whole q and k projections before the head split and RoPE."""
    return self.family == "olmo2"

  @property
  def jnp_param_dtype(self):
    return DTYPES[self.param_dtype]

  @property
  def jnp_dtype(self):
    return DTYPES[self.dtype]

  def replace(self, **changes: Any) -> "ModelConfig":
    return dataclasses.replace(self, **changes)

  def to_dict(self) -> dict[str, Any]:
    out = dataclasses.asdict(self)
    out["eos_token_ids"] = list(self.eos_token_ids)
    return out

  @classmethod
  def from_dict(cls, d: Mapping[str, Any]) -> "ModelConfig":
    """Builds a config from a plain mapping (an ml_collections section or saved JSON)."""
    d = dict(d)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - known)
    if unknown:
      raise ModelConfigError(f"unknown model config field(s): {', '.join(unknown)}")
    missing = [f.name for f in dataclasses.fields(cls)
               if f.default is dataclasses.MISSING and f.name not in d]
    if missing:
      raise ModelConfigError(f"model config is missing field(s): {', '.join(missing)}")
    rope = d.get("rope", {})
    if not isinstance(rope, RopeConfig):
      rope_fields = {f.name for f in dataclasses.fields(RopeConfig)}
      bad = sorted(set(rope) - rope_fields)
      if bad:
        raise ModelConfigError(f"unknown model.rope field(s): {', '.join(bad)}")
      d["rope"] = RopeConfig(**dict(rope))
    d["eos_token_ids"] = tuple(d.get("eos_token_ids") or ())
    return cls(**d)
