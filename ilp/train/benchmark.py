"""The sharded training state the training benchmarks time (`scripts/bench_train.py`,
`scripts/bench_compile.py`): one construction, so both measure the same optimizer, shardings and
step. A fresh random model with a constant learning rate: no checkpoint or plan to load, unlike
the training loop's state."""

from __future__ import annotations

from typing import Any, NamedTuple

import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding

from ilp import parallel
from ilp.model import build
from ilp.model.config import ModelConfig
from ilp.train import optim
from ilp.train.config import OptimizerConfig

OPT = OptimizerConfig(learning_rate=1e-4, warmup_steps=0, warmup_ratio=0.0, decay="constant", end_lr_ratio=1.0)


class TrainSetup(NamedTuple):
  mesh: Mesh
  graphdef: nnx.GraphDef
  optimizer: optax.GradientTransformation
  schedule: optax.Schedule
  shardings: Any
  state: Any
  batch_sharding: NamedSharding


def train_setup(cfg: ModelConfig, batch_size: int) -> TrainSetup:
  """A freshly initialised model and AdamW state, all devices on the fsdp axis."""
  mesh = parallel.make_mesh((1, -1, 1))
  graphdef, params = build.init_params(cfg, mesh, seed=0)
  _, abstract = build.abstract_model(cfg)
  schedule = optim.make_schedule(OPT, [1000])
  optimizer = optim.make_optimizer(OPT, schedule)
  shardings = optim.state_shardings(
    parallel.state_shardings(abstract, mesh, parallel.DEFAULT_RULES), optimizer, abstract, mesh
  )
  return TrainSetup(
    mesh,
    graphdef,
    optimizer,
    schedule,
    shardings,
    optim.create_state(params, optimizer, shardings),
    parallel.batch_sharding(mesh, (batch_size, 1)),
  )
