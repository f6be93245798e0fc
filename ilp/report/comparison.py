"""The comparison's Markdown section: each arm against the baseline."""
from __future__ import annotations

from typing import Any


def _pct(x: float | None) -> str:
  return "—" if x is None else f"{100 * x:.1f}%"


def _points(x: float | None, low: float | None = None, high: float | None = None) -> str:
  if x is None:
    return "—"
  interval = f" [{100 * low:+.1f}, {100 * high:+.1f}]" if low is not None and high is not None else ""
  return f"{100 * x:+.1f}{interval}"


def markdown(summary: dict[str, Any], capability: dict[str, Any], label: str,
             matrix: dict[str, dict[str, float | None]]) -> str:
  """Tables of `compare/summary.json` (per arm), the response matrix and the runs' capability checks."""
  lines = ["# Interventions against the baseline", "",
           f"Unlearned = the {label} label. Each arm is compared with the baseline on the examples both "
           "trained on; changes are in percentage points with 95% paired bootstrap intervals. "
           "\"Target\" = the examples the baseline attributed to the arm's cause(s), followed into the arm; "
           "DiD = change on the target minus change on the other baseline-unlearned examples.", "",
           "| arm | target | target: baseline → arm | target change | others change | DiD | all: baseline → arm "
           "| baseline-learned now unlearned | greedy accuracy | examples (missing) |",
           "|---|---|---|---|---|---|---|---|---|---|"]
  for name, s in summary.items():
    did, u, by = s["difference_in_differences"], s["unlearned"], s["by_cause"]
    targets = ",".join(s["targets"]) or "— (control)"
    target = [by[c] for c in s["targets"] if c in by]
    tb = sum(t["baseline_rate"] * t["n"] for t in target) / max(sum(t["n"] for t in target), 1) if target else None
    ta = sum(t["arm_rate"] * t["n"] for t in target) / max(sum(t["n"] for t in target), 1) if target else None
    learned = by.get("learned", {})
    acc = s["greedy_accuracy"]
    lines.append(f"| {name} | {targets} (n={did['target_n']}) | {_pct(tb)} → {_pct(ta)} | "
                 f"{_points(did['target_change'])} | {_points(did['other_change'])} | "
                 f"{_points(did['did'], did['did_low'], did['did_high'])} | {_pct(u['baseline_rate'])} → "
                 f"{_pct(u['arm_rate'])} ({_points(u['change'], u['change_low'], u['change_high'])}) | "
                 f"{_pct(learned.get('arm_rate'))} | {_pct(acc['baseline']['rate'])} → {_pct(acc['arm']['rate'])} | "
                 f"{s['examples']} ({s['missing_from_arm']}) |")
  lines += ["", "## By baseline-attributed cause (unlearned rate, baseline → arm)", "",
            "| arm | " + " | ".join(("I", "II", "III", "IV", "V", "unlearned", "learned")) + " |", "|---|" + "---|" * 7]
  for name, s in summary.items():
    cells = [f"{_pct(s['by_cause'][c]['baseline_rate'])} → {_pct(s['by_cause'][c]['arm_rate'])}"
             if c in s["by_cause"] else "—" for c in ("I", "II", "III", "IV", "V", "unlearned", "learned")]
    lines.append(f"| {name} | " + " | ".join(cells) + " |")
  arms = list(summary)
  targets = {name: set(s["targets"]) for name, s in summary.items()}
  lines += ["", "## Response matrix: relative reduction of the unlearned rate by baseline-attributed cause", "",
            "Rows: the cause the baseline attributed; columns: the arms (its own mitigation in bold). A diagnosis "
            "confirmed by intervention has a dominant diagonal: each cause responds most to its own mitigation.", "",
            "| cause (n) | " + " | ".join(arms) + " |", "|---|" + "---|" * len(arms)]
  for cause, row in matrix.items():
    n = next((s["by_cause"][cause]["n"] for s in summary.values() if cause in s["by_cause"]), 0)
    cells = [(f"**{_pct(row[a])}**" if cause in targets[a] else _pct(row[a])) for a in arms]
    lines.append(f"| {cause} ({n}) | " + " | ".join(cells) + " |")
  lines += ["", "## ROUGE-L by position in the training stream (first / middle / last 10%; the paper's Table 11)", "",
            "| run | first | middle | last |", "|---|---|---|---|"]
  first = next(iter(summary.values()), None)
  runs = ([("baseline", first["rouge_l_by_position"]["baseline"])] if first else []) + \
      [(name, s["rouge_l_by_position"]["arm"]) for name, s in summary.items()]
  for name, r in runs:
    lines.append(f"| {name} | " + " | ".join(f"{r[k]['rouge_l']:.3f} (n={r[k]['examples']})"
                                             if r[k]["rouge_l"] is not None else "—" for k in ("first", "middle", "last")) + " |")
  lines += ["", "## Held-out capability", "", "| run | held-out questions, greedy accuracy | held-out text perplexity |",
            "|---|---|---|"]
  for name, c in capability.items():
    q, t = c.get("heldout_questions", {}), c.get("heldout_text", {})
    lines.append(f"| {name} | {_pct(q.get('accuracy'))} | {t['perplexity']:.3f} |" if t else
                 f"| {name} | {_pct(q.get('accuracy'))} | — |")
  return "\n".join(lines) + "\n"
