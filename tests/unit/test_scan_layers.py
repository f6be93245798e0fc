"""Scanned layers (`model.scan_layers`) and remat (`model.remat`) against the unrolled model.

Both layouts are read from one HF checkpoint, so every comparison is between the same weights:
logits, cached decoding, the training step and its gradients, the HF export, orbax checkpoints
and sharded forwards must not depend on how the layers run.
"""

import filecmp
import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from ilp import parallel, typed
from ilp.data import batches
from ilp.data.tokenize import TokenizedExample
from ilp.model import build, checkpoint, hf
from ilp.model.config import ModelConfig
from ilp.model.kv_cache import KVCache
from ilp.sampling.sampler import Sampler, SamplingConfig
from ilp.train import optim
from ilp.train.step import TrainState, make_train_step
from tests import hf_models

FAMILIES = ("llama", "qwen2", "olmo2")
LAYERS = hf_models.BASE["num_hidden_layers"]
TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def one_device():
  return parallel.make_mesh((1, 1, 1), jax.devices()[:1])


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
  """family -> an HF checkpoint directory with random weights."""
  out = {}
  for family in FAMILIES:
    out[family] = str(tmp_path_factory.mktemp(family))
    hf_models.save_hf_model(family, out[family])
  return out


def _both(directory, mesh, **options):
  """(unrolled, scanned): each a (cfg, graphdef, params) read from the same HF directory."""
  return tuple(hf.load_hf(directory, mesh, scan_layers=scan, **options) for scan in (False, True))


def _max_gap(a, b) -> float:
  return float(np.abs(np.asarray(a) - np.asarray(b)).max())


def _unstacked(params) -> dict:
  """A scanned model's flat parameters as numpy, keyed like the unrolled model's: one per layer."""
  out = {}
  for path, var in build.flat_variables(params):
    value = np.asarray(var.get_value())
    if path[0] == "layers" and not isinstance(path[1], int):
      out.update({("layers", i) + path[1:]: value[i] for i in range(LAYERS)})
    else:
      out[path] = value
  return out


def _assert_same_params(expected, got, atol):
  """Two states (either layout) hold the same parameters within `atol`."""
  expected, got = _unstacked(expected), _unstacked(got)
  assert got.keys() == expected.keys()
  for path, value in expected.items():
    np.testing.assert_allclose(got[path], value, atol=atol, rtol=0, err_msg=str(path))


@pytest.mark.mesh
def test_stacked_parameters_carry_a_replicated_layers_axis(checkpoints, one_device):
  (_, _, unrolled), (cfg, _, scanned) = _both(checkpoints["olmo2"], one_device)
  _assert_same_params(unrolled, scanned, atol=0)  # import stacks the per-layer tensors bit for bit
  _, abstract = build.abstract_model(cfg)
  mesh = parallel.make_mesh((1, 8, 1))
  shardings = dict(build.flat_variables(parallel.state_shardings(abstract, mesh, parallel.DEFAULT_RULES)))
  for path, var in build.flat_variables(abstract):
    if path[0] == "layers":
      assert parallel.variable_axes(var)[0] == "layers" and var.shape[0] == LAYERS, path
      assert shardings[path].get_value().spec[0] is None, path
  assert shardings[("layers", "mlp", "gate")].get_value().spec[1] == "fsdp"


@pytest.mark.parametrize("family", FAMILIES)
def test_scanned_logits_match_unrolled(family, checkpoints, one_device):
  (cfg, graphdef, params), (_, sgraphdef, sparams) = _both(checkpoints[family], one_device)
  tokens, mask = hf_models.padded_batch([12, 7, 1], 12, cfg.vocab_size, left=True)
  real = mask.astype(bool)
  full, _ = jax.jit(build.forward)(graphdef, params, tokens, mask=mask)
  scanned, _ = jax.jit(build.forward)(sgraphdef, sparams, tokens, mask=mask)
  assert _max_gap(scanned[real], full[real]) <= TOLERANCE


