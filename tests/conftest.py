"""Test session set-up: 8 fake CPU devices, configured before JAX is first imported."""
import os

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import jax  # noqa: E402  (must follow the environment set-up above)

assert jax.device_count() == 8, "tests need 8 fake CPU devices; was jax imported before conftest?"
