"""The dev split that resampling and early stopping watch, held out from training.

Given as its own records (`data.dev`), or, failing that, held out of the SFT records by a stable
rule: an example is dev when the first 8 bytes of sha256(id), read as a fraction of 2^64, fall
below `data.dev_fraction`. The rule depends on the id alone, so the split is the same in every
run and arm, whatever the order or the other records, and a record never moves between splits
when data is added.
"""

from __future__ import annotations

import hashlib
from typing import Sequence

import numpy as np


def held_out(ids: Sequence[str], fraction: float) -> np.ndarray:
  """Which ids fall in the dev split under the hash rule."""
  scale = float(2**64)
  return np.asarray(
    [int.from_bytes(hashlib.sha256(i.encode()).digest()[:8], "big") / scale < fraction for i in ids], bool
  )
