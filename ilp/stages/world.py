"""Stage `world`: generates the synthetic ILP world into `workdir/world/` (see ilp.data.world)."""
from __future__ import annotations

import logging
import os

import ml_collections

from ilp.data import world

log = logging.getLogger(__name__)
NAME = "world"


def outputs(workdir: str) -> list[str]:
  return [os.path.join(workdir, NAME)]


def validate(config: ml_collections.ConfigDict) -> None:
  world.WorldConfig.from_dict(config.world.to_dict())


def run(config: ml_collections.ConfigDict, workdir: str) -> None:
  summary = world.write(world.WorldConfig.from_dict(config.world.to_dict()), os.path.join(workdir, NAME))
  log.info("world: %d people, %d pre-training documents, %d SFT examples %s", summary["people"],
           summary["pretrain_documents"], summary["sft_examples"], summary["groups"])
