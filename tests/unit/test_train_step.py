"""The training step: per-example statistics, and sharded / accumulated steps equal to one device."""

import dataclasses

import jax
import numpy as np
import pytest

from ilp import parallel
from ilp.data import batches
from ilp.data.tokenize import TokenizedExample
from ilp.model import build
from ilp.model.config import ModelConfig
from ilp.scoring.statistics import make_eval_step
from ilp.train import optim
from ilp.train.config import OptimizerConfig
from ilp.train.step import make_train_step

CFG = ModelConfig(
  family="llama",
  vocab_size=64,
  hidden_size=32,
  intermediate_size=64,
  num_layers=2,
  num_heads=4,
  num_kv_heads=2,
  head_dim=8,
)
OPT = OptimizerConfig(
  learning_rate=3e-3,
  warmup_steps=3,
  warmup_ratio=0.0,
  decay="cosine",
  end_lr_ratio=0.1,
  weight_decay=0.01,
  grad_clip_norm=1.0,
)


def _examples(n, seed=0):
  rng = np.random.default_rng(seed)
  out = []
  for i in range(n):
    prompt, response = int(rng.integers(2, 9)), int(rng.integers(1, 7))
    out.append(TokenizedExample(i, rng.integers(3, CFG.vocab_size, prompt + response).astype(np.int32), prompt))
  return out


def _reference_stats(graphdef, params, example):
  """Direct recomputation for one unpadded example with numpy."""
  logits, _ = jax.jit(build.forward)(graphdef, params, example.tokens[None])
  logits = np.asarray(logits[0], np.float64)
  targets = example.tokens[1:]
  rows = logits[np.arange(example.prompt_length - 1, example.length - 1)]
  gold_ids = targets[example.prompt_length - 1 :]
  log_probs = (
    rows - np.log(np.exp(rows - rows.max(1, keepdims=True)).sum(1, keepdims=True)) - rows.max(1, keepdims=True)
  )
  nll = -log_probs[np.arange(len(gold_ids)), gold_ids]
  gold = rows[np.arange(len(gold_ids)), gold_ids]
  others = rows.copy()
  others[np.arange(len(gold_ids)), gold_ids] = -np.inf
  margin = gold - others.max(1)
  correct = rows.argmax(1) == gold_ids
  return {
    "nll_sum": nll.sum(),
    "tokens": len(gold_ids),
    "token_acc": correct.mean(),
    "exact_match": float(correct.all()),
    "gold_prob": np.exp(-nll).mean(),
    "margin_mean": margin.mean(),
    "margin_min": margin.min(),
  }


def test_per_example_stats_match_direct_recomputation():
  mesh = parallel.make_mesh((1, 1, 1), jax.devices()[:1])
  graphdef, params = build.init_params(CFG, mesh, seed=1)
  examples = _examples(6)
  # Make one example certainly exact-match: its response is what the model predicts greedily.
  first = examples[0]
  tokens = first.tokens.copy()
  for t in range(first.prompt_length, first.length):
    logits, _ = jax.jit(build.forward)(graphdef, params, tokens[None, :t])
    tokens[t] = int(np.argmax(logits[0, -1]))
  examples[0] = TokenizedExample(0, tokens, first.prompt_length)
  rows = np.array([0, 1, 2, 3, 4, 5, -1, -1])
  batch = batches.assemble(examples, rows, 16, pad_id=0)
  stats = jax.device_get(jax.jit(make_eval_step(graphdef))(params, batch))
  for r, ex in enumerate(examples):
    ref = _reference_stats(graphdef, params, ex)
    for name, value in ref.items():
      np.testing.assert_allclose(stats[name][r], value, rtol=2e-5, atol=2e-5, err_msg=f"{name} row {r}")
  assert stats["exact_match"][0] == 1.0 and stats["margin_min"][0] > 0
  assert stats["tokens"][6] == 0  # padding rows carry no supervision

  # The train step reports the same statistics (pre-update forward) as the eval step.
  schedule = optim.make_schedule(OPT, [10])
  optimizer = optim.make_optimizer(OPT, schedule)
  state = optim.create_state(
    params,
    optimizer,
    optim.state_shardings(
      parallel.state_shardings(build.abstract_model(CFG)[1], mesh, parallel.DEFAULT_RULES),
      optimizer,
      build.abstract_model(CFG)[1],
      mesh,
    ),
  )
  _, _, train_stats = jax.jit(make_train_step(graphdef, optimizer, schedule))(state, batch)
  for name in stats:
    np.testing.assert_allclose(np.asarray(train_stats[name]), stats[name], rtol=1e-6, atol=1e-6)


