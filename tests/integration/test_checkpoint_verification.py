"""Verified checkpoints: a corrupt, truncated or incomplete latest train checkpoint is set aside and
the previous good one resumed (final parameters equal to the uninterrupted run's); a corrupt final
model makes its stage resume and export it again; a model that differs from its checksums is refused on load."""

import logging
import os
import shutil

import jax
import numpy as np
import pytest

from ilp import checksums, faults, fileio, parallel, pipeline
from ilp.model import checkpoint


def _params(directory):
  mesh = parallel.make_mesh((1, 1, 1), jax.devices()[:1])
  return [np.asarray(x) for x in jax.tree.leaves(checkpoint.load_params(directory, mesh)[2])]


def _steps(workdir):
  return sorted(int(d) for d in os.listdir(os.path.join(workdir, "sft", "checkpoints")) if d.isdigit())


def _interrupted_copy(reference, tmp_path):
  """The finished run as if killed after its last checkpoint, before the final model was written."""
  workdir = str(tmp_path / "work")
  shutil.copytree(reference, workdir)
  shutil.rmtree(os.path.join(workdir, "sft", "final"))
  os.remove(os.path.join(workdir, "sft", "summary.json"))
  return workdir


def _damage(step_dir, kind):
  if kind == "flipped":
    faults.flip_bytes(faults.largest_file(os.path.join(step_dir, "state")))
  elif kind == "truncated":
    faults.truncate(faults.largest_file(os.path.join(step_dir, "state")))
  elif kind == "metadata_deleted":
    os.remove(os.path.join(step_dir, "state", "_METADATA"))
  elif kind == "unsealed_metadata_deleted":  # killed before sealing, then damaged: orbax's error is caught
    os.remove(os.path.join(step_dir, checksums.MANIFEST))
    os.remove(os.path.join(step_dir, "state", "_METADATA"))


def test_damaged_latest_checkpoints_fall_back_to_the_newest_good_one(two_phase, tmp_path, caplog):
  ref = two_phase.workdir
  workdir = _interrupted_copy(ref, tmp_path)
  steps = _steps(workdir)
  kinds = ["flipped", "truncated", "metadata_deleted", "unsealed_metadata_deleted"]
  assert len(steps) > len(kinds)
  for step, kind in zip(reversed(steps), kinds):
    _damage(os.path.join(workdir, "sft", "checkpoints", str(step)), kind)
  good = steps[-len(kinds) - 1]
  with caplog.at_level(logging.WARNING):
    pipeline.run(two_phase.config(), workdir)
  for step in steps[-len(kinds) :]:
    assert f"checkpoint step {step} is corrupt and set aside" in caplog.text
    assert os.path.isdir(os.path.join(workdir, "sft", "checkpoints-corrupt", str(step)))
  assert f"resuming from step {good}" in caplog.text
  assert _steps(workdir) == steps  # saved again and sealed
  assert all(not checksums.problems(os.path.join(workdir, "sft", "checkpoints", str(s))) for s in steps)
  for a, b in zip(_params(os.path.join(ref, "sft", "final")), _params(os.path.join(workdir, "sft", "final"))):
    np.testing.assert_array_equal(a, b)


def test_no_good_checkpoint_stops_naming_each(two_phase, tmp_path):
  ref = two_phase.workdir
  workdir = _interrupted_copy(ref, tmp_path)
  for step in _steps(workdir):
    _damage(os.path.join(workdir, "sft", "checkpoints", str(step)), "flipped")
  with pytest.raises(fileio.ResumeError, match=r"no checkpoint can be restored:\n  step \d+: .*content differs"):
    pipeline.run(two_phase.config(), workdir)


def test_a_corrupt_final_model_is_refused_on_load_and_rebuilt_by_its_stage(two_phase, tmp_path, caplog):
  ref = two_phase.workdir
  workdir = str(tmp_path / "work")
  shutil.copytree(ref, workdir)
  final = os.path.join(workdir, "sft", "final")
  damaged = faults.largest_file(os.path.join(final, "params"))
  faults.flip_bytes(damaged)
  with pytest.raises(checkpoint.CorruptModelError, match=f"{damaged}: content differs from its checksum"):
    _params(final)
  with caplog.at_level(logging.WARNING):
    pipeline.run(two_phase.config(), workdir)
  assert f"stage sft: output {damaged}: content differs from its checksum" in caplog.text
  assert "the stage resumes and writes it again" in caplog.text  # from the last checkpoint, not from scratch
  for a, b in zip(_params(os.path.join(ref, "sft", "final")), _params(final)):
    np.testing.assert_array_equal(a, b)
