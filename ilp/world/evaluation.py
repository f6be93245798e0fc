"""A finished world run evaluated against its planted ground truth (`scripts/evaluate_world.py`).

Per planted group, the unlearned rate from the detection stage; for left-side forgetting (IV),
the share learned (exact match) at the end of phase 1 and at the end of phase 2, and, when the
run kept its phase-1 model (`sft.checkpoint.phase_models`), the same under sampling (detection's
samples and verifier); for rare patterns (V), exact match after each phase-2 epoch; and whether
the targets of the world hold (issue 22, after convergence: control <= 5%, each planted cause
>= 25% and >= 3x control; a cause's rate is over its groups, the majority copies of an
inconsistent set, `duplicate`, left out: their answer is the one a converged model gives).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import numpy as np
import pandas as pd

from ilp.data import examples
from ilp.detection import columns as col
from ilp.detection import probes
from ilp.layout import Layout
from ilp.report import plots
from ilp.scoring import dynamics_log
from ilp.world.config import CAUSES, GROUPS
from ilp.world.files import load_ground_truth

LEARNED_PASS = 0.8  # sampled pass rate at which a planted forgetting example counts as learned
LOST_PASS = 0.2  # ... and below which, at the end, it counts as lost


def targets(groups: dict) -> dict:
  """The world's targets from the per-group rates: control at most 5%, each cause (its groups less
  `duplicate`, weighted by their examples) at least 25% and 3x control."""
  control = groups["control"]["unlearned_rate"]
  out = {"control_at_most_5pct": control <= 0.05}
  for cause in sorted({c for c in CAUSES.values() if c}):
    members = [g for g in GROUPS if CAUSES[g] == cause and g != "duplicate" and g in groups]
    n = sum(groups[g]["examples"] for g in members)
    if n:
      rate = sum(groups[g]["unlearned_rate"] * groups[g]["examples"] for g in members) / n
      out[f"{cause}_at_least_25pct_and_3x_control"] = bool(rate >= 0.25 and rate >= 3 * control)
      out[f"{cause}_rate"] = rate
  return out


def group_rates(table: pd.DataFrame) -> dict:
  """Per protocol that detection ran (its unlearned column in `table`, joined with the ground
  truth): each planted group's examples and unlearned rate, and the targets."""
  protocols = {}
  for protocol in col.PROTOCOLS:
    if col.of(protocol, col.UNLEARNED) not in table:
      continue
    rates = table.groupby("group")[col.of(protocol, col.UNLEARNED)].agg(["size", "mean"])
    groups = {
      g: {"examples": int(rates.loc[g, "size"]), "unlearned_rate": float(rates.loc[g, "mean"])}
      for g in GROUPS
      if g in rates.index
    }
    protocols[protocol] = {"groups": groups, "targets": targets(groups)}
  return protocols


def sampled_pass_rates(layout: Layout, config: Any, model_dir: str, ids: pd.Series) -> np.ndarray:
  """The pass rate (detection's samples and verifier, one run) of examples `ids` under the model in
  `model_dir`: the per-phase evaluation under sampling, not only greedy exact match. `config` is
  the run's `ilp.config.Config`."""
  frame = examples.read(layout.examples)
  detect = dataclasses.replace(
    config.detect,
    protocol=col.GENERATIVE,
    repeats=1,
    repeat_temperatures=(),
    mc=dataclasses.replace(config.detect.mc, enabled=False),
  )
  rows = probes.probe_model(frame[frame["id"].isin(set(ids))], model_dir, detect, config.data, config.mesh, config.seed)
  return rows.set_index(col.ID)[col.of(col.GENERATIVE, col.PASS_AT_N)].reindex(ids).to_numpy()


def forgetting_under_sampling(layout: Layout, config: Any, truth: pd.DataFrame) -> dict:
  """Share of the forgetting group learned under sampling (pass rate >= LEARNED_PASS) at the end
  of phase 1 and at the end, and learned then lost (below LOST_PASS at the end); empty when the
  run kept no phase-1 model."""
  phase1 = layout.phase_model("sft", 1)
  if not os.path.isdir(phase1):
    return {}
  ids = truth.loc[truth["group"] == "forgetting", "id"].reset_index(drop=True)
  before, after = (sampled_pass_rates(layout, config, d, ids) for d in (phase1, layout.model("sft")))
  return {
    "sampled_learned_end_of_phase1": float((before >= LEARNED_PASS).mean()),
    "sampled_learned_end_of_phase2": float((after >= LEARNED_PASS).mean()),
    "sampled_learned_then_lost": float(((before >= LEARNED_PASS) & (after < LOST_PASS)).mean()),
    "mean_pass_rate_end_of_phase1": float(before.mean()),
    "mean_pass_rate_end_of_phase2": float(after.mean()),
  }


