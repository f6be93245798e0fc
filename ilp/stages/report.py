"""Stage `report`: a Markdown report of the run with tables and plots, `report/` (`ilp.report.run`).

It reads what earlier stages wrote (detection table and summary, dynamics log, SFT's convergence
verdict when the probed model is this run's SFT, and the diagnosis when that stage ran, whose
section and figures it embeds, and the arms' comparison when there is one) and never the world's
ground truth; `scripts/evaluate_world.py` adds the planted-group view separately.
"""

from __future__ import annotations

import json
import os

import pandas as pd

from ilp import fileio
from ilp.config import Config
from ilp.data import examples
from ilp.detection import columns as col
from ilp.layout import Layout
from ilp.online import control
from ilp.report import diagnosis, online
from ilp.report import run as report
from ilp.scoring import dynamics_log


def outputs(layout: Layout) -> list[str]:
  return [layout.report]


def _flags(run: Layout, protocol: str, title: str) -> str | None:
  """The online control's flags section of `run` (None: no SFT with the control, or no detection yet)."""
  if not (os.path.exists(run.summary("sft")) and os.path.exists(run.detection)):
    return None
  with open(run.summary("sft")) as f:
    found = control.flagged(json.load(f))
  if found is None:
    return None
  detection = pd.read_parquet(run.detection).set_index(col.ID)
  causes = pd.read_parquet(run.attribution).set_index(col.ID)[col.CAUSE] if os.path.exists(run.attribution) else None
  ids = examples.read(run.examples)["id"].to_numpy()
  return online.markdown(found, ids, detection[col.of(protocol, col.UNLEARNED)], causes, title)


def run(config: Config, layout: Layout) -> None:
  detection = pd.read_parquet(layout.detection)
  with open(layout.detection_summary) as f:
    summary = json.load(f)
  evals = dynamics_log.load(layout.dynamics())
  convergence = None
  if config.detect.model == "sft" and os.path.exists(layout.summary("sft")):
    with open(layout.summary("sft")) as f:
      record = json.load(f).get("convergence")
    convergence = record if record and record.get("phases") else None  # None: SFT from before it was judged
  section = None
  if os.path.exists(layout.diagnosis):
    with open(layout.diagnosis_summary) as f:
      section = diagnosis.markdown(
        pd.read_parquet(layout.attribution),
        json.load(f),
        os.path.relpath(layout.diagnosis, layout.report) + "/",
        config.diagnose.typical_examples,
      )
  protocol = config.diagnose.protocol
  protocol = protocol if protocol in config.detect.protocols else config.detect.protocols[0]
  arms = [a.name for a in config.interventions.arms if a.intervention == "online"]
  flagged = [(layout, "Flagged during SFT by the early warning")]
  for run, title in flagged + [(layout.arm(name), f"Arm {name}: flagged during SFT") for name in arms]:
    flags = _flags(run, protocol, title)
    section = section if flags is None else (section or "") + "\n" + flags
  if os.path.exists(layout.compare_report):
    with open(layout.compare_report) as f:
      section = (section or "") + "\n" + f.read().replace("# Interventions", "## Interventions", 1)
  with fileio.atomic_directory(layout.report) as out:
    report.draw(
      detection,
      dynamics_log.rows(evals, dynamics_log.EVAL),
      protocol,
      out,
      convergence,
    )
    fileio.write_text_atomic(
      os.path.join(out, "report.md"), report.markdown(detection, summary, config.detect, section, convergence)
    )
