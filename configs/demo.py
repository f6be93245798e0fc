"""The default demo: the ILP world study (configs/world.py) at its default size."""

from configs import world


def get_config():
  return world.get_config()