def _run_steps(mesh_shape, accum, steps=20):
  devices = jax.devices()[:1] if mesh_shape == (1, 1, 1) else None
  mesh = parallel.make_mesh(mesh_shape, devices)
  _, abstract = build.abstract_model(CFG)
  graphdef, params = build.init_params(CFG, mesh, seed=0)
  schedule = optim.make_schedule(OPT, [steps])
  optimizer = optim.make_optimizer(OPT, schedule)
  shardings = optim.state_shardings(
    parallel.state_shardings(abstract, mesh, parallel.DEFAULT_RULES), optimizer, abstract, mesh
  )
  state = optim.create_state(params, optimizer, shardings)
  batch_sharding = parallel.batch_sharding(mesh, (8, 1))
  with parallel.sharding_context(mesh):
    step = jax.jit(
      make_train_step(graphdef, optimizer, schedule, accum_steps=accum),
      in_shardings=(shardings, batch_sharding),
      donate_argnums=0,
    )
    examples = _examples(40, seed=3)
    stream = batches.build_stream(
      np.array([e.length for e in examples]), [batches.PhaseSpec("s", np.arange(40), 4)], (8, 16), 8, seed=0
    )
    losses = []
    for planned in stream.batches[:steps]:
      host = batches.assemble(examples, planned.rows, planned.length, 0)
      state, metrics, _ = step(state, {k: jax.device_put(v, batch_sharding) for k, v in host.items()})
      losses.append(float(metrics["loss"]))
  return np.array(losses), jax.device_get(state.params)


@pytest.fixture(scope="module")
def single_device_run():
  return _run_steps((1, 1, 1), accum=1)


@pytest.mark.mesh
@pytest.mark.parametrize("mesh_shape, accum", [((8, 1, 1), 1), ((1, 8, 1), 1), ((2, 2, 2), 1), ((2, 2, 2), 2)])
def test_sharded_training_matches_single_device(mesh_shape, accum, single_device_run):
  ref_losses, ref_params = single_device_run
  losses, params = _run_steps(mesh_shape, accum)
  assert len(losses) == 20 and ref_losses[-1] < ref_losses[0]
  np.testing.assert_allclose(losses, ref_losses, rtol=1e-5)
  for (path, a), (_, b) in zip(build.flat_variables(params), build.flat_variables(ref_params)):
    np.testing.assert_allclose(
      np.asarray(a.get_value()), np.asarray(b.get_value()), rtol=1e-5, atol=1e-7, err_msg=str(path)
    )


@pytest.mark.parametrize("tied", [False, True])
def test_head_in_vocabulary_blocks_equals_one_matmul(tied):
  """The training step's CPU head (vocabulary column blocks, uneven last block) gives the same
  logits and gradients as one matmul."""
  import dataclasses

  import jax.numpy as jnp
  from flax import nnx

  cfg = dataclasses.replace(CFG, tie_embeddings=tied)
  mesh = parallel.make_mesh((1, 1, 1), jax.devices()[:1])
  graphdef, params = build.init_params(cfg, mesh, seed=2)
  x = jax.random.normal(jax.random.key(0), (3, 5, cfg.hidden_size))

  def loss(p, block):
    logits = nnx.merge(graphdef, p).head(x, block)
    return jnp.sum(jnp.sin(logits)), logits

  (_, whole), grads_whole = jax.value_and_grad(loss, has_aux=True)(params, 0)
  (_, blocked), grads_blocked = jax.value_and_grad(loss, has_aux=True)(params, 10)  # 6 blocks of 10 + 4
  np.testing.assert_allclose(blocked, whole, atol=1e-6)
  for a, b in zip(jax.tree.leaves(grads_blocked), jax.tree.leaves(grads_whole)):
    np.testing.assert_allclose(a, b, atol=1e-6)


