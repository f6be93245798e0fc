"""The smallest useful model: for tests and quick checks of the whole machinery."""

from configs import base


def get_config():
  c = base.get_config()
  c.model.update(
    vocab_size=128, hidden_size=32, intermediate_size=64, num_layers=2, num_heads=4, num_kv_heads=2, head_dim=8
  )
  return c
