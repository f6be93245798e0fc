"""One model config for the three decoder families (Llama, Qwen2, OLMo2).

The families differ only in a handful of switches (biases, where the norms sit, q/k norms, RoPE
scaling), so a single frozen dataclass describes all of them; `family` fixes the defaults that
are architectural rather than per-checkpoint.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Mapping

from ilp.model.safetensors_io import CheckpointError
from ilp.typed import ConfigError, check

FAMILIES = ("llama", "qwen2", "olmo2")
ROPE_TYPES = ("default", "linear", "llama3")
REMATS = ("none", "full", "dots_saveable")  # what a layer keeps for the backward pass (all, nothing, matmul outputs)
DTYPES = ("float32", "bfloat16", "float16")  # parameter and compute dtypes, as jnp.dtype names


class ModelConfigError(ValueError):
  """A model config file (HF config.json or a saved model_config.json) cannot be read as a ModelConfig."""


@dataclasses.dataclass(frozen=True)
class RopeConfig:
  """Rotary embedding parameters, in the vocabulary of HF's `rope_parameters`."""

  theta: float = 10000.0  # base of the rotary frequencies
  type: str = "default"  # one of ROPE_TYPES: "linear" divides every frequency by `factor`, "llama3" as Llama 3.1
  factor: float = 1.0  # how much "linear" and "llama3" stretch the context (1: no scaling)
  # "llama3" scaling: with L = original_max_position_embeddings, wavelengths above L / low_freq_factor
  # have their frequency divided by `factor`, those below L / high_freq_factor keep it, those between blend.
  low_freq_factor: float = 1.0  # llama3: the long-wavelength bound's divisor
  high_freq_factor: float = 4.0  # llama3: the short-wavelength bound's divisor
  original_max_position_embeddings: int = 8192  # llama3: the context length before scaling


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Architecture of one decoder; frozen so it can be a static jit argument."""

  family: str  # one of FAMILIES; "olmo2" norms each sublayer's output and the q/k projections
  vocab_size: int  # rows of the embedding (and output head)
  hidden_size: int  # width of the residual stream
  intermediate_size: int  # width of the gated MLP's hidden layer
  num_layers: int  # decoder layers
  num_heads: int  # query heads
  num_kv_heads: int  # key/value heads (grouped-query attention); divides num_heads
  head_dim: int  # width of one attention head
  rms_norm_eps: float = 1e-6  # epsilon of every RMSNorm
  rope: RopeConfig = RopeConfig()  # rotary position embeddings
  max_position_embeddings: int = 2048  # context length stated in an exported config.json (RoPE itself has no limit)
  tie_embeddings: bool = False  # the output head is the transposed input embedding
  qkv_bias: bool = False  # biases on the q, k and v projections (Qwen2)
  o_bias: bool = False  # a bias on the attention's output projection
  param_dtype: str = "float32"  # one of DTYPES: the parameters' dtype
  dtype: str = "float32"  # one of DTYPES: the computation's (norms, softmax and logits stay float32)
  # Special token ids, stated in an exported config.json; a random init without eos_token_ids takes
  # all three from its tokenizer (`for_tokenizer`).
  bos_token_id: int | None = None  # beginning of sequence (None: none)
  eos_token_ids: tuple[int, ...] = ()  # end of sequence (one or several)
  pad_token_id: int | None = None  # padding (None: none)
  # How the layers run, not what they compute (stored with the model, also one from `init.hf_dir`):
  scan_layers: bool = False  # one scan over weights stacked on a leading `layers` axis: compile time flat in depth
  remat: str = "none"  # one of REMATS: what the backward pass recomputes per layer instead of keeping it

  def __post_init__(self):
    check(self.family in FAMILIES, "family", f"'{self.family}' is not supported (supported: {', '.join(FAMILIES)})")
    check(
      self.rope.type in ROPE_TYPES,
      "rope.type",
      f"'{self.rope.type}' is not supported (supported: {', '.join(ROPE_TYPES)})",
    )
    check(self.remat in REMATS, "remat", f"'{self.remat}' is not one of {REMATS}")
    for field in ("param_dtype", "dtype"):
      check(getattr(self, field) in DTYPES, field, f"'{getattr(self, field)}' is not one of {sorted(DTYPES)}")
    for field in ("hidden_size", "intermediate_size", "num_layers", "num_heads", "num_kv_heads", "head_dim"):
      check(getattr(self, field) >= 1, field, f"must be >= 1, got {getattr(self, field)}")
    check(
      self.num_heads % self.num_kv_heads == 0,
      "num_heads",
      f"{self.num_heads} must be a multiple of num_kv_heads ({self.num_kv_heads})",
    )

  @property
  def post_norm(self) -> bool:
    """OLMo2 normalises each sublayer's output before the residual add instead of its input."""
    return self.family == "olmo2"

  @property
  def qk_norm(self) -> bool:
    """OLMo2 RMS-normalises the whole q and k projections before the head split and RoPE."""
    return self.family == "olmo2"

  def replace(self, **changes: Any) -> "ModelConfig":
    return dataclasses.replace(self, **changes)

  def for_tokenizer(self, tokenizer: Any) -> "ModelConfig":
    """vocab_size 0 becomes the tokenizer's size, and without eos_token_ids the special tokens
    are the tokenizer's: a randomly initialised model fits the tokenizer it is trained with."""
    changes: dict[str, Any] = {}
    if not self.vocab_size:
      changes["vocab_size"] = len(tokenizer)
    elif tokenizer is not None and len(tokenizer) > self.vocab_size:  # ids past the table would be clamped
      raise ConfigError(
        "model.vocab_size",
        f"{self.vocab_size} is smaller than the tokenizer's {len(tokenizer)} tokens (0 takes the tokenizer's size)",
      )
    if self.eos_token_ids == () and tokenizer is not None:
      changes.update(
        eos_token_ids=(tokenizer.eos_token_id,),
        bos_token_id=tokenizer.bos_token_id,
        pad_token_id=tokenizer.pad_token_id,
      )
    return self.replace(**changes)

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
    missing = [f.name for f in dataclasses.fields(cls) if f.default is dataclasses.MISSING and f.name not in d]
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


CONFIG_FILE = "model_config.json"  # a checkpoint's ModelConfig (`ilp.model.checkpoint`)


def read_model_config(directory: str, **overrides: Any) -> ModelConfig:
  """The ModelConfig a checkpoint directory was built with, `overrides` applied."""
  path = os.path.join(directory, CONFIG_FILE)
  if not os.path.exists(path):
    raise CheckpointError(f"{path}: not found (is {directory} a checkpoint written by ilp?)")
  with open(path) as f:
    return ModelConfig.from_dict({**json.load(f), **overrides})
