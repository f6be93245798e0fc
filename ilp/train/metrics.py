"""TensorBoard output (tensorboardX, no TensorFlow needed) and FLOP accounting for MFU."""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np


class MetricWriter:
  """Scalars, histograms, text and images for TensorBoard; a no-op on processes other than 0."""

  def __init__(self, logdir: str, enabled: bool = True):
    self._writer = None
    if enabled:
      from tensorboardX import SummaryWriter  # imported only where something is written

      self._writer = SummaryWriter(logdir)

  def scalars(self, step: int, values: dict[str, float]) -> None:
    if self._writer:
      for name, value in values.items():
        self._writer.add_scalar(name, float(value), step)

  def histogram(self, step: int, name: str, values: np.ndarray) -> None:
    if self._writer and len(values):
      self._writer.add_histogram(name, np.asarray(values, np.float64), step)

  def text(self, step: int, name: str, markdown: str) -> None:
    if self._writer:
      self._writer.add_text(name, markdown, step)

  def image(self, step: int, name: str, png_path: str) -> None:
    """A PNG written by the report plots, shown in TensorBoard's Images tab."""
    if self._writer:
      import matplotlib.image

      self._writer.add_image(name, matplotlib.image.imread(png_path)[..., :3], step, dataformats="HWC")

  def flush(self) -> None:
    if self._writer:
      self._writer.flush()

  def close(self) -> None:
    if self._writer:
      self._writer.close()


# Dense peak FLOP/s per device from the vendors' data sheets (no sparsity), by `device_kind` prefix:
# (bfloat16, float32). float32 is the plain (non-TF32) rate where the vendor states one.
PEAK_FLOPS: dict[str, tuple[float, float]] = {
  "NVIDIA H200": (989e12, 67e12),
  "NVIDIA H100": (989e12, 67e12),  # SXM; the PCIe card is 756e12 / 51e12: set `machine.peak_flops`
  "NVIDIA A100": (312e12, 19.5e12),
  "NVIDIA L4": (121e12, 30e12),
  "NVIDIA A10G": (70e12, 31e12),
  "TPU v6": (918e12, 918e12 / 4),
  "TPU v5p": (459e12, 459e12 / 4),
  "TPU v5 lite": (197e12, 197e12 / 4),
  "TPU v5e": (197e12, 197e12 / 4),
  "TPU v4": (275e12, 275e12 / 4),
}


def device_peak_flops(dtype: str, device: jax.Device | None = None) -> float:
  """Peak FLOP/s of one device for `dtype` ("float32" or "bfloat16"): the data-sheet figure for a
  known accelerator (`PEAK_FLOPS`), else (CPUs, unknown devices) a float32 matmul timed here."""
  device = device or jax.devices()[0]
  for prefix, (bf16, fp32) in PEAK_FLOPS.items():
    if device.device_kind.startswith(prefix):
      return bf16 if dtype == "bfloat16" else fp32
  return matmul_peak_flops()


def matmul_peak_flops(n: int = 2048, repeats: int = 5) -> float:
  """Achieved FLOP/s of a large float32 matmul on the default device: the practical ceiling."""
  a = jnp.ones((n, n), jnp.float32)
  matmul = jax.jit(lambda x: x @ x)
  matmul(a).block_until_ready()
  best = float("inf")
  for _ in range(repeats):
    start = time.perf_counter()
    matmul(a).block_until_ready()
    best = min(best, time.perf_counter() - start)
  return 2.0 * n**3 / best
