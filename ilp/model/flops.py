"""Model FLOPs per token (no JAX: the equal-compute controls count compute while checking a config)."""

from __future__ import annotations

from ilp.model.config import ModelConfig


def forward_flops_per_token(cfg: ModelConfig, context: float) -> float:
  """Model FLOPs of one token's forward pass attending over `context` tokens: 2 per weight of every
  matmul (the embedding lookup is a gather, the head a matmul) plus the attention scores and
  weighted values, 4 * layers * heads * head_dim * context."""
  attn = cfg.hidden_size * cfg.head_dim * (2 * cfg.num_heads + 2 * cfg.num_kv_heads)
  mlp = 3 * cfg.hidden_size * cfg.intermediate_size
  matmul_params = cfg.num_layers * (attn + mlp) + cfg.hidden_size * cfg.vocab_size
  return 2.0 * matmul_params + 4.0 * cfg.num_layers * cfg.num_heads * cfg.head_dim * context


def training_flops_per_token(cfg: ModelConfig, seq_len: int) -> float:
  """Model FLOPs of one training token (forward + backward = 3x forward), as in PaLM's MFU."""
  return 3.0 * forward_flops_per_token(cfg, seq_len)
