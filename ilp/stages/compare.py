"""Stage `compare`: every finished arm against the baseline and, at equal compute, each mitigation
against its "more epochs" control (`ilp.interventions.compare`, `ilp.interventions.equal_compute`).
Writes `compare/`: `comparison.parquet` (per arm, reference run and group), `summary.json` (per
arm, with every run's training compute and capability check) and `comparison.md` (an empty
`compare/` while no arm has finished). It is redone whenever the arms stage's index changes (an arm
added, finished or redone), recomputed in seconds from the runs' tables."""

from __future__ import annotations

import json
import logging
import os

import pandas as pd

from ilp import fileio
from ilp.config import Config
from ilp.detection import columns as col
from ilp.interventions import arms, compare, equal_compute
from ilp.layout import Layout
from ilp.report import comparison

log = logging.getLogger(__name__)


def _capability(layout: Layout) -> dict:
  if not os.path.exists(layout.capability):
    return {}
  with open(layout.capability) as f:
    return json.load(f)


def outputs(layout: Layout) -> list[str]:
  return [layout.compare]


def run(config: Config, layout: Layout) -> None:
  finished = [a for a in config.interventions.arms if os.path.exists(layout.arm(a.name).attribution)]
  if not finished:
    log.info("compare: no finished arm")
    os.makedirs(layout.compare, exist_ok=True)
    return
  base = pd.read_parquet(layout.attribution, columns=list(compare.COLUMNS) + [col.CAUSE])
  tables = {a.name: pd.read_parquet(layout.arm(a.name).attribution, columns=list(compare.COLUMNS)) for a in finished}
  targets = {a.name: arms.targets(a) for a in finished}
  frame, summary = compare.comparison(base, tables, targets, config.interventions.bootstrap_samples, config.seed)
  frames = [frame.assign(reference="baseline")]
  plans = {a.name: p for a in finished if (p := equal_compute.plan(config, layout, a)) is not None}
  controls = sorted({p.name for p in plans.values() if p.arm is not None})
  runs = {"baseline": layout, **{name: layout.arm(name) for name in [*tables, *controls]}}
  stages = lambda name: equal_compute.BASELINE_STAGES if name == "baseline" else equal_compute.ARM_STAGES
  compute = {name: equal_compute.compute(run, stages(name)) for name, run in runs.items()}
  compute = equal_compute.totals(compute, finished)
  capability = {name: _capability(run) for name, run in runs.items()}
  for a in finished:
    summary[a.name].update(
      intervention=a.intervention, capability=capability[a.name], compute=compute[a.name], equal_compute=None
    )
    if a.name in plans:
      plan = plans[a.name]
      against, summary[a.name]["equal_compute"] = equal_compute.against_control(
        layout,
        plan,
        compute[plan.name],
        base,
        a.name,
        tables[a.name],
        targets[a.name],
        config.interventions.bootstrap_samples,
        config.seed,
      )
      frames += [] if against is None else [against]
  at_equal = {
    name: s["equal_compute"]["comparison"]
    for name, s in summary.items()
    if (s["equal_compute"] or {}).get("comparison")
  }
  skipped = [a.name for a in config.interventions.arms if arms.idle(a, base)]
  result = {
    "label": config.diagnose.protocol,
    "baseline_capability": capability["baseline"],
    "arms": summary,
    "skipped": {name: "the baseline attributed no example to its causes" for name in skipped},
    "response_matrix": compare.response_matrix(summary),
    "compute": compute,
    "equal_compute": {
      "enabled": config.interventions.equal_compute,
      "rounding": config.interventions.equal_compute_rounding,
      "controls": {name: {"capability": capability[name]} for name in controls},
    },
    "response_matrix_equal_compute": compare.response_matrix(at_equal),
  }
  table = pd.concat(frames, ignore_index=True)
  fileio.write_parquet_atomic(table[["arm", "reference"] + compare.RATE_COLUMNS], layout.comparison)
  fileio.write_json_atomic(layout.compare_summary, result)
  fileio.write_text_atomic(layout.compare_report, comparison.markdown(result, capability))
  for name, s in summary.items():
    rates = (100 * s["unlearned"]["baseline_rate"], 100 * s["unlearned"]["arm_rate"])
    log.info("compare %s: unlearned %.1f%% -> %.1f%%, DiD %s", name, *rates, s["difference_in_differences"]["did"])
