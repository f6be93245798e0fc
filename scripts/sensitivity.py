"""How much the diagnosis depends on each rule threshold (`ilp.world.sensitivity`): macro-F1
against the world's planted causes as each threshold moves to 0.75x and 1.25x its default, on
finished world runs. Prints a Markdown row per threshold (default, and the macro-F1 change at
each factor, worst over the runs) and writes the table to `--out`.

  python scripts/sensitivity.py --workdirs=runs/w0,runs/w1 [--protocol=generative] [--evidence=as_run]
"""

from __future__ import annotations

from absl import app, flags

from ilp import config as config_lib
from ilp import fileio
from ilp.layout import Layout
from ilp.world import diagnosis_validation as validation
from ilp.world import sensitivity

FLAGS = flags.FLAGS
flags.DEFINE_list("workdirs", None, "Finished world runs (detect and diagnose stages).")
flags.mark_flag_as_required("workdirs")
flags.DEFINE_string("protocol", "generative", "Whose unlearned label is explained.")
flags.DEFINE_enum("evidence", "as_run", validation.EVIDENCE, "Evidence setting (as in validate_diagnosis).")
flags.DEFINE_enum("label", "as_run", validation.LABELS, "Unlearned label (as in validate_diagnosis).")
flags.DEFINE_string("out", "", "Markdown file for the table (default: print only).")


def main(argv: list[str]) -> None:
  del argv
  runs = [
    sensitivity.Run(layout, config_lib.read(layout.config), FLAGS.protocol, FLAGS.label, FLAGS.evidence)
    for layout in map(Layout, FLAGS.workdirs)
  ]
  base = [r.macro_f1(sensitivity.defaults(FLAGS.protocol)) for r in runs]
  print(f"default macro-F1 per run: {', '.join(f'{f:.3f}' for f in base)}")
  rows = []
  for row in sensitivity.threshold_rows(runs, FLAGS.protocol, base):
    print(row, flush=True)
    rows.append(row)
  if FLAGS.out:
    fileio.write_text_atomic(FLAGS.out, sensitivity.table(rows, base, FLAGS.protocol, FLAGS.label, FLAGS.evidence))


if __name__ == "__main__":
  app.run(main)
