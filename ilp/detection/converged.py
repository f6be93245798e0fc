"""`detect.require_converged`: the paper measures ILP only after SFT has converged (§3.1), so
detection can refuse a model whose SFT's last phase did not, from the verdict the sft stage wrote
(`sft/summary.json`'s `convergence`, `ilp.train.convergence.report`), before any work."""

from __future__ import annotations

import json
import os
from typing import Any


class NotConvergedError(RuntimeError):
  """The probed model's SFT did not converge, or left no verdict to judge by."""


def trained_epochs(verdict: dict[str, Any]) -> int:
  """The epochs a phase trained: its decision when trained to convergence, else its last logged epoch."""
  logged = [int(e) for by_epoch in verdict.get("loss_by_epoch", {}).values() for e in by_epoch]
  return int(verdict.get("trained_epochs") or max(logged, default=0))


def dataset_figures(name: str, figures: dict[str, Any], delta: float, min_delta: float) -> str:
  """One data set's figures against the criterion, in words."""
  if figures.get("relative_improvement") is None:
    return f"{name}: {figures.get('reason', 'no figures')}"
  adjusted, gain = figures["adjusted_improvement"], figures["previous_loss"] - figures["loss"]
  verdict = "<" if adjusted < delta else ">="
  absolute = f", |loss change| {abs(gain):.3g} < min_delta {min_delta}" if abs(gain) < min_delta else ""
  return (
    f"{name}: loss {figures['previous_loss']:.4g} -> {figures['loss']:.4g}, relative improvement "
    f"{figures['relative_improvement']:.4g}, adjusted {adjusted:.4g} {verdict} delta {delta}{absolute}"
  )


def require(summary_path: str) -> None:
  """Raises `NotConvergedError` unless the SFT summary at `summary_path` says its last phase
  converged; the message names the phase and its figures."""
  fix = "or set detect.require_converged=False to probe it anyway"
  if not os.path.exists(summary_path):
    raise NotConvergedError(f"detect.require_converged: {summary_path} not found: no SFT run to judge ({fix})")
  with open(summary_path) as f:
    record = json.load(f).get("convergence")
  if not record or not record.get("phases"):
    raise NotConvergedError(
      f"detect.require_converged: {summary_path} has no `convergence` record (an SFT run "
      f"from before convergence was judged): re-run the sft stage, {fix}"
    )
  if record["converged"]:
    return
  name = record["last_phase"]
  v = record["phases"][name]
  stopped = f", stopped by {v['stopped_by']}" if v.get("stopped_by") else ""
  datasets = "; ".join(dataset_figures(d, f, v["delta"], v["min_delta"]) for d, f in v["datasets"].items())
  raise NotConvergedError(
    f"detect.require_converged: SFT's last phase '{name}' did not converge: judged at epoch {v['epoch']} of "
    f"{trained_epochs(v)} trained{stopped}, learning rate {v['relative_lr']:.3g} of its peak; {datasets}. "
    f"Train it longer (sft.convergence.max_epochs > 0 trains each phase until the criterion holds), {fix}."
  )
