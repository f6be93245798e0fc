"""Proves the diagnosis right on finished ILP-world runs: joins `diagnosis/attribution.parquet`
with the world's planted ground truth (the only place the two meet) and prints, per run and
overall:

- detection: recall of planted-unlearnable examples that the final model in fact fails (greedy
  answer wrong and not reproduced under teacher forcing), the unlearned rate of each planted
  cause, and the false-positive rate on control examples;
- attribution, over unlearned examples: the confusion matrix (planted cause x attributed cause;
  "none" = a control example), per-cause precision / recall / F1 and macro-F1 over the five
  causes, and the unattributed share. Ground truth exists only for the planted examples, so the
  headline precision is over them; a control example that fails has no planted cause (it may
  still have a real one, e.g. a stage-1 fact forgotten in stage 2), and the stricter precision
  that counts every attributed control example as an error is printed beside it;
- whether the targets hold: macro-F1 >= 0.85 (>= 0.75 on the free-form world), every cause's
  recall and precision >= 0.7, control false positives <= 5%; the unattributed share is reported.

The diagnosis stage explains one protocol's label (`diagnose.protocol`); `--protocols` scores the
diagnosis of each protocol that detection ran, recomputing it (signals and rules take seconds)
for the ones the stage did not explain. Writes `<workdir>/diagnosis_validation.json` per run
(one entry per protocol).

`--evidence` scores the diagnosis also without the pre-training corpus and/or without
`meta.prerequisites` (what a user with plain {prompt, response} data has); `--labels` under the
sampled (the paper's repeat rule) or the expected-pass label, whichever detection kept.

  python scripts/validate_diagnosis.py --workdirs=runs/s0,runs/s1,runs/s2 [--protocols=multiple_choice]
      [--evidence=as_run,no_corpus] [--labels=sampled,expected]
"""
from __future__ import annotations

import dataclasses
import itertools
import json
import os

import numpy as np
import pandas as pd
from absl import app, flags

from ilp import config as config_lib
from ilp import fileio
from ilp.data import examples, world
from ilp.detection import columns as col
from ilp.diagnosis import diagnose
from ilp.diagnosis.attribution import CAUSES, UNATTRIBUTED
from ilp.layout import Layout
from ilp.scoring import dynamics_log

FLAGS = flags.FLAGS
EVIDENCE = ("as_run", "no_corpus", "no_metadata", "plain")


def define_flags() -> None:
  """The script's flags (defined only when it runs, so other scripts can import its functions)."""
  flags.DEFINE_list("workdirs", None, "Work directories of finished world runs (with the diagnose stage).")
  flags.mark_flag_as_required("workdirs")
  flags.DEFINE_list("protocols", ["multiple_choice", "generative"], "Protocols whose diagnosis is scored (those run).")
  flags.DEFINE_list("evidence", ["as_run"], "Evidence settings scored: as_run (the run's config), no_corpus (without "
                    "the pre-training corpus), no_metadata (without meta.prerequisites), plain (neither).")
  flags.DEFINE_list("labels", ["as_run"], "Unlearned labels scored: as_run (detect.label), sampled, expected.")


NONE = "none"
TARGETS = {"macro_f1": 0.85, "macro_f1_free_form": 0.75, "recall": 0.7, "precision": 0.7, "control_fp": 0.05}


