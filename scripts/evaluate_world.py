"""Evaluates a finished ILP-world run against its planted ground truth (the only reader of it).

Prints the unlearned rate per data set and phase (from the detection summary) and per planted
group, and writes `<workdir>/world_eval.json` and `<workdir>/evaluation/` (Markdown + plots):
per planted group, the unlearned rate from the
detection stage; for left-side forgetting (IV), the share learned (exact match) at the end of
phase 1 and at the end of phase 2, and, when the run kept its phase-1 model
(`sft.checkpoint.phase_models`), the same under sampling (detection's samples and verifier); for rare patterns (V), exact match after each phase-2 epoch;
and whether the targets of the world hold (issue 22, after convergence: control <= 5%, each
planted cause >= 25% and >= 3x control; a cause's rate is over its groups, the majority copies of
an inconsistent set, `duplicate`, left out: their answer is the one a converged model gives).

  python scripts/evaluate_world.py --workdir=runs/world
"""
from __future__ import annotations

import dataclasses
import json
import os

import numpy as np
import pandas as pd
from absl import app, flags

from ilp import config as config_lib
from ilp import fileio
from ilp.data import examples, world
from ilp.detection import columns as col
from ilp.detection import probes
from ilp.layout import Layout
from ilp.report import plots
from ilp.scoring import dynamics_log

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Work directory of a finished world run.")
flags.mark_flag_as_required("workdir")


def _targets(groups: dict) -> dict:
  control = groups["control"]["unlearned_rate"]
  out = {"control_at_most_5pct": control <= 0.05}
  for cause in sorted({c for c in world.CAUSES.values() if c}):
    members = [g for g in world.GROUPS if world.CAUSES[g] == cause and g != "duplicate" and g in groups]
    n = sum(groups[g]["examples"] for g in members)
    if n:
      rate = sum(groups[g]["unlearned_rate"] * groups[g]["examples"] for g in members) / n
      out[f"{cause}_at_least_25pct_and_3x_control"] = bool(rate >= 0.25 and rate >= 3 * control)
      out[f"{cause}_rate"] = rate
  return out


LEARNED_PASS = 0.8   # sampled pass rate at which a planted forgetting example counts as learned


def sampled_pass_rates(layout: Layout, model_dir: str, ids: pd.Series) -> np.ndarray:
  """The pass rate (detection's samples and verifier, one run) of examples `ids` under the model in
  `model_dir`: the per-phase evaluation under sampling, not only greedy exact match."""
  with open(layout.config) as f:
    config = config_lib.load(json.load(f))
  frame = examples.read(layout.examples)
  detect = dataclasses.replace(config.detect, protocol=col.GENERATIVE, repeats=1, repeat_temperatures=(),
                               mc=dataclasses.replace(config.detect.mc, enabled=False))
  rows = probes.probe_model(frame[frame["id"].isin(set(ids))], model_dir, detect, config.data, config.mesh, config.seed)
  return rows.set_index(col.ID)[col.of(col.GENERATIVE, col.PASS_AT_N)].reindex(ids).to_numpy()


def forgetting_under_sampling(layout: Layout, truth: pd.DataFrame) -> dict:
  """Share of the forgetting group learned under sampling (pass rate >= LEARNED_PASS) at the end
  of phase 1 and at the end, and learned then lost (below the detection threshold at the end)."""
  phase1 = layout.phase_model("sft", 1)
  if not os.path.isdir(phase1):
    return {}
  ids = truth.loc[truth["group"] == "forgetting", "id"].reset_index(drop=True)
  before, after = (sampled_pass_rates(layout, d, ids) for d in (phase1, layout.model("sft")))
  return {"sampled_learned_end_of_phase1": float((before >= LEARNED_PASS).mean()),
          "sampled_learned_end_of_phase2": float((after >= LEARNED_PASS).mean()),
          "sampled_learned_then_lost": float(((before >= LEARNED_PASS) & (after < 0.2)).mean()),
          "mean_pass_rate_end_of_phase1": float(before.mean()), "mean_pass_rate_end_of_phase2": float(after.mean())}


