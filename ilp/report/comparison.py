"""The comparison's Markdown section: each arm against the baseline, each run's training compute,
and each mitigation against its equal-compute "more epochs" control."""

from __future__ import annotations

from typing import Any

from ilp.interventions import compare


def _pct(x: float | None) -> str:
  return "—" if x is None else f"{100 * x:.1f}%"


def _points(x: float | None, low: float | None = None, high: float | None = None) -> str:
  if x is None:
    return "—"
  interval = f" [{100 * low:+.1f}, {100 * high:+.1f}]" if low is not None and high is not None else ""
  return f"{100 * x:+.1f}{interval}"


def _matrix(summary: dict[str, Any], matrix: dict[str, dict[str, float | None]]) -> list[str]:
  """The response matrix as a table, each cell with its 95% interval, each arm's own cause(s) in bold."""
  arms = list(summary)
  lines = ["| cause (n) | " + " | ".join(arms) + " |", "|---|" + "---|" * len(arms)]

  def cell(cause: str, arm: str) -> str:
    value = matrix[cause][arm]
    if value is None:
      return _pct(value)
    lo, hi = compare.reduction_interval(summary[arm]["by_cause"][cause])
    text = _pct(value) + ("" if lo != lo else f" [{_pct(lo)}, {_pct(hi)}]")
    return f"**{text}**" if cause in summary[arm]["targets"] else text

  for cause, row in matrix.items():
    n = next((s["by_cause"][cause]["n"] for s in summary.values() if cause in s["by_cause"]), 0)
    cells = [cell(cause, a) for a in arms]
    lines.append(f"| {cause} ({n}) | " + " | ".join(cells) + " |")
  return lines


def _tokens(n: int | None) -> str:
  return "—" if n is None else f"{n:,}"


def _compute(result: dict[str, Any]) -> list[str]:
  """Each run's intervention compute (`ilp.interventions.equal_compute.compute`)."""
  runs = result.get("compute", {})
  base = (runs.get("baseline") or {}).get("tokens", {}).get("real")
  lines = [
    "",
    "## Training compute of each intervention",
    "",
    "Tokens trained by the run's own training stages, summed over their optimizer steps (each stage's "
    "`summary.json`): SFT, plus continual pre-training (CPT) for the knowledge and calibration arms; the "
    "base model's pre-training, shared by every run, is not counted. FLOPs = 6·N·D over the padded tokens "
    "(attention scores left out). *With the baseline first*: what a user spends to get the run's model; a "
    "post-hoc arm needs the baseline trained and diagnosed first, so its own tokens plus the baseline's; the "
    "online arm acts during SFT and needs none, and a more-epochs run's tokens hold the baseline's it continues.",
    "",
    "| run | CPT real tokens | SFT real tokens | total real tokens | × baseline | with the baseline first "
    "| × baseline | padded tokens | loss tokens | FLOPs |",
    "|---|---|---|---|---|---|---|---|---|---|",
  ]
  ratio = lambda n: f"{n / base:.2f}" if base and n is not None else "—"
  for name, c in runs.items():
    if not c:
      lines.append(f"| {name} |" + " — |" * 9)
      continue
    t, by, total = c["tokens"], c["by_stage"], c.get("total_real")
    flops = "—" if c["flops"] is None else f"{c['flops']:.3g}"
    lines.append(
      f"| {name} | {_tokens(by.get('pretrain', {}).get('real'))} | {_tokens(by['sft']['real'])} | "
      f"{_tokens(t['real'])} | {ratio(t['real'])} | {_tokens(total)} | {ratio(total)} | {_tokens(t['padded'])} | "
      f"{_tokens(t['loss'])} | {flops} |"
    )
  return lines


def _changes(s: dict[str, Any] | None) -> list[str]:
  """The change of the unlearned rate on all examples and on the target, and the DiD, of one
  comparison (an arm's summary entry against its reference run)."""
  if s is None:
    return ["not run yet"] * 3
  u, d = s["unlearned"], s["difference_in_differences"]
  return [
    _points(u["change"], u["change_low"], u["change_high"]),
    _points(d["target_change"], d["target_change_low"], d["target_change_high"]),
    _points(d["did"], d["did_low"], d["did_high"]),
  ]


