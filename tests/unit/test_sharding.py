"""Sharded forward on 8 fake CPU devices equals the single-device forward; fsdp really shards."""

import functools

import jax
import numpy as np
import pytest

from ilp import machine, parallel
from ilp.model import build
from ilp.model.config import ModelConfig
from tests import hf_models

pytestmark = pytest.mark.mesh  # every test here needs 8 devices

CFG = ModelConfig(
  family="qwen2",
  vocab_size=128,
  hidden_size=64,
  intermediate_size=128,
  num_layers=2,
  num_heads=4,
  num_kv_heads=2,
  head_dim=16,
  qkv_bias=True,
)
SMALL = 256  # parameters with more elements than this must not be fully replicated on an fsdp mesh


def _forward(graphdef, state, mesh, tokens, mask):
  shardings = parallel.state_shardings(build.abstract_model(CFG)[1], mesh, parallel.DEFAULT_RULES)
  batch = parallel.batch_sharding(mesh, tokens.shape)
  state = jax.device_put(state, shardings)
  with parallel.sharding_context(mesh):
    fwd = jax.jit(functools.partial(build.forward, graphdef), in_shardings=(shardings, batch, None, batch))
    logits, _ = fwd(state, tokens, None, mask)
  return np.asarray(logits)


@pytest.fixture(scope="module")
def reference():
  mesh = parallel.make_mesh((1, 1, 1), jax.devices()[:1])
  graphdef, state = build.init_params(CFG, mesh, seed=0)
  tokens, mask = hf_models.padded_batch([16, 12, 9, 16, 3, 7, 16, 1], 16, CFG.vocab_size, left=True)
  logits, _ = jax.jit(build.forward)(graphdef, state, tokens, mask=mask)
  return graphdef, jax.device_get(state), tokens, mask, np.asarray(logits)


@pytest.mark.parametrize("shape", [(8, 1, 1), (2, 4, 1), (2, 2, 2), (1, 8, 1)])
def test_sharded_forward_matches_single_device(shape, reference):
  graphdef, state, tokens, mask, expected = reference
  mesh = parallel.make_mesh(shape)
  got = _forward(graphdef, state, mesh, tokens, mask)
  np.testing.assert_allclose(got, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("shape", [(2, 4, 1), (1, -1, 1)])
def test_params_created_sharded_and_identical(shape, reference):
  """Sharded init places large parameters across fsdp and draws the same values as one device."""
  _, single_state, *_ = reference
  mesh = parallel.make_mesh(shape)
  _, state = build.init_params(CFG, mesh, seed=0)
  for (path, var), (_, ref) in zip(build.flat_variables(state), build.flat_variables(single_state)):
    array = var.get_value()
    if array.size > SMALL:
      assert not array.sharding.is_fully_replicated, f"{path} {array.shape} is replicated"
      shard = array.addressable_shards[0].data
      assert shard.size * mesh.shape["fsdp"] <= array.size, f"{path} is not split over fsdp"
    np.testing.assert_array_equal(np.asarray(array), np.asarray(ref.get_value()), err_msg=str(path))


def test_logical_rules_fall_back_when_not_divisible():
  mesh = parallel.make_mesh((1, 4, 2))
  spec = parallel.logical_to_spec(("vocab", "embed"), (6, 64), mesh, parallel.DEFAULT_RULES)
  assert tuple(spec) == ("tensor", "fsdp")
  spec = parallel.logical_to_spec(("vocab", "embed"), (5, 6), mesh, parallel.DEFAULT_RULES)
  assert tuple(spec) == (None, None)
  spec = parallel.logical_to_spec(("batch", None), (8, 3), parallel.make_mesh((2, 4, 1)), parallel.DEFAULT_RULES)
  assert tuple(spec) == (("data", "fsdp"), None)


@pytest.mark.parametrize(
  "shape, message",
  [((3, -1, 1), "does not divide"), ((-1, -1, 1), "at most one"), ((2, 2), "3 entries"), ((1, 4, 1), "uses 4 devices")],
)
def test_bad_mesh_shapes_are_rejected(shape, message):
  with pytest.raises(machine.MeshError, match=message):
    parallel.make_mesh(shape)
