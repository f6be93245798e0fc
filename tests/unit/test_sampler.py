"""The batched KV-cache sampler: greedy equals HF generate, sampling follows the model, no recompiles."""

import jax
import numpy as np
import pytest
import scipy.stats
import torch

from ilp import parallel
from ilp.model import build, hf
from ilp.sampling.sampler import Sampler, SamplingConfig, categorical, left_pad
from tests import hf_models

PROMPT_LENGTHS = [9, 4, 1, 6]


def _prompts(vocab, seed=0):
  rng = np.random.default_rng(seed)
  return [rng.integers(3, vocab, n).astype(np.int32) for n in PROMPT_LENGTHS]


@pytest.fixture(scope="module")
def one_device():
  return parallel.make_mesh((1, 1, 1), jax.devices()[:1])


@pytest.mark.parametrize("variant", ["llama", "qwen2_tied", "olmo2"])
def test_greedy_matches_hf_generate(variant, tmp_path, one_device):
  model = hf_models.save_hf_model(variant, str(tmp_path))
  cfg, graphdef, params = hf.load_hf(str(tmp_path), one_device)
  tokens, mask = left_pad(_prompts(cfg.vocab_size), 10, pad_id=0)
  steps = 12
  config = SamplingConfig(num_samples=1, max_new_tokens=steps, temperature=0.0, stop_tokens=(2,))
  ours = Sampler(graphdef, cfg, one_device)(params, tokens, mask, seed=0, sampling=config)
  with torch.no_grad():
    ref = model.generate(
      input_ids=torch.as_tensor(tokens, dtype=torch.long),
      attention_mask=torch.as_tensor(mask, dtype=torch.long),
      do_sample=False,
      max_new_tokens=steps,
      eos_token_id=2,
      pad_token_id=0,
    ).numpy()[:, tokens.shape[1] :]
  ref = np.pad(ref, ((0, 0), (0, steps - ref.shape[1])))
  np.testing.assert_array_equal(ours.tokens[:, 0], ref)
  stopped = (ref == 2).any(axis=1)
  np.testing.assert_array_equal(ours.stopped[:, 0], stopped)
  assert len(set(map(tuple, ref))) > 1  # prompts lead to different continuations


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, one_device):
  directory = str(tmp_path_factory.mktemp("tiny"))
  hf_models.save_hf_model("llama", directory, seed=3)
  return hf.load_hf(directory, one_device)


def test_temperature_sampling_follows_the_model_distribution(tiny, one_device):
  cfg, graphdef, params = tiny
  prompt = _prompts(cfg.vocab_size)[:1]
  tokens, mask = left_pad(prompt, 9, 0)
  sampler = Sampler(graphdef, cfg, one_device)
  temperature = 1.5
  out = sampler(
    params, tokens, mask, seed=1, sampling=SamplingConfig(num_samples=4000, max_new_tokens=1, temperature=temperature)
  )
  logits, _ = jax.jit(build.forward)(graphdef, params, tokens, mask=mask)
  probs = np.asarray(jax.nn.softmax(np.asarray(logits[0, -1], np.float64) / temperature))
  counts = np.bincount(out.tokens[0, :, 0], minlength=cfg.vocab_size)
  expected = probs * counts.sum()
  big = expected >= 5
  observed, expected = counts[big], expected[big]
  if (~big).any():  # lump the rare tokens into one category
    observed, expected = (
      np.append(observed, counts[~big].sum()),
      np.append(expected, (probs * counts.sum())[~big].sum()),
    )
  expected *= observed.sum() / expected.sum()
  assert big.sum() >= 10  # a real multi-category test
  assert scipy.stats.chisquare(observed, expected).pvalue > 1e-3
  # Reported log-probs are the model's (temperature 1) log-probabilities of the sampled tokens.
  log_probs = np.asarray(jax.nn.log_softmax(np.asarray(logits[0, -1])))
  np.testing.assert_allclose(out.logprobs[0, :50, 0], log_probs[out.tokens[0, :50, 0]], atol=1e-5)
  top5 = set(np.argsort(log_probs)[-5:])
  k_out = sampler(params, tokens, mask, seed=2, sampling=SamplingConfig(num_samples=300, max_new_tokens=1, top_k=5))
  assert set(k_out.tokens[0, :, 0]) <= top5 and len(set(k_out.tokens[0, :, 0])) > 1
  order = np.argsort(log_probs)[::-1]
  nucleus = set(order[: np.searchsorted(np.cumsum(np.exp(log_probs[order])), 0.5) + 1])
  p_out = sampler(params, tokens, mask, seed=3, sampling=SamplingConfig(num_samples=300, max_new_tokens=1, top_p=0.5))
  assert set(p_out.tokens[0, :, 0]) <= nucleus