def _equal_compute(result: dict[str, Any]) -> list[str]:
  """Each mitigation against the baseline and against its equal-compute "more epochs" control."""
  setting = result.get("equal_compute", {})
  lines = ["", '## At equal compute: each mitigation against "more epochs" of the baseline', ""]
  if not setting.get("enabled"):
    return lines + ["Off (`interventions.equal_compute=False`): the arms are compared with the baseline only."]
  lines += [
    "More SFT alone teaches more, and every mitigation costs compute, so each mitigation is also compared "
    "with the baseline trained longer on its budget: its control is the baseline with the last SFT phase "
    "(every phase without `sft.phases`) trained for E epochs, E chosen from the measured real tokens "
    "(the arm's, the baseline's, and one epoch of that phase) so that the control's tokens are "
    + (
      "the nearest to the arm's (within half an epoch)"
      if setting.get("rounding") == "nearest"
      else "at least the arm's, by less than one epoch"
    )
    + "; when E would not exceed the baseline's epochs, the baseline itself is the control. One control run "
    "per budget, not one at the largest budget with the others interpolated: the unlearned rate is not "
    "linear in epochs. Changes in points (arm minus reference) with 95% paired bootstrap intervals, on the "
    'baseline-attributed target; against a control, "others" in the DiD are the control\'s unlearned.',
    "",
    "| arm | control (epochs of the raised phase) | real tokens: arm / control | all: vs baseline "
    "| all: vs control | target: vs baseline | target: vs control | DiD vs baseline | DiD vs control |",
    "|---|---|---|---|---|---|---|---|---|",
  ]
  for name, s in result["arms"].items():
    e = s.get("equal_compute")
    if not e:
      continue
    ratio = f" ({e['tokens_ratio']:.2f}×)" if e.get("tokens_ratio") else ""
    changes = zip(_changes(s), _changes(e.get("comparison")))
    epochs = f"{', '.join(e['raised_phases']) or 'every phase'}: {e['baseline_epochs']} → {e['epochs']} epochs"
    lines.append(
      f"| {name} | {e['control']} ({epochs}) | {_tokens(e['arm_tokens'])} / "
      f"{_tokens(e['control_tokens'])}{ratio} | " + " | ".join(c for pair in changes for c in pair) + " |"
    )
  at_equal = {
    name: s["equal_compute"]["comparison"]
    for name, s in result["arms"].items()
    if (s.get("equal_compute") or {}).get("comparison")
  }
  if at_equal:
    lines += [
      "",
      "### Response matrix against the equal-compute controls",
      "",
      "Relative reduction of the unlearned rate by baseline-attributed cause, each arm against its control.",
      "",
    ] + _matrix(at_equal, result["response_matrix_equal_compute"])
  return lines


def markdown(result: dict[str, Any], capability: dict[str, Any]) -> str:
  """Tables of `compare/summary.json` (`result`): per arm against the baseline, the response
  matrix, each run's compute, each mitigation at equal compute, and the runs' capability checks."""
  summary = result["arms"]
  lines = _arms(result) + _by_cause(summary)
  lines += [
    "",
    "## Response matrix: relative reduction of the unlearned rate by baseline-attributed cause",
    "",
    "Rows: the cause the baseline attributed; columns: the arms (its own mitigation in bold). A diagnosis "
    "confirmed by intervention has a dominant diagonal: each cause responds most to its own mitigation.",
    "",
  ]
  lines += _matrix(summary, result["response_matrix"]) + _compute(result) + _equal_compute(result)
  lines += _rouge_by_position(summary) + _capability(capability)
  return "\n".join(lines) + "\n"


