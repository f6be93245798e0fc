"""Test session set-up: 8 fake CPU devices, configured before JAX is first imported."""
import os

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import jax  # noqa: E402  (must follow the environment set-up above)

assert jax.device_count() == 8, "tests need 8 fake CPU devices; was jax imported before conftest?"


import pytest  # noqa: E402


@pytest.fixture(scope="session")
def two_phase(tmp_path_factory):
  """One finished two-phase SFT run (checkpoints every 2 steps, all kept), read by several modules:
  `.paths` (its inputs), `.workdir`, `.config()` (a fresh copy of its config)."""
  import types
  from ilp import pipeline
  from tests import sft_data
  base = tmp_path_factory.mktemp("two_phase")
  paths = sft_data.make_inputs(str(base / "data"))

  def config():
    c = sft_data.sft_config(paths)
    c.sft.checkpoint.update(every_steps=2, max_to_keep=6)
    return c
  workdir = str(base / "work")
  pipeline.run(config(), workdir)
  return types.SimpleNamespace(paths=paths, workdir=workdir, config=config)
