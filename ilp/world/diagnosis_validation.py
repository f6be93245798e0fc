"""The diagnosis of a finished world run scored against the world's planted causes
(`scripts/validate_diagnosis.py`): `diagnosis/attribution.parquet` joined with the ground truth,
the only place the two meet.

- detection: recall of planted-unlearnable examples that the final model in fact fails (greedy
  answer wrong and not reproduced under teacher forcing), the unlearned rate of each planted
  cause, and the false-positive rate on control examples;
- attribution, over unlearned examples: the confusion matrix (planted cause x attributed cause;
  "none" = a control example), per-cause precision / recall / F1 and macro-F1 over the five
  causes, and the unattributed share. Ground truth exists only for the planted examples, so the
  headline precision is over them; a control example that fails has no planted cause (it may
  still have a real one, e.g. a stage-1 fact forgotten in stage 2), and the stricter precision
  that counts every attributed control example as an error is reported beside it;
- whether the targets hold: macro-F1 >= 0.85 (>= 0.75 on the free-form world), every cause's
  recall and precision >= 0.7, control false positives <= 5%; the unattributed share is reported.

A diagnosis can be recomputed (signals and rules take seconds) for another protocol's label than
the stage explained, with less evidence than the run had (`EVIDENCE`: without the pre-training
corpus and/or without `meta.prerequisites`, what a user with plain {prompt, response} data has),
under another label (`LABELS`: the sampled one, the paper's repeat rule, or the expected-pass
one), or with other diagnosis settings (`ilp.world.sensitivity`).
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import numpy as np
import pandas as pd

from ilp.data import examples
from ilp.detection import columns as col
from ilp.diagnosis import diagnose
from ilp.diagnosis.attribution import CAUSES, UNATTRIBUTED
from ilp.layout import Layout
from ilp.scoring import dynamics_log
from ilp.world.files import load_ground_truth

EVIDENCE = ("as_run", "no_corpus", "no_metadata", "plain")
LABELS = ("as_run", "sampled", "expected")
NONE = "none"  # the planted cause of a control example
TARGETS = {"macro_f1": 0.85, "macro_f1_free_form": 0.75, "recall": 0.7, "precision": 0.7, "control_fp": 0.05}


def with_evidence(detection: pd.DataFrame, protocol: str, label: str, evidence: str, threshold: float) -> pd.DataFrame:
  """The detection table as a diagnosis under `label` and `evidence` sees it: `protocol`'s
  unlearned label replaced by the sampled or the expected-pass one (below `threshold`), or kept
  (`as_run`), and without the prerequisite columns when the evidence has no metadata."""
  unlearned = col.of(protocol, col.UNLEARNED)
  if label == "expected":
    detection = detection.assign(**{unlearned: detection[col.of(protocol, col.EXPECTED_PASS)] < threshold})
  elif label == "sampled":
    detection = detection.assign(**{unlearned: detection[col.of(protocol, col.UNLEARNED_SAMPLED)]})
  if evidence in ("no_metadata", "plain"):
    detection = detection.drop(columns=[col.PREREQUISITES, col.PREREQUISITES_KNOWN], errors="ignore")
  return detection


def corpus_documents(settings: diagnose.DiagnoseConfig, data: Any, evidence: str) -> Any:
  """The pre-training evidence the diagnosis gets: none when `evidence` leaves the corpus out."""
  return None if evidence in ("no_corpus", "plain") else diagnose.corpus_documents(settings, data)


def attribution(
  layout: Layout,
  config: Any,
  protocol: str,
  evidence: str = "as_run",
  label: str = "as_run",
  diagnose_config: diagnose.DiagnoseConfig | None = None,
) -> pd.DataFrame | None:
  """The diagnosis of `protocol`'s label: the stage's, or recomputed with the run's settings
  (`config`, its `ilp.config.Config`; None when detection did not run that protocol), less the
  corpus and/or `meta.prerequisites` as `evidence` says, with the `sampled` or `expected` label
  as `label` says, or with `diagnose_config` instead of the run's."""
  if (
    config.diagnose.protocol == protocol
    and evidence == "as_run"
    and label in ("as_run", config.detect.label)
    and diagnose_config is None
  ):
    return pd.read_parquet(layout.attribution)
  if protocol not in config.detect.protocols:
    return None
  settings = dataclasses.replace(diagnose_config or config.diagnose, protocol=protocol)
  detection = with_evidence(pd.read_parquet(layout.detection), protocol, label, evidence, config.detect.threshold)
  return diagnose.diagnose(
    detection,
    examples.read(layout.examples),
    dynamics_log.load(layout.dynamics()),
    settings,
    corpus_documents(settings, config.data, evidence),
    config.detect.answers,
  )


def _f1(precision: float, recall: float) -> float:
  return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


def per_cause(confusion: pd.DataFrame) -> dict:
  """Precision, recall and F1 per cause from the confusion matrix (rows planted, columns
  attributed), over the planted examples and, stricter, counting attributed control examples as
  errors. A cause with no unlearned planted example and no attribution has no scores (None): it is
  left out of the macro average."""
  out = {}
  for c in CAUSES:
    hit = int(confusion.loc[c, c])
    recall = hit / max(int(confusion.loc[c].sum()), 1)
    precision = hit / max(int(confusion.loc[list(CAUSES), c].sum()), 1)
    strict = hit / max(int(confusion[c].sum()), 1)
    out[c] = {
      "planted_unlearned": int(confusion.loc[c].sum()),
      "attributed": int(confusion[c].sum()),
      "precision": precision,
      "recall": recall,
      "f1": _f1(precision, recall),
      "precision_with_control": strict,
      "f1_with_control": _f1(strict, recall),
    }
    if not (out[c]["planted_unlearned"] or out[c]["attributed"]):
      out[c].update(precision=None, recall=None, f1=None, precision_with_control=None, f1_with_control=None)
  return out


