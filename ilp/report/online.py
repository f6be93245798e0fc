"""The report's section on the online control's flags: the examples the early warning found at risk
with a cause more visits would hammer (III-like: a near-duplicate with another answer; II-like: a
base model that prefers another answer), which the control left alone for a person to look at, set
against how they ended (unlearned or not) and what the diagnosis attributed them to."""

from __future__ import annotations

import numpy as np
import pandas as pd

WHAT = {"III": "near-duplicates with another answer", "II": "the base model prefers another answer"}


def markdown(
  flagged: dict[str, list[int]], ids: np.ndarray, unlearned: pd.Series, causes: pd.Series | None, title: str
) -> str:
  """The section for one run.

  Args:
    flagged: provisional cause -> example rows (`ilp.online.control.flagged`).
    ids: the example id of each row (the examples table's order).
    unlearned: id -> unlearned at the end (the detection label).
    causes: id -> the diagnosis's cause ("" or absent: not attributed); None without a diagnosis.
    title: the section's heading.
  """
  lines = [
    f"## {title}",
    "",
    "At its last decision the online control (`sft.online`) found these examples at risk with a cause more "
    "visits would not mend, and flagged them instead of replaying them.",
    "",
    "| provisional cause | flagged | unlearned at the end | attributed to that cause | examples (first 5) |",
    "|---|---|---|---|---|",
  ]
  for cause, rows in flagged.items():
    chosen = [str(i) for i in np.asarray(ids)[np.asarray(rows, np.int64)]]
    ended = int(unlearned.reindex(chosen).fillna(False).astype(bool).sum())
    agreed = "—" if causes is None else str(int((causes.reindex(chosen) == cause).sum()))
    shown = ", ".join(f"`{i}`" for i in chosen[:5]) or "—"
    lines.append(f"| {cause} ({WHAT.get(cause, '')}) | {len(chosen)} | {ended} | {agreed} | {shown} |")
  return "\n".join(lines) + "\n"
