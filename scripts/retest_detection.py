"""Test-retest agreement of the unlearned label (`ilp.detection.retest`): detects every training
example again with the probed model and a different seed and prints Cohen's kappa between the
stage's final labels and the retest's, per protocol and label. Writes `<workdir>/retest.json`.

  python scripts/retest_detection.py --workdirs=runs/w0,runs/w1 [--seed_offset=1]
"""

from __future__ import annotations

import pandas as pd
from absl import app, flags

from ilp import config as config_lib
from ilp import fileio
from ilp.data import examples
from ilp.detection import retest
from ilp.layout import Layout

FLAGS = flags.FLAGS
flags.DEFINE_list("workdirs", None, "Work directories whose detection stage finished.")
flags.mark_flag_as_required("workdirs")
flags.DEFINE_integer("seed_offset", 1, "The retest's seed is the run's config.seed plus this (never 0).")


def main(argv: list[str]) -> None:
  del argv
  if FLAGS.seed_offset == 0:
    raise app.UsageError("--seed_offset must not be 0 (the retest would repeat the stage's samples)")
  for workdir in FLAGS.workdirs:
    layout = Layout(workdir)
    config = config_lib.read(layout.config)
    result = retest.retest(
      pd.read_parquet(layout.detection),
      examples.read(layout.examples),
      layout.model(config.detect.model),
      config.detect,
      config.data,
      config.mesh,
      config.seed + FLAGS.seed_offset,
    )
    print(retest.summary_text(workdir, result))
    fileio.write_json_atomic(layout.retest, result)


if __name__ == "__main__":
  app.run(main)