def evaluate(layout: Layout) -> dict:
  """Per protocol that detection ran: the unlearned rate per planted group and the world's targets."""
  truth = world.load_ground_truth(layout.world)
  table = pd.read_parquet(layout.detection).merge(truth, on=col.ID)
  protocols = {}
  for protocol in col.PROTOCOLS:
    if col.of(protocol, col.UNLEARNED) not in table:
      continue
    rates = table.groupby("group")[col.of(protocol, col.UNLEARNED)].agg(["size", "mean"])
    groups = {g: {"examples": int(rates.loc[g, "size"]), "unlearned_rate": float(rates.loc[g, "mean"])}
              for g in world.GROUPS if g in rates.index}
    protocols[protocol] = {"groups": groups, "targets": _targets(groups)}
  frame = dynamics_log.load(layout.dynamics())
  evals = dynamics_log.rows(frame, dynamics_log.EVAL).merge(truth, on="id")
  phase_ends = evals[evals["phase_end"]].groupby(["group", "train_phase"])["exact_match"].mean()
  phase2 = evals[(evals["train_phase"] == 2) & (evals["group"] == "rare")]
  figures = layout.world_evaluation_dir
  os.makedirs(figures, exist_ok=True)
  for protocol, result in protocols.items():
    plots.bar_chart({g: v["unlearned_rate"] for g, v in result["groups"].items()},
                    os.path.join(figures, f"unlearned_by_group_{protocol}.png"),
                    f"Unlearned rate per planted group ({protocol})", "unlearned (%)")
  plots.learning_curves(evals, "group", os.path.join(figures, "curves_by_group.png"),
                        "Learning curves per planted group")
  return {
      "protocols": protocols,
      "forgetting": {"learned_end_of_phase1": float(phase_ends.get(("forgetting", 1), float("nan"))),
                     "learned_end_of_phase2": float(phase_ends.get(("forgetting", 2), float("nan"))),
                     **forgetting_under_sampling(layout, truth)},
      "rare_exact_match_by_phase2_epoch": {int(e): float(v) for e, v in
                                           phase2.groupby("epoch")["exact_match"].mean().items()},
  }


def main(argv: list[str]) -> None:
  del argv
  layout = Layout(FLAGS.workdir)
  result = evaluate(layout)
  with open(layout.detection_summary) as f:
    summary = json.load(f)
  protocols = list(result["protocols"])
  for protocol in protocols:
    s = summary[protocol]
    print(f"{protocol}: {100 * s['unlearned_rate']:.1f}% of {summary['examples']} training examples unlearned; "
          f"kappa between sampling runs {s['kappa_between_runs']}; by phase "
          + ", ".join(f"{k} {100 * v:.1f}%" for k, v in s["unlearned_rate_by_phase"].items()))
  if "kappa_between_protocols" in summary:
    print(f"kappa between the protocols' labels: {summary['kappa_between_protocols']:.2f}")
  print(f"{'planted group':<14} {'examples':>8} " + " ".join(f"{p:>16}" for p in protocols))
  first = result["protocols"][protocols[0]]["groups"]
  for group, row in first.items():
    print(f"{group:<14} {row['examples']:>8} " + " ".join(
        f"{100 * result['protocols'][p]['groups'][group]['unlearned_rate']:>15.1f}%" for p in protocols))
  f = result["forgetting"]
  print(f"IV: learned (greedy exact match) at the end of phase 1 {100 * f['learned_end_of_phase1']:.1f}%, "
        f"at the end of phase 2 {100 * f['learned_end_of_phase2']:.1f}%")
  if "sampled_learned_end_of_phase1" in f:
    print(f"IV under sampling (pass rate >= {LEARNED_PASS}): learned at the end of phase 1 "
          f"{100 * f['sampled_learned_end_of_phase1']:.1f}%, at the end of phase 2 "
          f"{100 * f['sampled_learned_end_of_phase2']:.1f}%; learned then lost (< 0.2 at the end) "
          f"{100 * f['sampled_learned_then_lost']:.1f}%")
  print("V: exact match after phase-2 epochs " +
        ", ".join(f"{e}: {100 * v:.1f}%" for e, v in result["rare_exact_match_by_phase2_epoch"].items()))
  for protocol in protocols:
    print(f"targets ({protocol}): " + ", ".join(
        f"{k}={'yes' if v else 'NO'}" if isinstance(v, bool) else f"{k}={100 * v:.1f}%"
        for k, v in result["protocols"][protocol]["targets"].items()))
  fileio.write_json_atomic(layout.world_evaluation, result)
  lines = ["# ILP world: evaluation against the planted causes", "",
           "| planted group | examples | " + " | ".join(f"unlearned ({p})" for p in protocols) + " |",
           "|---|---|" + "---|" * len(protocols)]
  lines += [f"| {g} | {r['examples']} | " + " | ".join(
      f"{100 * result['protocols'][p]['groups'][g]['unlearned_rate']:.1f}%" for p in protocols) + " |"
            for g, r in first.items()]
  lines += [""] + [f"![groups](unlearned_by_group_{p}.png)" for p in protocols] + ["", "![curves](curves_by_group.png)", ""]
  fileio.write_text_atomic(os.path.join(layout.world_evaluation_dir, "evaluation.md"), "\n".join(lines))


if __name__ == "__main__":
  app.run(main)
