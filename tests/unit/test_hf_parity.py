"""Our decoder against transformers' PyTorch models: load, compare logits, export, reload, compare."""

import numpy as np
import pytest
import torch
import transformers

from ilp import parallel
from ilp.model import build, hf
from tests import hf_models

TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def one_device_mesh():
  import jax

  return parallel.make_mesh((1, 1, 1), jax.devices()[:1])


def _our_logits(graphdef, state, tokens, mask, positions=None):
  import jax

  logits, _ = jax.jit(build.forward)(graphdef, state, tokens, positions=positions, mask=mask)
  return np.asarray(logits)


@pytest.mark.parametrize("variant", sorted(hf_models.VARIANTS))
def test_round_trip_parity(variant, tmp_path, one_device_mesh):
  src, dst = str(tmp_path / "hf"), str(tmp_path / "exported")
  model = hf_models.save_hf_model(variant, src)
  cfg, graphdef, state = hf.load_hf(src, one_device_mesh)
  assert cfg.family == model.config.model_type
  assert cfg.tie_embeddings == bool(model.config.tie_word_embeddings)

  worst = 0.0
  for left in (True, False):
    tokens, mask = hf_models.padded_batch([24, 17, 9, 1], 24, cfg.vocab_size, left=left, seed=int(left))
    ours = _our_logits(graphdef, state, tokens, mask)
    ref = hf_models.torch_logits(model, tokens, mask)
    real = mask.astype(bool)
    diff = float(np.abs(ours[real] - ref[real]).max())
    assert diff < TOLERANCE, f"{variant} ({'left' if left else 'right'} padding): max |dlogit| = {diff}"
    assert float(np.abs(ref[real]).max()) > 0.1  # the comparison is not between near-zero logits
    worst = max(worst, diff)
  # Explicit positions (a prompt continuing at offset 40) go through RoPE exactly as in HF.
  positions = hf_models.default_positions(mask) + 40
  ours = _our_logits(graphdef, state, tokens, mask, positions)
  ref = hf_models.torch_logits(model, tokens, mask, positions)
  worst = max(worst, float(np.abs(ours[real] - ref[real]).max()))
  assert worst < TOLERANCE
  print(f"\nPARITY {variant}: max |logit diff| vs transformers = {worst:.2e}")

  hf.save_hf(cfg, state, dst)
  reloaded = transformers.AutoModelForCausalLM.from_pretrained(dst, dtype=torch.float32).eval()
  original = model.state_dict()
  for name, tensor in reloaded.state_dict().items():
    np.testing.assert_array_equal(tensor.numpy(), original[name].numpy(), err_msg=name)
  tokens, mask = hf_models.padded_batch([20, 13], 20, cfg.vocab_size, left=True, seed=7)
  np.testing.assert_allclose(
    hf_models.torch_logits(reloaded, tokens, mask), hf_models.torch_logits(model, tokens, mask), atol=0, rtol=0
  )


def test_sharded_export_reloads(tmp_path, one_device_mesh):
  """A small max shard size forces the multi-file layout with an index; both directions read it."""
  src = str(tmp_path / "hf")
  model = hf_models.save_hf_model("qwen2", src)
  cfg, graphdef, state = hf.load_hf(src, one_device_mesh)
  hf.save_hf(cfg, state, str(tmp_path / "sharded"), max_shard_bytes=40_000)
  files = sorted(p.name for p in (tmp_path / "sharded").iterdir())
  assert "model.safetensors.index.json" in files and sum(f.endswith(".safetensors") for f in files) > 2
  _, _, state2 = hf.load_hf(str(tmp_path / "sharded"), one_device_mesh)
  tokens, mask = hf_models.padded_batch([12, 5], 12, cfg.vocab_size, left=True)
  np.testing.assert_array_equal(_our_logits(graphdef, state, tokens, mask), _our_logits(graphdef, state2, tokens, mask))
  reloaded = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path / "sharded")).eval()
  np.testing.assert_array_equal(
    reloaded.state_dict()["model.norm.weight"].numpy(), model.state_dict()["model.norm.weight"].numpy()
  )


def test_bfloat16_parameters_load_and_export(tmp_path, one_device_mesh):
  """bf16 params and compute: logits stay close to the float32 reference; export keeps bf16."""
  src = str(tmp_path / "hf")
  model = hf_models.save_hf_model("llama", src)
  cfg, graphdef, state = hf.load_hf(src, one_device_mesh, param_dtype="bfloat16", dtype="bfloat16")
  tokens, mask = hf_models.padded_batch([16, 9], 16, cfg.vocab_size, left=True)
  ours, ref = _our_logits(graphdef, state, tokens, mask), hf_models.torch_logits(model, tokens, mask)
  real = mask.astype(bool)
  assert np.abs(ours[real] - ref[real]).max() < 0.05 * np.abs(ref[real]).max()
  hf.save_hf(cfg, state, str(tmp_path / "bf16"))
  reloaded = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path / "bf16"))
  assert reloaded.model.embed_tokens.weight.dtype == torch.bfloat16
