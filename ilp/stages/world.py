"""Stage `world`: generates the synthetic ILP world into `world/` (see `ilp.world`)."""

from __future__ import annotations

import logging

from ilp.config import Config
from ilp.layout import Layout
from ilp.world import files

log = logging.getLogger(__name__)


def outputs(layout: Layout) -> list[str]:
  return [layout.world]


def run(config: Config, layout: Layout) -> None:
  summary = files.write(config.world, layout.world)
  log.info(
    "world: %d people, %d pre-training documents, %d SFT examples %s",
    summary["people"],
    summary["pretrain_documents"],
    summary["sft_examples"],
    summary["groups"],
  )
