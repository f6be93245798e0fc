"""The training loop's hook registry: cadences by step count and by the (live) plan."""

import numpy as np

from ilp.data import batches as batching
from ilp.train import hooks


def _plan() -> hooks.Plan:
  phases = [batching.PhaseSpec("p1", np.arange(16), 2), batching.PhaseSpec("p2", np.arange(16, 32), 1)]
  return hooks.Plan(batching.build_stream(np.full(32, 10), phases, (16,), 8, seed=0, eval_every=3), (), None)


def _steps(plan: hooks.Plan):
  return [hooks.StepInfo(s, plan.stream.batches[s - 1], {}, {}, None) for s in range(1, plan.total + 1)]


def test_a_count_fires_on_its_multiples_and_the_last_step_of_the_plan_as_it_stands():
  plan = _plan()
  fired = {"every": [], "ends": []}
  run = hooks.Hooks(plan)
  run.add(lambda info: fired["every"].append(info.step), every=3)
  run.add(lambda info: fired["ends"].append(info.step), every=plan.ends_phase)
  for info in _steps(plan):
    run(info)
  assert plan.total == 6 and plan.schedule == ((4, 2), None)
  assert fired == {"every": [3, 6], "ends": [4]}
  assert plan.epoch_ends == {2, 4, 6} and sorted(plan.evals_at) == [0, 2, 3, 4, 6]

  del plan.stream.batches[5:]  # a control shortened the stream: its new last step fires
  plan.reread()
  fired["every"].clear()
  run(_steps(plan)[-1])
  assert fired["every"] == [5] and plan.schedule == ((4, 1), None)
