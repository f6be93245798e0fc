"""Llama-3.2-1B class (Llama family, Llama-3 RoPE scaling, tied embeddings), from a local HF directory; see configs/real_model.py."""
from configs import real_model


def get_config():
  return real_model.get_config("/models/Llama-3.2-1B-Instruct")