def evaluate(layout: Layout, config: Any) -> dict:
  """The run's evaluation (`config`: its `ilp.config.Config`); draws the per-group figures into
  `layout.world_evaluation_dir`."""
  truth = load_ground_truth(layout.world)
  protocols = group_rates(pd.read_parquet(layout.detection).merge(truth, on=col.ID))
  evals = dynamics_log.rows(dynamics_log.load(layout.dynamics()), dynamics_log.EVAL).merge(truth, on="id")
  phase_ends = evals[evals["phase_end"]].groupby(["group", "train_phase"])["exact_match"].mean()
  phase2 = evals[(evals["train_phase"] == 2) & (evals["group"] == "rare")]
  figures = layout.world_evaluation_dir
  os.makedirs(figures, exist_ok=True)
  for protocol, result in protocols.items():
    plots.bar_chart(
      {g: v["unlearned_rate"] for g, v in result["groups"].items()},
      os.path.join(figures, f"unlearned_by_group_{protocol}.png"),
      f"Unlearned rate per planted group ({protocol})",
      "unlearned (%)",
    )
  plots.learning_curves(
    evals, "group", os.path.join(figures, "curves_by_group.png"), "Learning curves per planted group"
  )
  return {
    "protocols": protocols,
    "forgetting": {
      "learned_end_of_phase1": float(phase_ends.get(("forgetting", 1), float("nan"))),
      "learned_end_of_phase2": float(phase_ends.get(("forgetting", 2), float("nan"))),
      **forgetting_under_sampling(layout, config, truth),
    },
    "rare_exact_match_by_phase2_epoch": {
      int(e): float(v) for e, v in phase2.groupby("epoch")["exact_match"].mean().items()
    },
  }


def summary_text(result: dict, detection_summary: dict) -> str:
  """What the script prints: detection's rates per protocol and phase, the planted-group table,
  forgetting and rare patterns, and the targets."""
  protocols = list(result["protocols"])
  lines = []
  for protocol in protocols:
    s = detection_summary[protocol]
    lines.append(
      f"{protocol}: {100 * s['unlearned_rate']:.1f}% of {detection_summary['examples']} training examples "
      f"unlearned; kappa between sampling runs {s['kappa_between_runs']}; by phase "
      + ", ".join(f"{k} {100 * v:.1f}%" for k, v in s["unlearned_rate_by_phase"].items())
    )
  if "kappa_between_protocols" in detection_summary:
    lines.append(f"kappa between the protocols' labels: {detection_summary['kappa_between_protocols']:.2f}")
  lines.append(f"{'planted group':<14} {'examples':>8} " + " ".join(f"{p:>16}" for p in protocols))
  for group, row in result["protocols"][protocols[0]]["groups"].items():
    lines.append(
      f"{group:<14} {row['examples']:>8} "
      + " ".join(f"{100 * result['protocols'][p]['groups'][group]['unlearned_rate']:>15.1f}%" for p in protocols)
    )
  f = result["forgetting"]
  lines.append(
    f"IV: learned (greedy exact match) at the end of phase 1 {100 * f['learned_end_of_phase1']:.1f}%, "
    f"at the end of phase 2 {100 * f['learned_end_of_phase2']:.1f}%"
  )
  if "sampled_learned_end_of_phase1" in f:
    lines.append(
      f"IV under sampling (pass rate >= {LEARNED_PASS}): learned at the end of phase 1 "
      f"{100 * f['sampled_learned_end_of_phase1']:.1f}%, at the end of phase 2 "
      f"{100 * f['sampled_learned_end_of_phase2']:.1f}%; learned then lost (< {LOST_PASS} at the end) "
      f"{100 * f['sampled_learned_then_lost']:.1f}%"
    )
  lines.append(
    "V: exact match after phase-2 epochs "
    + ", ".join(f"{e}: {100 * v:.1f}%" for e, v in result["rare_exact_match_by_phase2_epoch"].items())
  )
  for protocol in protocols:
    lines.append(
      f"targets ({protocol}): "
      + ", ".join(
        f"{k}={'yes' if v else 'NO'}" if isinstance(v, bool) else f"{k}={100 * v:.1f}%"
        for k, v in result["protocols"][protocol]["targets"].items()
      )
    )
  return "\n".join(lines)


def markdown(result: dict) -> str:
  """`evaluation.md`: the planted-group table and the figures `evaluate` drew."""
  protocols = list(result["protocols"])
  lines = [
    "# ILP world: evaluation against the planted causes",
    "",
    "| planted group | examples | " + " | ".join(f"unlearned ({p})" for p in protocols) + " |",
    "|---|---|" + "---|" * len(protocols),
  ]
  lines += [
    f"| {g} | {r['examples']} | "
    + " | ".join(f"{100 * result['protocols'][p]['groups'][g]['unlearned_rate']:.1f}%" for p in protocols)
    + " |"
    for g, r in result["protocols"][protocols[0]]["groups"].items()
  ]
  lines += [""] + [f"![groups](unlearned_by_group_{p}.png)" for p in protocols]
  lines += ["", "![curves](curves_by_group.png)", ""]
  return "\n".join(lines)
