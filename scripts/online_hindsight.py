"""The online control driven by hindsight instead of the early warning.

An online arm of a finished interventions study run again with the early warning replaced by the
converged baseline's outcome: at every decision, the examples "at risk" are exactly those the
baseline ended unlearned and its diagnosis attributed to one of the arm's `replay_causes` (their
cause is the diagnosis's). Everything else is the arm's: share, decision steps, the baseline's
schedule, the same compute. It tells whether the early warning's choice of examples is what limits
the control: if replaying what the baseline *ends* unlearned does no better than the arm, a better
score would not help. (It is not an upper bound: an example the baseline ends unlearned is not
always the one a replay can still save.)

  python scripts/online_hindsight.py --workdir=runs/interventions --arm=online [--out=<workdir>/hindsight/<arm>]

Prints the unlearned rate of the baseline, the arm (when it ran) and the hindsight run on the
baseline's examples (the diagnosis's label, as the comparison reads it).
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
from absl import app, flags

from ilp import config as config_lib
from ilp import console, pipeline
from ilp.detection import columns as col
from ilp.interventions import arms, online
from ilp.layout import Layout
from ilp.online import warning

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "A finished interventions study (baseline diagnosed).")
flags.DEFINE_string("arm", None, "The name of one of its online arms, whose settings the hindsight run keeps.")
flags.DEFINE_string("out", None, "The hindsight run's directory (default: <workdir>/hindsight/<arm>).")
flags.mark_flags_as_required(["workdir", "arm"])


def hindsight(attribution: pd.DataFrame, causes: tuple[str, ...]) -> pd.DataFrame:
  """Per example id: at risk (ended unlearned, attributed to one of `causes`) and its final cause."""
  table = attribution.set_index(col.ID)
  cause = table[col.CAUSE].fillna("").astype(str)
  return pd.DataFrame({"at_risk": table[col.UNLEARNED].astype(bool) & cause.isin(causes), "cause": cause})


def main(argv: list[str]) -> None:
  del argv
  console.configure_logging()
  layout = Layout(FLAGS.workdir)
  config = config_lib.read(layout.config)
  arm = next((a for a in config.interventions.arms if a.name == FLAGS.arm and a.intervention == "online"), None)
  if arm is None:
    raise app.UsageError(f"--arm: {FLAGS.workdir} has no online arm named '{FLAGS.arm}'")
  settings = arm.typed_settings()
  attribution = pd.read_parquet(layout.attribution)
  known = hindsight(attribution, settings.replay_causes)

  def assess(self: warning.Watch, dynamics: pd.DataFrame, step: int) -> tuple[np.ndarray, np.ndarray]:
    del dynamics, step
    found = known.reindex(self.data.index)
    return found["at_risk"].fillna(False).to_numpy(bool), found["cause"].fillna("").to_numpy(str)

  warning.Watch.assess = assess  # this process only: the run's one change
  out = FLAGS.out or layout.path("hindsight", arm.name)
  context = arms.Context(config, layout, Layout(out), attribution)
  pipeline.run(online.prepare(context, settings, arms.base_config(config, layout)), out)
  base = attribution.set_index(col.ID)[col.UNLEARNED].astype(bool)
  for name, run in (("baseline", layout), (arm.name, layout.arm(arm.name)), ("hindsight", Layout(out))):
    if os.path.exists(run.attribution):  # the diagnosis's label (the comparison's), on the baseline's examples
      rate = pd.read_parquet(run.attribution).set_index(col.ID)[col.UNLEARNED].reindex(base.index).mean()
      print(f"{name}: {100 * rate:.1f}% unlearned ({100 * (rate / base.mean() - 1):+.0f}% relative)")


if __name__ == "__main__":
  app.run(main)
