"""Scores the interventions study on finished ILP-world runs (`configs/interventions.py`): joins
each run's diagnosis with the world's planted ground truth and prints, per arm and seed,

- on the examples the *baseline* attributed to the arm's target cause(s), followed into the arm:
  the unlearned rate before and after, and the relative reduction (95% paired bootstrap interval);
- the same on the other baseline-unlearned examples, and the ratio of the two reductions;
- the planted control group's change in points (ground truth; a mitigation must not damage it);
- whether the issue's expectations hold: target cut >= 40% relative, at least twice the cut on the
  others, control not worse by more than 2 points, M-I below "more epochs" on cause I (the fixed
  more-epochs arm, and the knowledge arm's equal-compute control), and, on a converged baseline,
  ten more epochs cutting the unlearned rate by at most 30% relative (the paper's "barely helps");
- the unlearned rate of every planted group in the baseline and each arm.

Writes `<workdir>/interventions_eval.json` per run.

  python scripts/evaluate_interventions.py --workdirs=runs/iv0,runs/iv1,runs/iv2
"""
from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd
from absl import app, flags

from ilp import config as config_lib
from ilp import fileio
from ilp.data import world
from ilp.detection import columns as col
from ilp.interventions import arms as arms_lib
from ilp.interventions import compare
from ilp.layout import Layout

FLAGS = flags.FLAGS
flags.DEFINE_list("workdirs", None, "finished interventions runs (one per world seed)", required=True)
flags.DEFINE_integer("samples", 2000, "bootstrap resamples")

ARM_UNLEARNED = col.UNLEARNED + compare.ARM
INTERVAL = lambda lo, hi: [None if np.isnan(lo) else float(lo), None if np.isnan(hi) else float(hi)]


def _change(base: np.ndarray, arm: np.ndarray) -> dict:
  """Rates before/after over paired examples, the relative reduction and its bootstrap interval."""
  if not len(base):
    return {"examples": 0}
  b, a = float(base.mean()), float(arm.mean())
  lo, hi = compare.paired_bootstrap(base.astype(float), arm.astype(float), FLAGS.samples, 0)
  reduction = (b - a) / b if b > 0 else float("nan")
  return {"examples": int(len(base)), "baseline": b, "arm": a, "change": a - b, "change_interval": INTERVAL(lo, hi),
          "relative_reduction": None if np.isnan(reduction) else reduction,
          "relative_reduction_interval": INTERVAL(-hi / b, -lo / b) if b > 0 else [None, None]}


def _cause_i(layout: Layout, base: pd.DataFrame, arm: str) -> float | None:
  """The unlearned rate, in run `arm`, of the examples the baseline attributed to I."""
  path = layout.arm(arm).attribution
  if not os.path.exists(path):
    return None
  joined = base[base[col.CAUSE] == "I"].merge(pd.read_parquet(path, columns=[col.ID, col.UNLEARNED]), on=col.ID,
                                              suffixes=("", compare.ARM))
  return float(joined[ARM_UNLEARNED].mean()) if len(joined) else None