def test_partial_fine_tuning_updates_only_the_matching_variables():
  mesh = parallel.make_mesh((1, 1, 1), jax.devices()[:1])
  _, abstract = build.abstract_model(CFG)
  graphdef, params = build.init_params(CFG, mesh, seed=0)
  before = jax.tree.map(np.asarray, params)
  config = OptimizerConfig(learning_rate=1e-2, warmup_steps=0, weight_decay=0.5)
  schedule = optim.make_schedule(config, [10])
  optimizer = optim.make_optimizer(config, schedule, ("attn/[qkvo]$",))
  shardings = optim.state_shardings(
    parallel.state_shardings(abstract, mesh, parallel.DEFAULT_RULES), optimizer, abstract, mesh
  )
  state = optim.create_state(params, optimizer, shardings)
  examples = _examples(8, seed=1)
  batch = batches.assemble(examples, np.arange(8), 16, pad_id=0)
  step = jax.jit(make_train_step(graphdef, optimizer, schedule))
  for _ in range(3):
    state, _, _ = step(state, batch)
  names = optim.trainable_mask(state.params, ("attn/[qkvo]$",))
  changed = jax.tree.map(lambda a, b: bool(np.any(np.asarray(a) != b)), state.params, before)
  flags = dict(
    zip(
      [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_leaves_with_path(names)],
      zip(jax.tree.leaves(names), jax.tree.leaves(changed)),
    )
  )
  assert any(t for t, _ in flags.values()) and not all(t for t, _ in flags.values())
  for path, (trains, moved) in flags.items():
    assert trains == ("attn" in path and "norm" not in path), path
    assert moved == trains, path  # frozen variables: no gradient step and no weight decay


def test_decay_to_init_pulls_toward_the_starting_weights():
  """Brute force: with zero gradients Adam's update is zero, so each step moves a decayed matrix by
  -lr * wd * (w - w0) (toward its start, not toward zero); norms and biases do not move."""
  mesh = parallel.make_mesh((1, 1, 1), jax.devices()[:1])
  _, abstract = build.abstract_model(CFG)
  _, params = build.init_params(CFG, mesh, seed=0)
  config = OptimizerConfig(
    learning_rate=0.1, warmup_steps=0, decay="constant", weight_decay=0.5, decay_to="init", grad_clip_norm=0.0
  )
  optimizer = optim.make_optimizer(config, optim.make_schedule(config, [10]))
  state = optimizer.init(params)
  moved = jax.tree.map(lambda w: w + 1.0, params)  # 1 away from the start everywhere
  zeros = jax.tree.map(np.zeros_like, params)
  updates, _ = optimizer.update(zeros, state, moved)
  decayed = optim.decay_mask(params)
  for u, d in zip(jax.tree.leaves(updates), jax.tree.leaves(decayed)):
    np.testing.assert_allclose(np.asarray(u), -0.1 * 0.5 * 1.0 if d else 0.0, rtol=1e-6)
  zero_target = optim.make_optimizer(dataclasses.replace(config, decay_to="zero"), optim.make_schedule(config, [10]))
  updates, _ = zero_target.update(zeros, zero_target.init(params), moved)
  for u, w, d in zip(jax.tree.leaves(updates), jax.tree.leaves(moved), jax.tree.leaves(decayed)):
    np.testing.assert_allclose(np.asarray(u), -0.1 * 0.5 * np.asarray(w) if d else 0.0, rtol=1e-5, atol=1e-7)


def test_decay_to_names_a_known_target():
  from ilp.typed import ConfigError

  with pytest.raises(ConfigError, match="decay_to"):
    OptimizerConfig(decay_to="base")
