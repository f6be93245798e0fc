"""What is known of each example at step t of SFT: the dynamics signals of the log so far (the
diagnosis's own `dynamics_signals` on the rows up to t) and the data-side signals that need no
training (near-duplicates with another answer, template and answer rarity), computed once.

The features are the diagnosis's signals read early, so an early warning and the final diagnosis
speak of the same quantities; the log's first evaluation pass (step 0) is the base model, so the
base model's fit to each answer costs nothing extra.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ilp.detection import columns as col
from ilp.diagnosis import signals
from ilp.diagnosis.signals import SignalConfig
from ilp.scoring import dynamics_log

FEATURES = (
  "loss",  # response loss at the last evaluation pass so far
  "gold_prob",  # mean gold-token probability then
  "exact_match",  # every response token the argmax then
  "initial_loss",  # the base model's loss (the start pass)
  "initial_margin",  # the base model's mean gold-logit margin: negative = it prefers another token
  "recent_improvement",  # relative loss fall over the last passes: still learning
  "ever_learned",  # exact match at some pass so far
  "learned_then_lost",  # learned by its own phase's end, not now (an earlier phase)
  "boundary_drop",  # gold probability lost since its own phase ended
  "earlier_phase",  # its phase is over
  "visits",  # log(1 + training visits so far): 0 for a phase not yet reached
  "contradicting_duplicates",  # near-duplicates whose answer differs
  "template_share",  # log share of the data with its prompt template
  "answer_frequency",  # log count of examples with the same answer
)


def data_signals(examples: pd.DataFrame, cfg: SignalConfig = SignalConfig()) -> pd.DataFrame:
  """The signals that need no training, per example id (examples table: id, prompt, response)."""
  table = examples.set_index("id")
  found = signals.text_signals(table["prompt"], table["response"], None, cfg)
  return found[[col.DISAGREEING_DUPLICATES, col.TEMPLATE_SHARE, col.ANSWER_FREQUENCY]]


def at_step(dynamics: pd.DataFrame, data: pd.DataFrame, step: int, cfg: SignalConfig = SignalConfig()) -> pd.DataFrame:
  """The FEATURES of every example of `data` (from `data_signals`) from the dynamics log's rows up
  to `step` (the log as a run would have it then)."""
  sofar = dynamics[dynamics["step"] <= step]
  ids = data.index
  d = signals.dynamics_signals(sofar, ids, cfg.slope_passes, cfg.improvement_window)
  visits = dynamics_log.rows(sofar, dynamics_log.BATCH).groupby("id").size().reindex(ids).fillna(0)
  out = pd.DataFrame(
    {
      "loss": d[col.FINAL_LOSS],
      "gold_prob": d[col.FINAL_GOLD_PROB],
      "exact_match": d[col.FINAL_EXACT_MATCH],
      "initial_loss": d[col.INITIAL_LOSS],
      "initial_margin": d[col.INITIAL_MARGIN],
      "recent_improvement": d[col.RECENT_IMPROVEMENT],
      "ever_learned": d[col.EVER_LEARNED],
      "learned_then_lost": d[col.LEARNED_THEN_LOST],
      "boundary_drop": d[col.BOUNDARY_DROP],
      "earlier_phase": d[col.OWN_PHASE] < d[col.FINAL_PHASE],
      "visits": np.log1p(visits),
      "contradicting_duplicates": data[col.DISAGREEING_DUPLICATES] > 0,
      "template_share": np.log(data[col.TEMPLATE_SHARE]),
      "answer_frequency": np.log(data[col.ANSWER_FREQUENCY]),
    },
    index=ids,
  )
  return out.astype(np.float64).fillna(0.0)[list(FEATURES)]
