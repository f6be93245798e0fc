"""Test-retest agreement of the unlearned label: detects every training example again with the
probed model and a different seed (same settings, same number of sampling runs and the same
repeat rule) and prints Cohen's kappa between the stage's final labels and the retest's, per
protocol, for the sampled label (the paper's repeat rule) and the expected-pass label alike,
whichever `detect.label` made final. Writes `<workdir>/retest.json`.

  python scripts/retest_detection.py --workdirs=runs/w0,runs/w1 [--seed_offset=1]
"""
from __future__ import annotations

import json

import pandas as pd
from absl import app, flags

from ilp import config as config_lib
from ilp import fileio
from ilp.data import examples
from ilp.detection import columns as col
from ilp.detection import probes
from ilp.layout import Layout
from ilp.scoring import estimators

FLAGS = flags.FLAGS
flags.DEFINE_list("workdirs", None, "Work directories whose detection stage finished.")
flags.mark_flag_as_required("workdirs")
flags.DEFINE_integer("seed_offset", 1, "The retest's seed is the run's config.seed plus this (never 0).")


def retest(layout: Layout) -> dict:
  """Per protocol of the run: both detections' unlearned rates and the kappa between them."""
  with open(layout.config) as f:
    config = config_lib.load(json.load(f))
  first = pd.read_parquet(layout.detection).set_index(col.ID)
  frame = examples.read(layout.examples)
  second = probes.probe_model(frame, layout.model(config.detect.model), config.detect, config.data, config.mesh,
                              config.seed + FLAGS.seed_offset).set_index(col.ID).reindex(first.index)
  out = {}
  for protocol in config.detect.protocols:
    out[protocol] = {"label": config.detect.label, "runs": len(config.detect.temperatures),
                     "repeat_rule": config.detect.repeat_rule}
    labels = {"sampled": lambda t: t[col.of(protocol, col.UNLEARNED_SAMPLED)].to_numpy(bool),
              "expected": lambda t: t[col.of(protocol, col.EXPECTED_PASS)].to_numpy() < config.detect.threshold}
    for name, label in labels.items():
      a, b = label(first), label(second)
      out[protocol][name] = {"kappa": estimators.cohen_kappa(a, b), "unlearned_rate": float(a.mean()),
                             "retest_unlearned_rate": float(b.mean())}
  return out


def main(argv: list[str]) -> None:
  del argv
  if FLAGS.seed_offset == 0:
    raise app.UsageError("--seed_offset must not be 0 (the retest would repeat the stage's samples)")
  for workdir in FLAGS.workdirs:
    layout = Layout(workdir)
    result = retest(layout)
    for protocol, r in result.items():
      print(f"{workdir} ({protocol}): test-retest kappa of the sampled label ({r['runs']} runs, rule "
            f"'{r['repeat_rule']}') {r['sampled']['kappa']:.3f} ({100 * r['sampled']['unlearned_rate']:.1f}% vs "
            f"{100 * r['sampled']['retest_unlearned_rate']:.1f}% unlearned), of the expected-pass label "
            f"{r['expected']['kappa']:.3f} ({100 * r['expected']['unlearned_rate']:.1f}% vs "
            f"{100 * r['expected']['retest_unlearned_rate']:.1f}%); the final label is the {r['label']} one")
    fileio.write_json_atomic(layout.retest, result)


if __name__ == "__main__":
  app.run(main)
