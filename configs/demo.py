"""The default demo: a small Llama-family model on all local devices.

Until the synthetic ILP world lands (issue 5) the demo builds the base model and checks it.
"""
from configs import base


def get_config():
  c = base.get_config()
  c.model.update(family="llama", vocab_size=512, hidden_size=128, intermediate_size=352, num_layers=4,
                 num_heads=4, num_kv_heads=2, head_dim=32)
  return c