def test_two_level_cdf_inversion_draws_from_the_softmax():
  """Over a vocabulary of several CDF blocks, with filtered (-inf) tokens at a block's edges and a
  whole filtered block: the draws follow the softmax (chi-square) and never hit a filtered token."""
  rng = np.random.default_rng(0)
  logits = np.log(rng.dirichlet(np.full(700, 0.5), 3)).astype(np.float32)
  filtered = [0, 127, 128, 255, 699, *range(384, 512)]
  logits[:, filtered] = -np.inf
  keys = jax.random.split(jax.random.key(0), 30000)
  draws = np.asarray(jax.jit(jax.vmap(lambda k: categorical(k, logits)))(keys))
  probs = np.exp(logits.astype(np.float64) - logits.max(-1, keepdims=True))
  probs /= probs.sum(-1, keepdims=True)
  for row in range(3):
    counts = np.bincount(draws[:, row], minlength=700)
    assert counts[filtered].sum() == 0
    expected = probs[row] * len(draws)
    big = expected >= 5
    observed = np.append(counts[big], counts[~big].sum())
    expected = np.append(expected[big], expected[~big].sum())
    assert big.sum() > 100 and scipy.stats.chisquare(observed, expected * observed.sum() / expected.sum()).pvalue > 1e-3


def test_sample_logprobs_equal_teacher_forced_scores(tiny, one_device):
  """Prefill + cached decode gives the same per-token log-probs as one full forward pass."""
  cfg, graphdef, params = tiny
  tokens, mask = left_pad(_prompts(cfg.vocab_size), 10, 0)
  out = Sampler(graphdef, cfg, one_device)(
    params, tokens, mask, seed=4, sampling=SamplingConfig(num_samples=3, max_new_tokens=6)
  )
  for b in range(len(PROMPT_LENGTHS)):
    for s in range(3):
      full = np.concatenate([tokens[b], out.tokens[b, s]])[None]
      full_mask = np.concatenate([mask[b], np.ones(6, np.int32)])[None]
      logits, _ = jax.jit(build.forward)(graphdef, params, full, mask=full_mask)
      log_probs = np.asarray(jax.nn.log_softmax(logits[0, 9:-1]))
      np.testing.assert_allclose(out.logprobs[b, s], log_probs[np.arange(6), out.tokens[b, s]], atol=1e-4)


@pytest.mark.mesh
def test_same_samples_on_one_and_eight_devices(tiny, one_device):
  cfg, graphdef, params = tiny
  prompts = _prompts(cfg.vocab_size) * 2
  tokens, mask = left_pad(prompts, 10, 0)
  config = SamplingConfig(num_samples=5, max_new_tokens=8, temperature=1.0, top_p=0.9)
  ref = Sampler(graphdef, cfg, one_device)(params, tokens, mask, seed=7, sampling=config)
  for shape in ((8, 1, 1), (2, 2, 2)):
    mesh = parallel.make_mesh(shape)
    sharded = jax.device_put(
      params, parallel.state_shardings(build.abstract_model(cfg)[1], mesh, parallel.DEFAULT_RULES)
    )
    out = Sampler(graphdef, cfg, mesh)(sharded, tokens, mask, seed=7, sampling=config)
    np.testing.assert_array_equal(out.tokens, ref.tokens)
    np.testing.assert_allclose(out.logprobs, ref.logprobs, atol=1e-5)


def test_no_recompilation_and_truncation_flags(tiny, one_device):
  cfg, graphdef, params = tiny
  sampler = Sampler(graphdef, cfg, one_device)
  config = SamplingConfig(num_samples=2, max_new_tokens=5, stop_tokens=())
  for seed in range(3):
    tokens, mask = left_pad(_prompts(cfg.vocab_size, seed=seed), 10, 0)
    out = sampler(params, tokens, mask, seed=seed, sampling=config)
  assert sampler.compilations == 1
  assert out.truncated.all() and (out.lengths == 5).all()
  everything_stops = SamplingConfig(num_samples=2, max_new_tokens=5, stop_tokens=tuple(range(cfg.vocab_size)))
  out = sampler(params, tokens, mask, seed=0, sampling=everything_stops)
  assert sampler.compilations == 2
  assert out.stopped.all() and (out.lengths == 1).all() and (out.tokens[..., 1:] == 0).all()