def evaluate(layout: Layout) -> dict:
  config = config_lib.load(json.load(open(layout.config)))
  truth = world.load_ground_truth(layout.world)[["id", "group"]]
  base = pd.read_parquet(layout.attribution, columns=[col.ID, col.UNLEARNED, col.CAUSE]).merge(truth, on=col.ID)
  result = {"baseline_unlearned_rate": float(base[col.UNLEARNED].mean()), "arms": {}}
  compared = json.load(open(layout.compare_summary)) if os.path.exists(layout.compare_summary) else {}
  for arm in config.interventions.arms:
    path = layout.arm(arm.name).attribution
    if not os.path.exists(path):
      continue
    joined = base.merge(pd.read_parquet(path, columns=[col.ID, col.UNLEARNED]), on=col.ID, suffixes=("", compare.ARM))
    targets = arms_lib.targets(arm)
    target = joined[col.CAUSE].isin(targets) if targets else joined[col.UNLEARNED]
    others = joined[col.UNLEARNED] & ~target
    pick = lambda sel: _change(joined.loc[sel, col.UNLEARNED].to_numpy(), joined.loc[sel, ARM_UNLEARNED].to_numpy())
    entry = {"intervention": arm.intervention, "targets": list(targets),
             "examples_compared": int(len(joined)), "examples_missing": int(len(base) - len(joined)),
             "target": pick(target), "others": pick(others), "control": pick(joined["group"] == "control"),
             "all": pick(np.ones(len(joined), bool)),
             "cause_I_unlearned": float(joined.loc[joined[col.CAUSE] == "I", ARM_UNLEARNED].mean()),
             "planted_groups": {g: {"baseline": float(d[col.UNLEARNED].mean()), "arm": float(d[ARM_UNLEARNED].mean()),
                                    "examples": int(len(d))} for g, d in joined.groupby("group")}}
    t, o, c = entry["target"], entry["others"], entry["control"]
    if targets and t["examples"] and t["relative_reduction"] is not None:
      other_cut = o.get("relative_reduction") or 0.0
      entry["expectations"] = {"target_cut_40pct": t["relative_reduction"] >= 0.4,
                               "twice_the_others": t["relative_reduction"] >= 2 * max(other_cut, 0.0),
                               "control_within_2_points": c["change"] <= 0.02}
    result["arms"][arm.name] = entry
  by_intervention = {e["intervention"]: name for name, e in result["arms"].items()}
  if "knowledge" in by_intervention and "epochs" in by_intervention:
    knowledge = by_intervention["knowledge"]
    control = ((compared.get("arms", {}).get(knowledge) or {}).get("equal_compute") or {}).get("control")
    result["cause_I_knowledge_vs_more_epochs"] = {
        "knowledge": result["arms"][knowledge]["cause_I_unlearned"],
        "more_epochs": result["arms"][by_intervention["epochs"]]["cause_I_unlearned"],
        "equal_compute_control": control, "at_equal_compute": _cause_i(layout, base, control) if control else None}
  for name, e in result["arms"].items():   # ten more epochs on a converged baseline: the paper's "barely helps"
    settings = next(a.typed_settings() for a in config.interventions.arms if a.name == name)
    if e["intervention"] == "epochs" and getattr(settings, "extra", 0) and e["all"].get("relative_reduction") is not None:
      e["expectations"] = {"cut_at_most_30pct": e["all"]["relative_reduction"] <= 0.3}
  return result


def _pct(x) -> str:
  return "—" if x is None else f"{100 * x:.1f}%"


def main(argv: list[str]) -> None:
  del argv
  results = {}
  for workdir in FLAGS.workdirs:
    layout = Layout(workdir)
    results[workdir] = result = evaluate(layout)
    fileio.write_json_atomic(os.path.join(layout.root, "interventions_eval.json"), result)
    print(f"\n{workdir}: baseline unlearned {_pct(result['baseline_unlearned_rate'])} (generative label)")
    print(f"{'arm':<16} {'target':<7} {'n':>4} {'base→arm':>15} {'rel. cut [95%]':>22} {'others cut':>11} "
          f"{'control Δ':>10} {'all Δ':>8}  expectations")
    for name, e in result["arms"].items():
      t, o, c, a = e["target"], e["others"], e["control"], e["all"]
      lo, hi = t.get("relative_reduction_interval", [None, None])
      print(f"{name:<16} {','.join(e['targets']) or '-':<7} {t['examples']:>4} "
            f"{_pct(t.get('baseline')):>7}→{_pct(t.get('arm')):<7} "
            f"{_pct(t.get('relative_reduction')):>7} [{_pct(lo)}, {_pct(hi)}] "
            f"{_pct(o.get('relative_reduction')):>11} {100 * c['change']:>+9.1f}p {100 * a['change']:>+7.1f}p  "
            + ", ".join(f"{k}={'yes' if v else 'NO'}" for k, v in e.get("expectations", {}).items()))
    if "cause_I_knowledge_vs_more_epochs" in result:
      r = result["cause_I_knowledge_vs_more_epochs"]
      print(f"cause I (baseline-attributed): knowledge arm {_pct(r['knowledge'])} vs more epochs {_pct(r['more_epochs'])}"
            f"; at equal compute ({r['equal_compute_control'] or 'no control'}) {_pct(r['at_equal_compute'])}")
    groups = sorted({g for e in result["arms"].values() for g in e["planted_groups"]})
    print(f"{'planted group':<14}" + "".join(f"{n[:12]:>13}" for n in ["baseline", *result["arms"]]))
    for g in groups:
      first = next(iter(result["arms"].values()))["planted_groups"].get(g, {})
      print(f"{g:<14}{_pct(first.get('baseline')):>13}" +
            "".join(f"{_pct(e['planted_groups'].get(g, {}).get('arm')):>13}" for e in result["arms"].values()))


if __name__ == "__main__":
  app.run(main)