def test_cached_decode_and_sampler_match_unrolled(checkpoints, one_device):
  """Greedy decoding through each layout's cache (prefill, then one token at a time): the same
  tokens and logits; the sampler (tiled cache, while-loop decode) reproduces those tokens."""
  models = _both(checkpoints["olmo2"], one_device)
  prompts, prompt_mask = hf_models.padded_batch([8, 5, 1], 8, models[0][0].vocab_size, left=True)
  fwd = jax.jit(build.forward)
  steps, decoded = 4, []
  for cfg, graphdef, params in models:
    logits, cache = fwd(graphdef, params, prompts, mask=prompt_mask, cache=KVCache.init(cfg, 3, 8 + steps))
    pieces, tokens = [logits], []
    for _ in range(steps):
      tokens.append(np.asarray(pieces[-1][:, -1]).argmax(-1).astype(np.int32))
      logits, cache = fwd(graphdef, params, tokens[-1][:, None], cache=cache)
      pieces.append(logits)
    decoded.append((np.concatenate(pieces, axis=1), np.stack(tokens, axis=1)))
  assert cache.keys.shape[:2] == (LAYERS, 3) and cache.values.shape[:2] == (LAYERS, 3)  # stacked
  (logits, tokens), (slogits, stokens) = decoded
  np.testing.assert_array_equal(stokens, tokens)
  real = np.concatenate([prompt_mask, np.ones((3, steps), np.int32)], axis=1).astype(bool)
  assert _max_gap(slogits[real], logits[real]) <= TOLERANCE

  scfg, sgraphdef, sparams = models[1]
  samples = Sampler(sgraphdef, scfg, one_device)(
    sparams, prompts, prompt_mask, seed=0, sampling=SamplingConfig(num_samples=2, max_new_tokens=steps, temperature=0.0)
  )
  np.testing.assert_array_equal(samples.tokens, np.repeat(tokens[:, None], 2, axis=1))
  assert len(set(map(tuple, tokens))) > 1  # the prompts lead to different continuations


def _sgd_step(graphdef, params, batch):
  """(metrics, parameters) after one training step with SGD at learning rate 1: the new parameters
  are the old minus the gradients, so comparing them compares the gradients."""
  optimizer = optax.sgd(1.0)
  step = jax.jit(make_train_step(graphdef, optimizer, optax.constant_schedule(1.0), with_stats=False))
  state, metrics, _ = step(TrainState(jnp.zeros((), jnp.int32), params, optimizer.init(params)), batch)
  return metrics, state.params


