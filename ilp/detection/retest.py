"""Test-retest agreement of the unlearned label (`scripts/retest_detection.py`): every example
detected again with the probed model and another seed (same settings, the same number of sampling
runs and the same repeat rule), and Cohen's kappa between the stage's labels and the retest's, per
protocol, for the sampled label (the paper's repeat rule) and the expected-pass label alike,
whichever `detect.label` made final.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from ilp.data.config import DataConfig
from ilp.detection import columns as col
from ilp.detection import probes
from ilp.detection.config import DetectConfig
from ilp.scoring import estimators


def agreement(first: pd.DataFrame, second: pd.DataFrame, detect: DetectConfig) -> dict:
  """Per protocol of `detect`: both detections' unlearned rates and the kappa between them, under
  each label; the tables are aligned row by row."""
  out = {}
  for protocol in detect.protocols:
    out[protocol] = {"label": detect.label, "runs": len(detect.temperatures), "repeat_rule": detect.repeat_rule}
    labels = {
      "sampled": lambda t: t[col.of(protocol, col.UNLEARNED_SAMPLED)].to_numpy(bool),
      "expected": lambda t: t[col.of(protocol, col.EXPECTED_PASS)].to_numpy() < detect.threshold,
    }
    for name, label in labels.items():
      a, b = label(first), label(second)
      out[protocol][name] = {
        "kappa": estimators.cohen_kappa(a, b),
        "unlearned_rate": float(a.mean()),
        "retest_unlearned_rate": float(b.mean()),
      }
  return out


def retest(
  detection: pd.DataFrame,
  frame: pd.DataFrame,
  model_dir: str,
  detect: DetectConfig,
  data: DataConfig,
  mesh_config: Any,
  seed: int,
) -> dict:
  """The agreement of the stage's `detection` table with a detection of the examples `frame` again
  under the model in `model_dir` with `seed` (another than the stage's, or it repeats its samples)."""
  first = detection.set_index(col.ID)
  second = probes.probe_model(frame, model_dir, detect, data, mesh_config, seed).set_index(col.ID).reindex(first.index)
  return agreement(first, second, detect)


def summary_text(name: str, result: dict) -> str:
  """One line per protocol: both labels' kappa and unlearned rates, and which label is final."""
  return "\n".join(
    f"{name} ({protocol}): test-retest kappa of the sampled label ({r['runs']} runs, rule "
    f"'{r['repeat_rule']}') {r['sampled']['kappa']:.3f} ({100 * r['sampled']['unlearned_rate']:.1f}% vs "
    f"{100 * r['sampled']['retest_unlearned_rate']:.1f}% unlearned), of the expected-pass label "
    f"{r['expected']['kappa']:.3f} ({100 * r['expected']['unlearned_rate']:.1f}% vs "
    f"{100 * r['expected']['retest_unlearned_rate']:.1f}%); the final label is the {r['label']} one"
    for protocol, r in result.items()
  )