def validate(layout: Layout, table: pd.DataFrame) -> dict:
  """Scores one diagnosis table against the world's planted causes."""
  truth = load_ground_truth(layout.world)
  truth["planted"] = truth["cause"].where(truth["cause"].notna(), NONE).astype(str)
  table = table.merge(truth[[col.ID, "group", "planted"]], on=col.ID, validate="one_to_one")
  unlearned = table[col.UNLEARNED].astype(bool)
  planted = table["planted"] != NONE
  fails = ~table[col.FINAL_EXACT_MATCH].astype(bool)
  if col.GREEDY_CORRECT in table:  # the generative protocol ran: its greedy answer is wrong too
    fails &= ~table[col.GREEDY_CORRECT].astype(bool)
  u = table[unlearned]
  confusion = pd.crosstab(u["planted"], u[col.CAUSE]).reindex(
    index=list(CAUSES) + [NONE], columns=list(CAUSES) + [UNATTRIBUTED], fill_value=0
  )
  causes = per_cause(confusion)
  scored = [v for v in causes.values() if v["f1"] is not None]
  macro = float(np.mean([v["f1"] for v in scored])) if scored else float("nan")
  strict_macro = float(np.mean([v["f1_with_control"] for v in scored])) if scored else float("nan")
  control_fp = float(unlearned[table["group"] == "control"].mean())
  with open(os.path.join(layout.world, "world.json")) as f:
    free_form = json.load(f)["config"].get("free_form", False)
  return {
    "examples": int(len(table)),
    "unlearned": int(unlearned.sum()),
    "detection": {
      "recall_of_failed_planted": float(unlearned[planted & fails].mean()),
      "unlearned_rate_by_planted_cause": {c: float(unlearned[table["planted"] == c].mean()) for c in CAUSES},
      "control_false_positive_rate": control_fp,
    },
    "confusion": {r: {c: int(v) for c, v in row.items()} for r, row in confusion.iterrows()},
    "per_cause": causes,
    "macro_f1": macro,
    "macro_f1_with_control": strict_macro,
    "unattributed_share": float((u[col.CAUSE] == UNATTRIBUTED).mean()) if len(u) else 0.0,
    "free_form": free_form,
    "targets": {
      "macro_f1": macro >= TARGETS["macro_f1_free_form" if free_form else "macro_f1"],
      "every_recall": all(v["recall"] >= TARGETS["recall"] for v in scored),
      "every_precision": all(v["precision"] >= TARGETS["precision"] for v in scored),
      "control_fp": control_fp <= TARGETS["control_fp"],
    },
  }


def report(name: str, result: dict) -> str:
  """One validation as text: detection, the confusion matrix, per-cause scores and the targets."""
  detection = result["detection"]
  lines = [
    f"== {name}: {result['unlearned']} of {result['examples']} examples unlearned",
    f"detection recall of failed planted examples {100 * detection['recall_of_failed_planted']:.1f}%, "
    f"control false positives {100 * detection['control_false_positive_rate']:.1f}%",
    "unlearned by planted cause: "
    + ", ".join(f"{c} {100 * v:.0f}%" for c, v in detection["unlearned_rate_by_planted_cause"].items()),
    "confusion (rows planted, columns attributed):",
    f"{'':>6}" + "".join(f"{c:>13}" for c in list(CAUSES) + [UNATTRIBUTED]),
  ]
  for row, counts in result["confusion"].items():
    lines.append(f"{row:>6}" + "".join(f"{v:>13}" for v in counts.values()))
  lines.append("cause  precision  recall     F1   (precision, F1 counting control examples as errors)")
  for c, v in result["per_cause"].items():
    if v["f1"] is None:
      lines.append(f"{c:>5}          —       —      —   (no unlearned planted example, none attributed)")
      continue
    lines.append(
      f"{c:>5} {v['precision']:>10.2f} {v['recall']:>7.2f} {v['f1']:>6.2f}   "
      f"({v['precision_with_control']:.2f}, {v['f1_with_control']:.2f})"
    )
  lines.append(
    f"macro-F1 {result['macro_f1']:.3f} ({result['macro_f1_with_control']:.3f} with control), "
    f"unattributed {100 * result['unattributed_share']:.1f}%; targets: "
    + ", ".join(f"{k}={'yes' if v else 'NO'}" for k, v in result["targets"].items())
  )
  return "\n".join(lines)


def overall(results: dict[str, dict]) -> str:
  """One line over several validations: the lowest and mean macro-F1, the lowest recall, the
  largest unattributed share, and whether every target holds everywhere."""
  recalls = [v["recall"] for r in results.values() for v in r["per_cause"].values() if v["recall"] is not None]
  return (
    f"== overall: macro-F1 min {min(r['macro_f1'] for r in results.values()):.3f}, "
    f"mean {np.mean([r['macro_f1'] for r in results.values()]):.3f}; lowest recall {min(recalls):.2f}"
    f"; most unattributed {100 * max(r['unattributed_share'] for r in results.values()):.1f}%; all targets hold: "
    f"{'yes' if all(all(r['targets'].values()) for r in results.values()) else 'NO'}"
  )
