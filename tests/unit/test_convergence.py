"""The convergence criterion, the warmup-stable-decay schedule, and training to convergence through
the real loop (decisions against the dynamics log, kill and resume to the same decisions)."""

import json

import numpy as np
import pytest

from ilp import config as config_lib
from ilp.train import convergence, optim
from ilp.train.config import OptimizerConfig
from ilp.typed import ConfigError
from tests import sft_data


def _monitor(losses, rates, config=convergence.ConvergenceConfig()):
  """A monitor fed one step per (epoch, data set) with the given mean losses (10 tokens each)."""
  m = convergence.Monitor(config)
  for epoch, by_dataset in losses.items():
    for name, loss in by_dataset.items():
      m.add(
        1, epoch, np.asarray([name, name], object), np.asarray([loss * 4, loss * 6]), np.asarray([4, 6]), rates[epoch]
      )
  return m


def test_judge_against_a_direct_computation():
  losses = {1: {"a": 2.0, "b": 1.0}, 2: {"a": 1.0, "b": 0.90}, 3: {"a": 0.99, "b": 0.89}}
  m = _monitor(losses, {1: 1e-3, 2: 1e-3, 3: 1e-3})
  assert m.losses(1) == {"a": pytest.approx({1: 2.0, 2: 1.0, 3: 0.99}), "b": pytest.approx({1: 1.0, 2: 0.9, 3: 0.89})}
  verdict = convergence.judge(m.losses(1), m.learning_rates(1), convergence.ConvergenceConfig(delta=0.02), 3)
  a, b = verdict["datasets"]["a"], verdict["datasets"]["b"]
  assert a["relative_improvement"] == pytest.approx(0.01) and a["converged"]
  assert b["relative_improvement"] == pytest.approx(0.01 / 0.9) and b["converged"]
  assert verdict["converged"] and verdict["relative_lr"] == pytest.approx(1.0)
  at2 = convergence.judge(m.losses(1), m.learning_rates(1), convergence.ConvergenceConfig(delta=0.02), 2)
  assert not at2["converged"] and at2["datasets"]["a"]["relative_improvement"] == pytest.approx(0.5)
  first = convergence.judge(m.losses(1), m.learning_rates(1), convergence.ConvergenceConfig(), 1)
  assert not first["converged"] and "fewer than 2 epochs" in first["datasets"]["a"]["reason"]


def test_a_decayed_learning_rate_does_not_pass_for_convergence():
  # The same 1% improvement at a tenth of the peak rate is a 10% improvement per unit of rate.
  losses = {1: {"a": 1.0}, 2: {"a": 0.99}}
  peak = convergence.judge(
    _monitor(losses, {1: 1e-3, 2: 1e-3}).losses(1), {1: 1e-3, 2: 1e-3}, convergence.ConvergenceConfig(delta=0.02)
  )
  decayed = convergence.judge(
    _monitor(losses, {1: 1e-3, 2: 1e-4}).losses(1), {1: 1e-3, 2: 1e-4}, convergence.ConvergenceConfig(delta=0.02)
  )
  assert peak["converged"] and not decayed["converged"]
  assert decayed["datasets"]["a"]["adjusted_improvement"] == pytest.approx(0.1)
  # A loss already near zero is converged by the absolute tolerance whatever the rate.
  tiny = {1: {"a": 2e-4}, 2: {"a": 1e-4}}
  assert convergence.judge(
    _monitor(tiny, {1: 1.0, 2: 0.1}).losses(1),
    {1: 1.0, 2: 0.1},
    convergence.ConvergenceConfig(delta=0.02, min_delta=1e-3),
  )["converged"]


def test_monitor_state_round_trips_through_json():
  m = _monitor({1: {"a": 2.0}, 2: {"a": 1.5}}, {1: 1e-3, 2: 5e-4})
  restored = convergence.Monitor(m.config)
  restored.restore(json.loads(json.dumps(m.state())))
  assert restored.losses(1) == m.losses(1) and restored.learning_rates(1) == m.learning_rates(1)


def test_warmup_stable_decay_schedule_values():
  opt = OptimizerConfig(learning_rate=1.0, warmup_steps=2, end_lr_ratio=0.1, decay="cosine")
  schedule = optim.make_schedule(opt, [10, 6], [4, 0])
  values = [float(schedule(i)) for i in range(16)]
  # phase 1: warmup 0, 0.5, then the peak held until the last 4 steps decay linearly to 0.1
  np.testing.assert_allclose(values[:10], [0, 0.5, 1, 1, 1, 1, 1, 0.775, 0.55, 0.325], atol=1e-6)
  # phase 2: its own warmup, then constant (undecided: no decay yet)
  np.testing.assert_allclose(values[10:], [0, 0.5, 1, 1, 1, 1], atol=1e-6)
  fixed = optim.make_schedule(opt, [10])  # without decay steps the configured cosine runs as before
  assert float(fixed(9)) < 0.5


@pytest.mark.parametrize(
  "field, overrides, message",
  [
    ("sft.convergence.max_epochs", {"max_epochs": 1}, "below epochs=2"),
    ("sft.convergence.delta", {"delta": 0.0}, "must be > 0"),
    ("sft.convergence.max_epochs", {"max_epochs": -1}, "must be >= 0"),
  ],
)
def test_bad_convergence_settings_name_the_field(tmp_path, field, overrides, message):
  paths = sft_data.make_inputs(str(tmp_path / "data"), per_dataset=4)
  config = sft_data.sft_config(paths)
  config.sft.convergence.update(overrides)
  with pytest.raises(ConfigError) as e:
    config_lib.load(config)
  assert e.value.field == field and message in str(e.value)


def test_training_to_convergence_and_progressive_epochs_exclude_each_other(tmp_path):
  paths = sft_data.make_inputs(str(tmp_path / "data"), per_dataset=4)
  config = sft_data.sft_config(paths)
  config.sft.convergence.max_epochs = 5
  config.sft.progressive.enabled = True
  config.data.dev_fraction = 0.2
  with pytest.raises(ConfigError, match="use one"):
    config_lib.load(config)


def test_a_window_compares_means_of_epochs():
  losses = {1: {"a": 2.0}, 2: {"a": 1.0}, 3: {"a": 1.2}, 4: {"a": 0.99}}  # epoch 3 is a noisy spike
  m = _monitor(losses, {e: 1e-3 for e in losses})
  one = convergence.judge(m.losses(1), m.learning_rates(1), convergence.ConvergenceConfig(delta=0.02), 3)
  two = convergence.judge(m.losses(1), m.learning_rates(1), convergence.ConvergenceConfig(delta=0.02, window=2), 4)
  assert one["converged"]  # a loss that went up passes a one-epoch comparison
  assert two["datasets"]["a"]["previous_loss"] == pytest.approx(1.5) and two["datasets"]["a"]["loss"] == pytest.approx(
    1.095
  )
  assert two["datasets"]["a"]["relative_improvement"] == pytest.approx(0.27) and not two["converged"]
  early = convergence.judge(m.losses(1), m.learning_rates(1), convergence.ConvergenceConfig(window=2), 3)
  assert not early["converged"] and "fewer than 4" in early["datasets"]["a"]["reason"]
