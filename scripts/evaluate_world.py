"""Evaluates a finished ILP-world run against its planted ground truth (`ilp.world.evaluation`).

Prints the unlearned rate per data set and phase (from the detection summary) and per planted
group, the forgetting (IV) and rare-pattern (V) figures and whether the world's targets hold, and
writes `<workdir>/world_eval.json` and `<workdir>/evaluation/` (Markdown + plots).

  python scripts/evaluate_world.py --workdir=runs/world
"""

from __future__ import annotations

import json
import os

from absl import app, flags

from ilp import config as config_lib
from ilp import fileio
from ilp.layout import Layout
from ilp.world import evaluation

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Work directory of a finished world run.")
flags.mark_flag_as_required("workdir")


def main(argv: list[str]) -> None:
  del argv
  layout = Layout(FLAGS.workdir)
  result = evaluation.evaluate(layout, config_lib.read(layout.config))
  with open(layout.detection_summary) as f:
    print(evaluation.summary_text(result, json.load(f)))
  fileio.write_json_atomic(layout.world_evaluation, result)
  fileio.write_text_atomic(os.path.join(layout.world_evaluation_dir, "evaluation.md"), evaluation.markdown(result))


if __name__ == "__main__":
  app.run(main)