def _arms(result: dict[str, Any]) -> list[str]:
  """Each arm against the baseline: its target, the changes with intervals, the DiD."""
  lines = [
    "# Interventions against the baseline",
    "",
    f"Unlearned = the {result['label']} label. Each arm is compared with the baseline on the examples both "
    "trained on; changes are in percentage points with 95% paired bootstrap intervals. "
    '"Target" = the examples the baseline attributed to the arm\'s cause(s), followed into the arm; '
    "DiD = change on the target minus change on the other baseline-unlearned examples.",
    "",
    "| arm | target | target: baseline → arm | target change | others change | DiD | all: baseline → arm "
    "| baseline-learned now unlearned | greedy accuracy | examples (missing) |",
    "|---|---|---|---|---|---|---|---|---|---|",
  ]
  skipped = result.get("skipped", {})
  if skipped:
    lines[2:2] = [f"Skipped: {', '.join(f'{name} ({why})' for name, why in skipped.items())}.", ""]
  for name, s in result["arms"].items():
    did, u, by = s["difference_in_differences"], s["unlearned"], s["by_cause"]
    targets = ",".join(s["targets"]) or "— (control)"
    target = [by[c] for c in s["targets"] if c in by]
    tb = sum(t["baseline_rate"] * t["n"] for t in target) / max(sum(t["n"] for t in target), 1) if target else None
    ta = sum(t["arm_rate"] * t["n"] for t in target) / max(sum(t["n"] for t in target), 1) if target else None
    learned = by.get("learned", {})
    acc = s["greedy_accuracy"]
    lines.append(
      f"| {name} | {targets} (n={did['target_n']}) | {_pct(tb)} → {_pct(ta)} | "
      f"{_points(did['target_change'])} | {_points(did['other_change'])} | "
      f"{_points(did['did'], did['did_low'], did['did_high'])} | {_pct(u['baseline_rate'])} → "
      f"{_pct(u['arm_rate'])} ({_points(u['change'], u['change_low'], u['change_high'])}) | "
      f"{_pct(learned.get('arm_rate'))} | {_pct(acc['baseline']['rate'])} → {_pct(acc['arm']['rate'])} | "
      f"{s['examples']} ({s['missing_from_arm']}) |"
    )
  return lines


def _by_cause(summary: dict[str, Any]) -> list[str]:
  causes = ("I", "II", "III", "IV", "V", "unlearned", "learned")
  lines = [
    "",
    "## By baseline-attributed cause (unlearned rate, baseline → arm)",
    "",
    "| arm | " + " | ".join(causes) + " |",
    "|---|" + "---|" * 7,
  ]
  for name, s in summary.items():
    cells = [
      f"{_pct(s['by_cause'][c]['baseline_rate'])} → {_pct(s['by_cause'][c]['arm_rate'])}" if c in s["by_cause"] else "—"
      for c in causes
    ]
    lines.append(f"| {name} | " + " | ".join(cells) + " |")
  return lines


def _rouge_by_position(summary: dict[str, Any]) -> list[str]:
  lines = [
    "",
    "## ROUGE-L by position in the training stream (first / middle / last 10%; the paper's Table 11)",
    "",
    "| run | first | middle | last |",
    "|---|---|---|---|",
  ]
  first = next(iter(summary.values()), None)
  runs = ([("baseline", first["rouge_l_by_position"]["baseline"])] if first else []) + [
    (name, s["rouge_l_by_position"]["arm"]) for name, s in summary.items()
  ]
  for name, r in runs:
    lines.append(
      f"| {name} | "
      + " | ".join(
        f"{r[k]['rouge_l']:.3f} (n={r[k]['examples']})" if r[k]["rouge_l"] is not None else "—"
        for k in ("first", "middle", "last")
      )
      + " |"
    )
  return lines


def _capability(capability: dict[str, Any]) -> list[str]:
  lines = [
    "",
    "## Held-out capability",
    "",
    "| run | held-out questions, greedy accuracy | held-out text perplexity |",
    "|---|---|---|",
  ]
  for name, c in capability.items():
    q, t = c.get("heldout_questions", {}), c.get("heldout_text", {})
    lines.append(
      f"| {name} | {_pct(q.get('accuracy'))} | {t['perplexity']:.3f} |"
      if t
      else f"| {name} | {_pct(q.get('accuracy'))} | — |"
    )
  return lines
