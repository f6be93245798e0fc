"""Test session set-up, done before JAX is first imported.

Devices: one CPU device, or `ILP_TEST_DEVICES` fake ones. Tests marked `mesh` need 8 (a sharded
run checked against the single-device one); `scripts/test.sh` runs them in a second pytest process
with `ILP_TEST_DEVICES=8`, so every other test (pipelines included) compiles and runs unpartitioned,
several times faster on 2 cores. A `mesh` test in a 1-device session fails with that advice.

Compilation: a persistent XLA cache (`JAX_COMPILATION_CACHE_DIR`, default `.cache/jax-tests` in
the checkout) shared by the suite's processes and the subprocesses they start (the variables
are inherited), so a second run, and a test that compiles what another already did, reads the
compiled programs instead of building them again. The tests' models are tiny, so XLA's LLVM
optimisation costs more than it saves: the suite compiles at `--xla_backend_optimization_level=0`
(tests only; runs keep the default), which halves the unit tier's time with an empty cache
(261 s -> 131 s, docs/measurements.md).
"""

import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEVICES = int(os.environ.get("ILP_TEST_DEVICES", "1"))
MESH_DEVICES = 8

os.environ["XLA_FLAGS"] = (
  os.environ.get("XLA_FLAGS", "")
  + f" --xla_force_host_platform_device_count={DEVICES} --xla_backend_optimization_level=0"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(ROOT, ".cache", "jax-tests"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")

import jax  # noqa: E402  (must follow the environment set-up above)
import pytest  # noqa: E402

assert jax.device_count() == DEVICES, f"tests asked for {DEVICES} CPU devices; was jax imported before conftest?"


def pytest_runtest_setup(item):
  if item.get_closest_marker("mesh") and jax.device_count() < MESH_DEVICES:
    pytest.fail(
      f"needs {MESH_DEVICES} devices: run it as `ILP_TEST_DEVICES={MESH_DEVICES} pytest -m mesh ...` "
      "(bash scripts/test.sh does)",
      pytrace=False,
    )


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