def attribution(layout: Layout, protocol: str, evidence: str = "as_run", label: str = "as_run",
                diagnose_config: diagnose.DiagnoseConfig | None = None) -> pd.DataFrame | None:
  """The diagnosis of `protocol`'s label: the stage's, or recomputed with the run's settings (None
  when detection did not run that protocol), less the corpus and/or `meta.prerequisites` as
  `evidence` says, with the `sampled` or `expected` label (`detect.label`) as `label` says, or
  with `diagnose_config` instead of the run's."""
  with open(layout.config) as f:
    config = config_lib.load(json.load(f))
  if (config.diagnose.protocol == protocol and evidence == "as_run" and label in ("as_run", config.detect.label)
      and diagnose_config is None):
    return pd.read_parquet(layout.attribution)
  if protocol not in config.detect.protocols:
    return None
  settings = dataclasses.replace(diagnose_config or config.diagnose, protocol=protocol)
  detection = pd.read_parquet(layout.detection)
  unlearned = col.of(protocol, col.UNLEARNED)
  if label == "expected":
    detection[unlearned] = detection[col.of(protocol, col.EXPECTED_PASS)] < config.detect.threshold
  elif label == "sampled":
    detection[unlearned] = detection[col.of(protocol, col.UNLEARNED_SAMPLED)]
  if evidence in ("no_metadata", "plain"):
    detection = detection.drop(columns=[col.PREREQUISITES, col.PREREQUISITES_KNOWN], errors="ignore")
  documents = None if evidence in ("no_corpus", "plain") else diagnose.corpus_documents(settings, config.data)
  return diagnose.diagnose(detection, examples.read(layout.examples), dynamics_log.load(layout.dynamics()),
                           settings, documents)


def validate(layout: Layout, table: pd.DataFrame) -> dict:
  """Scores one diagnosis table against the world's planted causes."""
  truth = world.load_ground_truth(layout.world)
  truth["planted"] = truth["cause"].where(truth["cause"].notna(), NONE).astype(str)
  table = table.merge(truth[[col.ID, "group", "planted"]], on=col.ID, validate="one_to_one")
  unlearned = table[col.UNLEARNED].astype(bool)
  planted = table["planted"] != NONE
  fails = ~table[col.FINAL_EXACT_MATCH].astype(bool)
  if col.GREEDY_CORRECT in table:  # the generative protocol ran: its greedy answer is wrong too
    fails &= ~table[col.GREEDY_CORRECT].astype(bool)
  u = table[unlearned]
  confusion = pd.crosstab(u["planted"], u[col.CAUSE]).reindex(index=list(CAUSES) + [NONE],
                                                             columns=list(CAUSES) + [UNATTRIBUTED], fill_value=0)
  per_cause = {}
  f1 = lambda p, r: 0.0 if p + r == 0 else 2 * p * r / (p + r)
  # A cause with no unlearned planted example and no attribution has no F1: it is left out of the macro average.
  for c in CAUSES:
    hit = int(confusion.loc[c, c])
    recall = hit / max(int(confusion.loc[c].sum()), 1)
    precision = hit / max(int(confusion.loc[list(CAUSES), c].sum()), 1)
    strict = hit / max(int(confusion[c].sum()), 1)
    per_cause[c] = {"planted_unlearned": int(confusion.loc[c].sum()), "attributed": int(confusion[c].sum()),
                    "precision": precision, "recall": recall, "f1": f1(precision, recall),
                    "precision_with_control": strict, "f1_with_control": f1(strict, recall)}
  scored = [v for v in per_cause.values() if v["planted_unlearned"] or v["attributed"]]
  for v in per_cause.values():
    if v not in scored:
      v.update(precision=None, recall=None, f1=None, precision_with_control=None, f1_with_control=None)
  macro = float(np.mean([v["f1"] for v in scored])) if scored else float("nan")
  strict_macro = float(np.mean([v["f1_with_control"] for v in scored])) if scored else float("nan")
  unattributed = float((u[col.CAUSE] == UNATTRIBUTED).mean()) if len(u) else 0.0
  control_fp = float(unlearned[table["group"] == "control"].mean())
  with open(os.path.join(layout.world, "world.json")) as f:
    free_form = json.load(f)["config"].get("free_form", False)
  return {
      "examples": int(len(table)), "unlearned": int(unlearned.sum()),
      "detection": {"recall_of_failed_planted": float(unlearned[planted & fails].mean()),
                    "unlearned_rate_by_planted_cause": {c: float(unlearned[table["planted"] == c].mean())
                                                        for c in CAUSES},
                    "control_false_positive_rate": control_fp},
      "confusion": {r: {c: int(v) for c, v in row.items()} for r, row in confusion.iterrows()},
      "per_cause": per_cause, "macro_f1": macro, "macro_f1_with_control": strict_macro,
      "unattributed_share": unattributed,
      "free_form": free_form,
      "targets": {"macro_f1": macro >= TARGETS["macro_f1_free_form" if free_form else "macro_f1"],
                  "every_recall": all(v["recall"] >= TARGETS["recall"] for v in scored),
                  "every_precision": all(v["precision"] >= TARGETS["precision"] for v in scored),
                  "control_fp": control_fp <= TARGETS["control_fp"]},
  }


