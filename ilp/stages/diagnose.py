"""Stage `diagnose`: why was each unlearned example not learned? (`ilp.diagnosis.diagnose`)

Reads the detection table, the examples table and the dynamics log (and the pre-training corpus
for corpus evidence), and writes `diagnosis/`: `attribution.parquet` (one row per example:
signals, cause, evidence scores, the rules that hold and the conditions that fired),
`summary.json`, `diagnosis.md` with its figures, and `tensorboard/` (text and image summaries, and
each cause's learning curves as scalars).
The report stage embeds the same section.
"""

from __future__ import annotations

import logging
import os

import pandas as pd

from ilp import fileio
from ilp.config import Config
from ilp.data import examples
from ilp.diagnosis import diagnose
from ilp.layout import Layout
from ilp.report import diagnosis as section
from ilp.scoring import dynamics_log
from ilp.train.metrics import MetricWriter

log = logging.getLogger(__name__)


def outputs(layout: Layout) -> list[str]:
  return [layout.diagnosis]


def run(config: Config, layout: Layout) -> None:
  log_frame = dynamics_log.load(layout.dynamics())
  table = diagnose.diagnose(
    pd.read_parquet(layout.detection),
    examples.read(layout.examples),
    log_frame,
    config.diagnose,
    diagnose.corpus_documents(config.diagnose, config.data),
    config.detect.answers,
  )
  summary = diagnose.summarize(table, config.diagnose.protocol)
  with fileio.atomic_directory(layout.diagnosis) as out:
    inside = lambda path: os.path.join(out, os.path.relpath(path, layout.diagnosis))
    table.to_parquet(inside(layout.attribution), index=False)
    fileio.write_json_atomic(inside(layout.diagnosis_summary), summary)
    section.draw(table, log_frame, out)
    text = section.markdown(table, summary, "", config.diagnose.typical_examples)
    fileio.write_text_atomic(os.path.join(out, "diagnosis.md"), text)
    writer = MetricWriter(os.path.join(out, "tensorboard"))
    writer.scalars(
      0, {f"diagnose/share_of_unlearned/{c}": v["share_of_unlearned"] for c, v in summary["by_cause"].items()}
    )
    for step, values in section.cause_curves(table, log_frame).items():
      writer.scalars(step, values)
    writer.text(0, "diagnose/report", text)
    for name, file in section.FIGURES.items():
      writer.image(0, f"diagnose/{name}", os.path.join(out, file))
    writer.close()
  log.info(
    "diagnose: %d unlearned: %s",
    summary["unlearned"],
    ", ".join(f"{c} {v['count']}" for c, v in summary["by_cause"].items()),
  )
