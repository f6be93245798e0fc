"""Tiny random Hugging Face models (PyTorch, float32) saved to local directories for parity tests."""

from __future__ import annotations

import numpy as np
import torch
import transformers

# name -> (config class, model class, config overrides)
VARIANTS = {
  "llama": ("LlamaConfig", "LlamaForCausalLM", {}),
  "llama_tied": ("LlamaConfig", "LlamaForCausalLM", {"tie_word_embeddings": True}),
  "llama3_rope_bias": (
    "LlamaConfig",
    "LlamaForCausalLM",
    {
      "attention_bias": True,
      "rope_parameters": {
        "rope_type": "llama3",
        "rope_theta": 10000.0,
        "factor": 8.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 16,
      },
    },
  ),
  "qwen2": ("Qwen2Config", "Qwen2ForCausalLM", {}),
  "qwen2_tied": ("Qwen2Config", "Qwen2ForCausalLM", {"tie_word_embeddings": True}),
  "olmo2": ("Olmo2Config", "Olmo2ForCausalLM", {}),
}

BASE = dict(
  vocab_size=96,
  hidden_size=64,
  intermediate_size=112,
  num_hidden_layers=2,
  num_attention_heads=4,
  num_key_value_heads=2,
  max_position_embeddings=128,
  bos_token_id=1,
  eos_token_id=2,
  pad_token_id=0,
)


def make_hf_model(variant: str, seed: int = 0) -> torch.nn.Module:
  """A float32 model whose every weight (norms and biases included) is random, not at its init value."""
  config_cls, model_cls, overrides = VARIANTS[variant]
  config = getattr(transformers, config_cls)(**{**BASE, **overrides})
  torch.manual_seed(seed)
  model = getattr(transformers, model_cls)(config).float().eval()
  with torch.no_grad():
    for name, p in model.named_parameters():
      if name.endswith("norm.weight"):
        p.copy_(1.0 + 0.2 * torch.randn_like(p))
      else:
        p.copy_(0.08 * torch.randn_like(p))
  return model


def save_hf_model(variant: str, directory: str, seed: int = 0) -> torch.nn.Module:
  model = make_hf_model(variant, seed)
  model.save_pretrained(directory)
  return model


def padded_batch(lengths: list[int], total: int, vocab: int, left: bool, seed: int = 0):
  """Token ids and a 0/1 mask, padded on the left or the right to `total`."""
  rng = np.random.default_rng(seed)
  tokens = np.zeros((len(lengths), total), np.int32)
  mask = np.zeros((len(lengths), total), np.int32)
  for row, n in enumerate(lengths):
    cols = slice(total - n, total) if left else slice(0, n)
    tokens[row, cols] = rng.integers(3, vocab, size=n)
    mask[row, cols] = 1
  return tokens, mask


def default_positions(mask: np.ndarray) -> np.ndarray:
  """HF generate's positions for a padded batch: the count of real tokens before each token."""
  return np.maximum(np.cumsum(mask, axis=1) - 1, 0)


def torch_logits(
  model: torch.nn.Module, tokens: np.ndarray, mask: np.ndarray, positions: np.ndarray | None = None
) -> np.ndarray:
  """Reference logits; positions default to `default_positions(mask)`."""
  positions = default_positions(mask) if positions is None else positions
  with torch.no_grad():
    out = model(
      input_ids=torch.as_tensor(tokens, dtype=torch.long),
      attention_mask=torch.as_tensor(mask, dtype=torch.long),
      position_ids=torch.as_tensor(positions, dtype=torch.long),
    )
  return out.logits.float().numpy()


def save_tiny_tokenizer(directory: str, vocab_size: int = BASE["vocab_size"]) -> transformers.PreTrainedTokenizerFast:
  """A word-level tokenizer over `w3 .. w{vocab_size-1}` with pad/bos/eos at ids 0/1/2, built offline."""
  from tokenizers import Tokenizer, models, pre_tokenizers

  vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, **{f"w{i}": i for i in range(3, vocab_size)}}
  core = Tokenizer(models.WordLevel(vocab, unk_token="<pad>"))
  core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
  tokenizer = transformers.PreTrainedTokenizerFast(
    tokenizer_object=core, pad_token="<pad>", bos_token="<s>", eos_token="</s>", unk_token="<pad>"
  )
  tokenizer.save_pretrained(directory)
  return tokenizer
