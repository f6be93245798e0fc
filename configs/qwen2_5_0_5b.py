"""Qwen2.5-0.5B class (Qwen2 family, tied embeddings, q/k/v biases): SFT from the pretrained base
in a local HF directory, probes of that base, the instruct model as a reference; see configs/real_model.py."""

from configs import real_model


def get_config():
  return real_model.get_config("/models/Qwen2.5-0.5B", instruct_dir="/models/Qwen2.5-0.5B-Instruct")
