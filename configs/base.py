"""Defaults shared by every run: the typed config's defaults (`ilp.config.Config` and the section
dataclasses it composes; each field is documented there) as an ml_collections ConfigDict. Other
config files start from `get_config()` here and override.

Launch with `python launch.py --config=configs/<file>.py --workdir=<dir> [--config.a.b=value ...]`.
"""

import ml_collections

from ilp import config


def get_config() -> ml_collections.ConfigDict:
  return config.config_dict()
