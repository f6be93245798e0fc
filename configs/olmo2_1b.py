"""OLMo-2-1B class (OLMo2 family, q/k norms, post-sublayer norms): SFT from the pretrained base
in a local HF directory, probes of that base, the instruct model as a reference; see configs/real_model.py."""

from configs import real_model


def get_config():
  return real_model.get_config("/models/OLMo-2-0425-1B", instruct_dir="/models/OLMo-2-0425-1B-Instruct")
