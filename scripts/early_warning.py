"""How early can a run tell which examples will end unlearned? Each finished run is read as if at
a share of its SFT steps and scored by the early-warning model fitted on the *other* runs
(leave-one-run-out: a model never scores the data it was fitted on).

  python scripts/early_warning.py --workdirs=runs/w0,runs/w1,runs/w2 [--heldout=runs/free_form]
      [--fractions=0.25,0.5,0.75] [--protocol=generative] [--transform=rank|none] [--save=warning.json]

Prints ROC-AUC, average precision and the provisional cause's kappa with the final diagnosis per
run and share, and writes them to `<first workdir>/../early_warning.json` (or --out). Runs in
--heldout (other worlds) are scored by the model fitted on every --workdirs run, which --save
writes (for scoring other runs).
"""

from __future__ import annotations

import json
import os

from absl import app, flags

from ilp.online import evaluation

FLAGS = flags.FLAGS
flags.DEFINE_list("workdirs", None, "Finished runs (detect and, for the cause kappa, diagnose done).")
flags.DEFINE_list("heldout", [], "Runs scored by the model fitted on every --workdirs run (other worlds).")
flags.DEFINE_list("fractions", ["0.25", "0.5", "0.75"], "Shares of the SFT steps to score at.")
flags.DEFINE_string("protocol", "generative", "Whose final unlearned label is predicted.")
flags.DEFINE_string("out", None, "Where the figures go (default: early_warning.json beside the first workdir).")
flags.DEFINE_string("save", None, "Also write the model fitted on every run here.")
flags.DEFINE_enum("transform", "rank", ["none", "rank"], "Features as percentiles within the run, or as they are.")
flags.mark_flags_as_required(["workdirs"])


def main(argv: list[str]) -> None:
  del argv
  if len(FLAGS.workdirs) < 2:
    raise app.UsageError("--workdirs: at least two runs (each is scored by a model fitted on the others)")
  fractions = sorted({float(f) for f in FLAGS.fractions} | set(evaluation.FIT_FRACTIONS))
  runs = [evaluation.read(w, fractions, FLAGS.protocol) for w in FLAGS.workdirs]
  everything = evaluation.fit_on(runs, FLAGS.transform)
  jobs = [(r, evaluation.fit_on([o for o in runs if o is not r], FLAGS.transform)) for r in runs]
  jobs += [(evaluation.read(w, fractions, FLAGS.protocol), everything) for w in FLAGS.heldout]
  results = {}
  for held, model in jobs:
    scored = evaluation.score(model, held)
    results[held.name] = {f: scored[f"{float(f):g}"] for f in FLAGS.fractions}
    for f, s in results[held.name].items():
      print(
        f"{held.name} at {f}: AUC {s['roc_auc']:.3f} (loss alone {s['loss_roc_auc']:.3f})  "
        f"AP {s['average_precision']:.3f}  "
        f"cause kappa {s['cause_kappa']}  ({s['unlearned']} of {s['examples']} unlearned)"
      )
  out = FLAGS.out or os.path.join(os.path.dirname(os.path.abspath(FLAGS.workdirs[0])), "early_warning.json")
  with open(out, "w") as f:
    json.dump(results, f, indent=2)
  if FLAGS.save:
    everything.save(FLAGS.save)


if __name__ == "__main__":
  app.run(main)
