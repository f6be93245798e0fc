"""Scores the interventions study on finished ILP-world runs (`configs/interventions.py`) against
the world's planted causes (`ilp.world.interventions_evaluation`): prints, per run and arm, the
cut on the baseline's target-cause examples (95% paired bootstrap interval) and on the others, the
planted control group's change, the issue's expectations and every planted group's unlearned rate.
Writes `<workdir>/interventions_eval.json` per run. With several runs (world seeds) it also prints
the response matrix pooled over them, each cell with its 95% paired bootstrap interval and the
per-run figures (`--matrix_out` writes it as JSON).

  python scripts/evaluate_interventions.py --workdirs=runs/iv0,runs/iv1,runs/iv2
"""

from __future__ import annotations

from absl import app, flags

from ilp import config as config_lib
from ilp import fileio
from ilp.layout import Layout
from ilp.world import interventions_evaluation

FLAGS = flags.FLAGS
flags.DEFINE_list("workdirs", None, "finished interventions runs (one per world seed)", required=True)
flags.DEFINE_integer("samples", 2000, "bootstrap resamples")
flags.DEFINE_string("matrix_out", "", "JSON file for the response matrix pooled over the runs (printed with 2+ runs)")


def main(argv: list[str]) -> None:
  del argv
  runs = []
  for workdir in FLAGS.workdirs:
    layout = Layout(workdir)
    runs.append((layout, config_lib.read(layout.config)))
    result = interventions_evaluation.evaluate(layout, runs[-1][1], FLAGS.samples)
    fileio.write_json_atomic(layout.interventions_evaluation, result)
    print(interventions_evaluation.summary_text(workdir, result))
  if len(runs) > 1 or FLAGS.matrix_out:
    matrix = interventions_evaluation.response_matrix(runs, FLAGS.samples)
    print(interventions_evaluation.matrix_text(matrix))
    if FLAGS.matrix_out:
      fileio.write_json_atomic(FLAGS.matrix_out, matrix)


if __name__ == "__main__":
  app.run(main)
