"""Llama-3.2-1B class (Llama family, Llama-3 RoPE scaling, tied embeddings): SFT from the pretrained base
in a local HF directory, probes of that base, the instruct model as a reference; see configs/real_model.py."""

from configs import real_model


def get_config():
  return real_model.get_config("/models/Llama-3.2-1B", instruct_dir="/models/Llama-3.2-1B-Instruct")
