"""Proves the diagnosis right on finished ILP-world runs (`ilp.world.diagnosis_validation`):
prints, per run and overall, detection's recall of failed planted examples, the confusion matrix
of planted and attributed causes, per-cause precision / recall / F1, macro-F1 and whether the
targets hold. Writes `<workdir>/diagnosis_validation.json` per run (one entry per protocol,
evidence setting and label).

The diagnosis stage explains one protocol's label (`diagnose.protocol`); `--protocols` scores the
diagnosis of each protocol that detection ran, recomputing it for the ones the stage did not
explain. `--evidence` scores the diagnosis also without the pre-training corpus and/or without
`meta.prerequisites` (what a user with plain {prompt, response} data has); `--labels` under the
sampled (the paper's repeat rule) or the expected-pass label, whichever detection kept.

  python scripts/validate_diagnosis.py --workdirs=runs/s0,runs/s1,runs/s2 [--protocols=multiple_choice]
      [--evidence=as_run,no_corpus] [--labels=sampled,expected]
"""

from __future__ import annotations

import itertools

from absl import app, flags

from ilp import config as config_lib
from ilp import fileio
from ilp.layout import Layout
from ilp.world import diagnosis_validation as validation

FLAGS = flags.FLAGS
flags.DEFINE_list("workdirs", None, "Work directories of finished world runs (with the diagnose stage).")
flags.mark_flag_as_required("workdirs")
flags.DEFINE_list("protocols", ["multiple_choice", "generative"], "Protocols whose diagnosis is scored (those run).")
flags.DEFINE_list(
  "evidence",
  ["as_run"],
  "Evidence settings scored: as_run (the run's config), no_corpus (without "
  "the pre-training corpus), no_metadata (without meta.prerequisites), plain (neither).",
)
flags.DEFINE_list("labels", ["as_run"], "Unlearned labels scored: as_run (detect.label), sampled, expected.")


def main(argv: list[str]) -> None:
  del argv
  for name, allowed in (("evidence", validation.EVIDENCE), ("labels", validation.LABELS)):
    bad = [v for v in FLAGS[name].value if v not in allowed]
    if bad:
      raise app.UsageError(f"--{name}: unknown setting(s) {bad}; choose from {allowed}")
  results = {}
  for workdir in FLAGS.workdirs:
    layout = Layout(workdir)
    config = config_lib.read(layout.config)
    by_protocol = {}
    for protocol, evidence, label in itertools.product(FLAGS.protocols, FLAGS.evidence, FLAGS.labels):
      table = validation.attribution(layout, config, protocol, evidence, label)
      if table is not None:
        key = ", ".join([protocol] + [v for v in (evidence, label) if v != "as_run"])
        by_protocol[key] = results[f"{workdir} ({key})"] = validation.validate(layout, table)
        print(validation.report(f"{workdir} ({key})", by_protocol[key]))
    fileio.write_json_atomic(layout.diagnosis_validation, by_protocol)
  if len(results) > 1:
    print(validation.overall(results))


if __name__ == "__main__":
  app.run(main)
