"""The dev set the shuffle (M-IV) and progressive (M-V) arms watch: `data.dev` when given, else a
hash-held-out share of the SFT records (`ilp.data.dev`)."""

from __future__ import annotations

import dataclasses
from typing import Any


def with_dev(config: Any, dev_fraction: float) -> Any:
  """`config` with a dev split: its own `data.dev`, or `dev_fraction` of the SFT records."""
  if config.data.dev or config.data.dev_fraction > 0:
    return config
  return dataclasses.replace(config, data=dataclasses.replace(config.data, dev_fraction=dev_fraction))
