"""How much the diagnosis depends on each rule threshold: macro-F1 against the world's planted
causes as each threshold moves to 0.75x and 1.25x its default (a cosine or share is capped at 1),
all else at the defaults, on finished world runs. Detection is not redone: the blind-fact rule is
re-applied to the base model's stored pass rates and BoN accuracies, the signals and rules to the
stored tables (seconds per run). Prints a Markdown table (one row per threshold: default, and
the macro-F1 change at each factor, worst over the runs) and writes it to `--out`.

  python scripts/sensitivity.py --workdirs=runs/w0,runs/w1 [--protocol=generative] [--evidence=as_run]
"""
from __future__ import annotations

import dataclasses
import json
import os
import sys

import numpy as np
import pandas as pd
from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import validate_diagnosis  # noqa: E402  (a sibling script: the scoring against the planted causes)

from ilp import config as config_lib  # noqa: E402
from ilp import fileio  # noqa: E402
from ilp.data import examples  # noqa: E402
from ilp.detection import columns as col  # noqa: E402
from ilp.diagnosis import diagnose  # noqa: E402
from ilp.layout import Layout  # noqa: E402
from ilp.scoring import dynamics_log, estimators  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_list("workdirs", None, "Finished world runs (detect and diagnose stages).")
flags.mark_flag_as_required("workdirs")
flags.DEFINE_string("protocol", "generative", "Whose unlearned label is explained.")
flags.DEFINE_enum("evidence", "as_run", validate_diagnosis.EVIDENCE, "Evidence setting (as in validate_diagnosis).")
flags.DEFINE_enum("label", "as_run", ("as_run", "sampled", "expected"), "Unlearned label (as in validate_diagnosis).")
flags.DEFINE_string("out", "", "Markdown file for the table (default: print only).")

FACTORS = (0.75, 1.25)
THRESHOLDS = ("signals.similarity_threshold", "signals.embedding_threshold", "blind", "rules.jsd",
              "rules.prior_persists", "rules.prerequisites_known", "rules.corpus_coverage", "rules.entity_lift",
              "rules.forgetting_drop", "rules.improvement")
CAPPED = {"signals.similarity_threshold", "signals.embedding_threshold", "rules.prior_persists",
          "rules.prerequisites_known", "rules.corpus_coverage", "rules.jsd", "rules.forgetting_drop"}


def moved(settings: diagnose.DiagnoseConfig, name: str, factor: float) -> tuple[diagnose.DiagnoseConfig, float]:
  """`settings` with one threshold scaled, and its new value."""
  section, field = name.split(".")
  part = getattr(settings, section)
  value = getattr(part, field) * factor
  value = min(value, 1.0) if name in CAPPED else value
  return dataclasses.replace(settings, **{section: dataclasses.replace(part, **{field: value})}), value


class Run:
  """One world run's stored tables, diagnosed again under changed thresholds."""

  def __init__(self, workdir: str):
    self.layout = Layout(workdir)
    with open(self.layout.config) as f:
      self.config = config_lib.load(json.load(f))
    self.detection = pd.read_parquet(self.layout.detection)
    of = lambda name: col.of(FLAGS.protocol, name)
    if FLAGS.label != "as_run":
      self.detection[of(col.UNLEARNED)] = (self.detection[of(col.EXPECTED_PASS)] < self.config.detect.threshold
                                           if FLAGS.label == "expected" else self.detection[of(col.UNLEARNED_SAMPLED)])
    if FLAGS.evidence in ("no_metadata", "plain"):
      self.detection = self.detection.drop(columns=[col.PREREQUISITES, col.PREREQUISITES_KNOWN], errors="ignore")
    self.examples = examples.read(self.layout.examples)
    self.dynamics = dynamics_log.load(self.layout.dynamics())
    settings = dataclasses.replace(diagnose.DiagnoseConfig(), protocol=FLAGS.protocol)
    self.documents = (None if FLAGS.evidence in ("no_corpus", "plain")
                      else diagnose.corpus_documents(settings, self.config.data))

  def macro_f1(self, settings: diagnose.DiagnoseConfig, blind_factor: float = 1.0) -> float:
    detection = self.detection
    if blind_factor != 1.0 and col.BASE_BON_AT_BLIND_K in detection:
      detect = self.config.detect
      detection = detection.assign(**{col.BASE_BLIND: estimators.blind(
          detection[col.BASE_PASS_AT_N].to_numpy(), detection[col.BASE_BON_AT_BLIND_K].to_numpy(),
          min(detect.threshold * blind_factor, 1.0), min(detect.blind_bon * blind_factor, 1.0))})
    table = diagnose.diagnose(detection, self.examples, self.dynamics, settings, self.documents)
    return validate_diagnosis.validate(self.layout, table)["macro_f1"]


def main(argv: list[str]) -> None:
  del argv
  runs = [Run(w) for w in FLAGS.workdirs]
  default = dataclasses.replace(diagnose.DiagnoseConfig(), protocol=FLAGS.protocol)
  base = [r.macro_f1(default) for r in runs]
  print(f"default macro-F1 per run: {', '.join(f'{f:.3f}' for f in base)}")
  detect = runs[0].config.detect
  rows = []
  for name in THRESHOLDS:
    changes, values = [], []
    for factor in FACTORS:
      if name == "blind":
        value = f"pass < {detect.threshold * factor:.2f}, BoN < {detect.blind_bon * factor:.3f}"
        scores = [r.macro_f1(default, factor) for r in runs]
      else:
        settings, v = moved(default, name, factor)
        value = f"{v:g}"
        scores = [r.macro_f1(settings) for r in runs]
      delta = np.asarray(scores) - np.asarray(base)
      changes.append(delta)
      values.append(value)
    section, field = name.split(".") if "." in name else ("", name)
    start = (getattr(getattr(default, section), field) if section
             else f"pass < {detect.threshold}, BoN-{detect.blind_bon_k} < {detect.blind_bon}")
    rows.append(f"| `{name}` | {start} | {values[0]} | {changes[0].min():+.3f} ({changes[0].mean():+.3f}) | "
                f"{values[1]} | {changes[1].min():+.3f} ({changes[1].mean():+.3f}) |")
    print(rows[-1], flush=True)
  lines = [f"Macro-F1 change ({FLAGS.protocol} protocol, {FLAGS.label} label, evidence {FLAGS.evidence}; worst over {len(runs)} runs, mean in "
           f"brackets); default macro-F1 {', '.join(f'{f:.3f}' for f in base)}.", "",
           "| threshold | default | 0.75x | change | 1.25x | change |", "|---|---|---|---|---|---|"] + rows
  if FLAGS.out:
    fileio.write_text_atomic(FLAGS.out, "\n".join(lines) + "\n")


if __name__ == "__main__":
  app.run(main)
