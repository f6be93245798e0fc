"""Scores the interventions study on finished ILP-world runs (`configs/interventions.py`) against
the world's planted causes (`ilp.world.interventions_evaluation`): prints, per run and arm, the
cut on the baseline's target-cause examples (95% paired bootstrap interval) and on the others, the
planted control group's change, the issue's expectations and every planted group's unlearned rate.
Writes `<workdir>/interventions_eval.json` per run.

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


def main(argv: list[str]) -> None:
  del argv
  for workdir in FLAGS.workdirs:
    layout = Layout(workdir)
    result = interventions_evaluation.evaluate(layout, config_lib.read(layout.config), FLAGS.samples)
    fileio.write_json_atomic(layout.interventions_evaluation, result)
    print(interventions_evaluation.summary_text(workdir, result))


if __name__ == "__main__":
  app.run(main)
