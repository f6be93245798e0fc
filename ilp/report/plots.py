"""Matplotlib figures for the reports (PNG files; headless Agg backend)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402


def bar_chart(values: dict[str, float], path: str, title: str, ylabel: str) -> None:
  fig, ax = plt.subplots(figsize=(max(4, 0.9 * len(values) + 2), 3.2))
  ax.bar(list(values), [100 * v for v in values.values()], color="#4c72b0")
  ax.set_ylabel(ylabel)
  ax.set_title(title)
  ax.set_ylim(0, 100)
  plt.setp(ax.get_xticklabels(), rotation=20, ha="right")
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def histogram(values: np.ndarray | dict[str, np.ndarray], path: str, title: str, xlabel: str, bins: int = 11) -> None:
  """Values in [0, 1]; a dict of groups is drawn as stacked bars."""
  groups = values if isinstance(values, dict) else {"": values}
  fig, ax = plt.subplots(figsize=(5, 3.2))
  ax.hist(
    list(groups.values()),
    bins=np.linspace(0, 1, bins + 1),
    stacked=True,
    edgecolor="white",
    label=list(groups),
    color=None if len(groups) > 1 else ["#55a868"],
  )
  if len(groups) > 1:
    ax.legend(fontsize=7)
  ax.set_xlabel(xlabel)
  ax.set_ylabel("examples")
  ax.set_title(title)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def data_map(frame: pd.DataFrame, hue: str, path: str, title: str) -> None:
  """Dataset-Cartography map: variability (x) against confidence (y), one colour per `hue` value."""
  fig, ax = plt.subplots(figsize=(5.5, 4.2))
  for name, rows in frame.groupby(hue):
    ax.scatter(rows["variability"], rows["confidence"], s=9, alpha=0.7, label=f"{name} ({len(rows)})")
  ax.set_xlabel("variability (std of gold-token probability)")
  ax.set_ylabel("confidence (mean gold-token probability)")
  ax.set_title(title)
  ax.legend(fontsize=7, markerscale=1.5)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def learning_curves(evals: pd.DataFrame, by: str, path: str, title: str) -> None:
  """Mean exact match and loss of each `by` group over the evaluation passes, in step order."""
  fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
  for name, rows in evals.groupby(by):
    curve = rows.groupby("step")[["exact_match", "loss"]].mean()
    axes[0].plot(curve.index, 100 * curve["exact_match"], marker=".", label=str(name))
    axes[1].plot(curve.index, curve["loss"], marker=".", label=str(name))
  for step in sorted(evals.loc[evals["phase_end"].astype(bool), "step"].unique()):
    for ax in axes:
      ax.axvline(step, color="grey", lw=0.6, ls="--")
  axes[0].set_ylabel("exact match (%)")
  axes[1].set_ylabel("response loss")
  for ax in axes:
    ax.set_xlabel("optimizer step (dashed: phase ends)")
  axes[0].legend(fontsize=7)
  fig.suptitle(title)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def convergence(record: dict, path: str) -> None:
  """SFT's convergence (`sft/summary.json`'s `convergence`): one panel per phase, each data set's
  epoch mean response loss, the epoch the criterion judged dashed and its points circled, the
  legend giving each data set's adjusted improvement there (the criterion: below delta)."""
  phases = record["phases"]
  fig, axes = plt.subplots(1, len(phases), figsize=(4.4 * len(phases), 3.5), squeeze=False)
  for ax, (name, verdict) in zip(axes[0], phases.items()):
    judged = verdict["epoch"]
    for dataset, by_epoch in sorted(verdict["loss_by_epoch"].items()):
      epochs = sorted(int(e) for e in by_epoch)
      adjusted = verdict["datasets"].get(dataset, {}).get("adjusted_improvement")
      (line,) = ax.plot(
        epochs,
        [by_epoch[str(e)] for e in epochs],
        marker=".",
        label=dataset if adjusted is None else f"{dataset} (adjusted {adjusted:.3g})",
      )
      if str(judged) in by_epoch:
        ax.plot([judged], [by_epoch[str(judged)]], "o", mfc="none", ms=9, color=line.get_color())
    if judged is not None:
      ax.axvline(judged, color="grey", lw=0.8, ls="--")
    state = "converged" if verdict["converged"] else "NOT converged"
    ax.set_title(f"{name}: {state} at epoch {judged} (delta {verdict['delta']:g})", fontsize=9)
    ax.set_xlabel("epoch (dashed: judged)")
    ax.set_ylabel("mean response loss (log scale)")
    ax.set_yscale("log")  # a plateau near zero is visible only on a log scale
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