@pytest.fixture(scope="module")
def training(checkpoints, one_device):
  """The llama models of both layouts, one batch, and the unrolled model's training step on it."""
  models = _both(checkpoints["llama"], one_device)
  rng = np.random.default_rng(0)
  examples = [
    TokenizedExample(i, rng.integers(3, models[0][0].vocab_size, n).astype(np.int32), n // 2)
    for i, n in enumerate([10, 7, 12, 5])
  ]
  batch = batches.assemble(examples, np.arange(4), 12, pad_id=0)
  _, graphdef, params = models[0]
  return models, batch, _sgd_step(graphdef, params, batch)


def _assert_same_step(expected, got):
  (metrics, params), (smetrics, sparams) = expected, got
  for name in ("loss", "grad_norm"):
    assert abs(float(smetrics[name]) - float(metrics[name])) <= TOLERANCE, name
  _assert_same_params(params, sparams, atol=TOLERANCE)


def test_training_step_matches_unrolled(training):
  """The same loss, gradient norm and gradients."""
  models, batch, expected = training
  _, graphdef, params = models[1]
  _assert_same_step(expected, _sgd_step(graphdef, params, batch))


@pytest.mark.parametrize("remat, scan", [("full", False), ("dots_saveable", True)])
def test_remat_policies_keep_the_gradients(remat, scan, training):
  """Each policy in one layout (the test below shows remat applies in both)."""
  models, batch, expected = training
  cfg, _, params = models[scan]
  graphdef, _ = build.abstract_model(cfg.replace(remat=remat))
  _assert_same_step(expected, _sgd_step(graphdef, params, batch))


def test_weight_decay_sees_through_the_layers_axis(training):
  """A stacked norm scale [layers, embed] is 2-D but no matrix: both layouts decay the same parameters."""
  (_, _, params), (_, _, sparams) = training[0]
  decays = lambda state: dict(build.flat_variables(optim.decay_mask(state)))  # path -> bool
  expected, got = decays(params), decays(sparams)
  assert {path: got[("layers",) + path[2:] if path[0] == "layers" else path] for path in expected} == expected
  assert not expected[("layers", 0, "attn_norm", "scale")] and expected[("layers", 1, "mlp", "up")]


@pytest.mark.parametrize("scan", [False, True])
def test_full_remat_recomputes_the_layers_in_the_backward_pass(scan):
  """`full` keeps no layer activation, so the gradient program runs every layer's matmuls again."""
  cfg = ModelConfig(
    family="llama",
    vocab_size=32,
    hidden_size=16,
    intermediate_size=32,
    num_layers=2,
    num_heads=2,
    num_kv_heads=1,
    head_dim=8,
    scan_layers=scan,
  )
  tokens = jnp.zeros((1, 4), jnp.int32)

  def dots(remat: str) -> int:
    graphdef, abstract = build.abstract_model(cfg.replace(remat=remat))
    params = jax.tree.map(lambda v: jnp.zeros(v.shape, v.dtype), abstract)
    loss = lambda p: build.forward(graphdef, p, tokens)[0].sum()
    return str(jax.make_jaxpr(jax.grad(loss))(params)).count("dot_general")

  assert dots("full") > dots("none")


@pytest.mark.parametrize("family", FAMILIES)
def test_hf_export_of_scanned_model_is_the_unrolled_export(family, checkpoints, one_device, tmp_path):
  (cfg, _, params), (scfg, _, sparams) = _both(checkpoints[family], one_device)
  shard = 40_000 if family == "qwen2" else 2 << 30  # one family through the multi-file layout
  hf.save_hf(cfg, params, str(tmp_path / "unrolled"), max_shard_bytes=shard)
  hf.save_hf(scfg, sparams, str(tmp_path / "scanned"), max_shard_bytes=shard)
  names = sorted(os.listdir(tmp_path / "unrolled"))
  assert names == sorted(os.listdir(tmp_path / "scanned"))
  _, mismatch, errors = filecmp.cmpfiles(tmp_path / "unrolled", tmp_path / "scanned", names, shallow=False)
  assert not mismatch and not errors


@pytest.mark.mesh
def test_orbax_checkpoint_round_trips_scanned_params(checkpoints, one_device, tmp_path):
  (_, _, unrolled), (cfg, _, params) = _both(checkpoints["llama"], one_device, remat="dots_saveable")
  checkpoint.save_params(str(tmp_path / "ckpt"), cfg, params)
  cfg2, _, restored = checkpoint.load_params(str(tmp_path / "ckpt"), parallel.make_mesh((2, 2, 2)))
  assert cfg2 == cfg and cfg2.scan_layers and cfg2.remat == "dots_saveable"
  _assert_same_params(unrolled, restored, atol=0)


@pytest.mark.mesh
def test_sharded_scanned_forward_matches_single_device(checkpoints, one_device):
  cfg, graphdef, params = hf.load_hf(checkpoints["qwen2"], one_device, scan_layers=True)
  tokens, mask = hf_models.padded_batch([16, 12, 9, 16, 3, 7, 16, 1], 16, cfg.vocab_size, left=True)
  expected, _ = jax.jit(build.forward)(graphdef, params, tokens, mask=mask)
  mesh = parallel.make_mesh((2, 2, 2))
  shardings = parallel.state_shardings(build.abstract_model(cfg)[1], mesh, parallel.DEFAULT_RULES)
  batch = parallel.batch_sharding(mesh, tokens.shape)
  with parallel.sharding_context(mesh):
    fwd = jax.jit(functools.partial(build.forward, graphdef), in_shardings=(shardings, batch, None, batch))
    got, _ = fwd(jax.device_put(params, shardings), tokens, None, mask)
  assert _max_gap(got, expected) <= TOLERANCE


def test_model_config_checks_the_layer_knobs():
  fields = dict(
    family="llama",
    vocab_size=32,
    hidden_size=16,
    intermediate_size=32,
    num_layers=2,
    num_heads=2,
    num_kv_heads=1,
    head_dim=8,
  )
  with pytest.raises(typed.ConfigError, match="'model.remat': 'some' is not one of"):
    typed.build(ModelConfig, {**fields, "remat": "some"}, "model")
  with pytest.raises(typed.ConfigError, match="'model.scan_layers': expected bool"):
    typed.build(ModelConfig, {**fields, "scan_layers": 1}, "model")
  saved = ModelConfig(**fields, scan_layers=True, remat="full")
  assert ModelConfig.from_dict(saved.to_dict()) == saved
  assert ModelConfig.from_dict({**fields, "rope": {}}) == ModelConfig(**fields)  # configs saved before the knobs