def report(workdir: str, result: dict) -> str:
  lines = [f"== {workdir}: {result['unlearned']} of {result['examples']} examples unlearned",
           f"detection recall of failed planted examples {100 * result['detection']['recall_of_failed_planted']:.1f}%, "
           f"control false positives {100 * result['detection']['control_false_positive_rate']:.1f}%",
           "unlearned by planted cause: " + ", ".join(
               f"{c} {100 * v:.0f}%" for c, v in result["detection"]["unlearned_rate_by_planted_cause"].items()),
           "confusion (rows planted, columns attributed):",
           f"{'':>6}" + "".join(f"{c:>13}" for c in list(CAUSES) + [UNATTRIBUTED])]
  for row, counts in result["confusion"].items():
    lines.append(f"{row:>6}" + "".join(f"{v:>13}" for v in counts.values()))
  lines.append("cause  precision  recall     F1   (precision, F1 counting control examples as errors)")
  for c, v in result["per_cause"].items():
    if v["f1"] is None:
      lines.append(f"{c:>5}          —       —      —   (no unlearned planted example, none attributed)")
      continue
    lines.append(f"{c:>5} {v['precision']:>10.2f} {v['recall']:>7.2f} {v['f1']:>6.2f}   "
                 f"({v['precision_with_control']:.2f}, {v['f1_with_control']:.2f})")
  lines.append(f"macro-F1 {result['macro_f1']:.3f} ({result['macro_f1_with_control']:.3f} with control), unattributed {100 * result['unattributed_share']:.1f}%; targets: " +
               ", ".join(f"{k}={'yes' if v else 'NO'}" for k, v in result["targets"].items()))
  return "\n".join(lines)


def main(argv: list[str]) -> None:
  del argv
  results = {}
  bad = [e for e in FLAGS.evidence if e not in EVIDENCE]
  if bad:
    raise app.UsageError(f"--evidence: unknown setting(s) {bad}; choose from {EVIDENCE}")
  for workdir in FLAGS.workdirs:
    layout = Layout(workdir)
    by_protocol = {}
    for protocol in FLAGS.protocols:
      for evidence, label in itertools.product(FLAGS.evidence, FLAGS.labels):
        table = attribution(layout, protocol, evidence, label)
        if table is not None:
          key = ", ".join([protocol] + [v for v in (evidence, label) if v != "as_run"])
          by_protocol[key] = results[f"{workdir} ({key})"] = validate(layout, table)
          print(report(f"{workdir} ({key})", by_protocol[key]))
    fileio.write_json_atomic(layout.diagnosis_validation, by_protocol)
  if len(results) > 1:
    print(f"== overall: macro-F1 min {min(r['macro_f1'] for r in results.values()):.3f}, "
          f"mean {np.mean([r['macro_f1'] for r in results.values()]):.3f}; lowest recall "
          f"{min(v['recall'] for r in results.values() for v in r['per_cause'].values() if v['recall'] is not None):.2f}"
          f"; most unattributed "
          f"{100 * max(r['unattributed_share'] for r in results.values()):.1f}%; all targets hold: "
          f"{'yes' if all(all(r['targets'].values()) for r in results.values()) else 'NO'}")


if __name__ == "__main__":
  define_flags()
  app.run(main)
