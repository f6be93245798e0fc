"""Stage `compare`: every finished arm against the baseline (`ilp.interventions.compare`).
Writes `compare/`: `comparison.parquet` (per arm and group), `summary.json` (per arm, with the
runs' capability checks) and `comparison.md`. It always runs: it is recomputed in seconds from
the runs' tables, so arms added or finished later count."""
from __future__ import annotations

import json
import logging
import os

import pandas as pd

from ilp import fileio
from ilp.config import Config
from ilp.interventions import arms, compare
from ilp.layout import Layout
from ilp.report import comparison

log = logging.getLogger(__name__)
COLUMNS = ["id", "dataset", "phase", "unlearned", "greedy_correct", "greedy_text", "reference", "last_visit_position"]


def _capability(layout: Layout) -> dict:
  if not os.path.exists(layout.capability):
    return {}
  with open(layout.capability) as f:
    return json.load(f)


def run(config: Config, layout: Layout) -> None:
  finished = [a for a in config.interventions.arms if os.path.exists(layout.arm(a.name).attribution)]
  if not finished:
    log.info("compare: no finished arm")
    return
  base = pd.read_parquet(layout.attribution, columns=COLUMNS + ["cause"])
  tables = {a.name: pd.read_parquet(layout.arm(a.name).attribution, columns=COLUMNS) for a in finished}
  frame, summary = compare.comparison(base, tables, {a.name: arms.targets(a) for a in finished},
                                      config.interventions.bootstrap_samples, config.seed)
  capability = {"baseline": _capability(layout), **{a.name: _capability(layout.arm(a.name)) for a in finished}}
  for a in finished:
    summary[a.name].update(intervention=a.intervention, capability=capability[a.name])
  fileio.write_parquet_atomic(frame, layout.comparison)
  fileio.write_json_atomic(layout.compare_summary, {"label": config.diagnose.protocol,
                                                    "baseline_capability": capability["baseline"], "arms": summary,
                                                    "response_matrix": compare.response_matrix(summary)})
  fileio.write_text_atomic(layout.compare_report, comparison.markdown(summary, capability, config.diagnose.protocol,
                                                                           compare.response_matrix(summary)))
  for name, s in summary.items():
    log.info("compare %s: unlearned %.1f%% -> %.1f%%, DiD %s", name, 100 * s["unlearned"]["baseline_rate"],
             100 * s["unlearned"]["arm_rate"], s["difference_in_differences"]["did"])
