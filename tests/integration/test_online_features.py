"""The early warning's features at a step of a real (tiny) SFT run, against direct reads of the
dynamics log up to that step."""

import os

import numpy as np

from ilp import pipeline
from ilp.data import examples
from ilp.online import features
from ilp.scoring import dynamics_log
from tests import sft_data


def test_features_at_a_step_read_only_the_log_up_to_it(tmp_path):
  paths = sft_data.make_inputs(str(tmp_path / "data"), per_dataset=8)
  config = sft_data.sft_config(paths, epochs=3, eval_every_steps=2)
  workdir = str(tmp_path / "work")
  pipeline.run(config, workdir)
  log = dynamics_log.load(os.path.join(workdir, "sft", "dynamics"))
  data = features.data_signals(examples.read(os.path.join(workdir, "examples.parquet")))
  step = int(log["step"].max()) // 2
  found = features.at_step(log, data, step)
  assert list(found.columns) == list(features.FEATURES) and list(found.index) == list(data.index)
  evals = dynamics_log.rows(log, dynamics_log.EVAL)
  evals = evals[evals["step"] <= step].sort_values("step", kind="stable")
  last = evals.groupby("id").last().reindex(data.index)
  np.testing.assert_allclose(found["loss"], last["loss"], rtol=1e-6)
  np.testing.assert_array_equal(found["exact_match"], last["exact_match"] > 0.5)
  start = evals[evals["step"] == 0].set_index("id").reindex(data.index)
  np.testing.assert_allclose(found["initial_margin"], start["margin_mean"], rtol=1e-6)
  batches = dynamics_log.rows(log, dynamics_log.BATCH)
  visits = batches[batches["step"] <= step].groupby("id").size().reindex(data.index).fillna(0)
  np.testing.assert_allclose(found["visits"], np.log1p(visits))
  assert 0 < visits.sum() < len(batches)  # the log after `step` was not read
