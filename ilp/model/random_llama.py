"""The random Hugging Face Llama the benchmarks compare against (`scripts/bench_sample.py`,
`scripts/bench_detect.py`): one definition, so both measure the same architecture for the same
flags. Needs torch (the test environment), imported on use."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
  import transformers


def save_random_llama(directory: str, d_model: int, layers: int, vocab: int) -> "transformers.LlamaForCausalLM":
  """A float32 LlamaForCausalLM at its random init (seed 0), heads of 64, pad/bos/eos ids 0/1/2,
  saved to `directory` (for our HF loader) and returned in eval mode (for transformers' side)."""
  import torch
  import transformers

  torch.manual_seed(0)
  config = transformers.LlamaConfig(
    vocab_size=vocab,
    hidden_size=d_model,
    intermediate_size=int(d_model * 2.75) // 16 * 16,
    num_hidden_layers=layers,
    num_attention_heads=d_model // 64,
    num_key_value_heads=d_model // 64,
    max_position_embeddings=512,
    bos_token_id=1,
    eos_token_id=2,
    pad_token_id=0,
  )
  model = transformers.LlamaForCausalLM(config).float().eval()
  model.save_pretrained(directory)
  return model
