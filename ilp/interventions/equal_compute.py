"""Each run's training compute, and the equal-compute "more epochs" control of each mitigation.

Compute. A run's intervention compute is what it trained beyond the base model all runs share:
its SFT and, for the knowledge and calibration arms, its continual pre-training (the arm's own
`pretrain/`; the baseline's `pretrain/` made the shared base model and is not counted). Tokens are
the training loop's counts in each stage's `summary.json` (real, padded and loss tokens summed
over the stage's optimizer steps); FLOPs are 6·N·D over the padded tokens
(`training_flops_per_token` without its attention term, which needs each batch's length).

Control. More SFT alone teaches more (the paper's Table 4) and every mitigation costs compute, so
each mitigation is also compared with the baseline trained longer on the mitigation's budget.
Design: one explicit control run per budget, not one run at the largest budget with the others
interpolated: the unlearned rate is not linear in epochs (it falls, plateaus, and forgetting
grows), so an interpolation would rest on a curve nobody measured. After a mitigation arm has
run, its measured budget B (real tokens) becomes an epoch count E of the baseline's last SFT phase
(of every phase when `sft.phases` is empty: `sft.epochs`). That control trains
T(E) = T_base + (E - E_base) * t real tokens (`Raised.tokens`, for phases of unequal E_base too):
T_base the baseline's measured SFT tokens, t the real tokens of one epoch of that phase (its
examples' lengths as trained, an epoch visiting each once, times 1 + the replay tokens the
baseline trained per example token: replay steps come with every epoch), E_base the epochs the
baseline trained it (its summary's `trained_epochs` when the phase trained until converged, else
the config's).
Rounding "nearest" takes the E whose T(E) is nearest B (within half an epoch either way, ties
up); "up" the least E with T(E) >= B (never less compute than the arm, at most one epoch more).
When E <= E_base (the arm costs at most half an epoch more than the baseline, or less), the
baseline itself is the control. Controls are named by E, so arms of
one budget share a run; once a control ran, its measured tokens are reported beside the arm's.

A baseline trained until converged (`sft.convergence.max_epochs`): E_base and the other phases'
epochs are the ones it trained (`trained_epochs`), and the control, an `epochs` arm, trains
exactly that, the raised phase(s) at E: raising the last phase, it continues the baseline from
that phase's plateau (`sft.extend`), so it is the baseline's own run up to there; otherwise from
the base model with convergence off, every other phase at its trained epochs
(`ilp.interventions.epochs`, `arms.Context.trained_phases`). T(E) counts either.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from typing import Any, Sequence

import pandas as pd

from ilp.data import batches
from ilp.detection import columns as col
from ilp.interventions import compare
from ilp.interventions.config import CONTROL_PREFIX, ArmConfig
from ilp.layout import Layout
from ilp.model.config import CONFIG_FILE, read_model_config
from ilp.model.flops import training_flops_per_token

log = logging.getLogger(__name__)

TOKENS = ("real", "padded", "loss")
BASELINE_STAGES = ("sft",)  # the baseline's pretrain made the base model every run starts from
ARM_STAGES = ("pretrain", "sft")  # an arm's pretrain is its own continual pre-training (CPT arms only)


def is_control(arm: ArmConfig) -> bool:
  """A "more epochs" arm is itself a compute control: it gets no equal-compute control."""
  return arm.intervention == "epochs"


def compute(layout: Layout, stages: Sequence[str]) -> dict[str, Any] | None:
  """The real, padded and loss tokens of the `stages` that ran in `layout`, per stage and summed,
  and the sum's FLOPs (None without the model's config); None when SFT has no token count (not
  run yet, or run before the counts were recorded)."""
  by_stage = {}
  for stage in stages:
    if os.path.exists(layout.summary(stage)):
      with open(layout.summary(stage)) as f:
        by_stage[stage] = json.load(f).get("tokens")
  if by_stage.get("sft") is None or None in by_stage.values():
    return None
  total = {k: sum(int(t[k]) for t in by_stage.values()) for k in TOKENS}
  model = layout.final("sft")
  flops = (
    training_flops_per_token(read_model_config(model), 0) * total["padded"]
    if os.path.exists(os.path.join(model, CONFIG_FILE))
    else None
  )
  return {"tokens": total, "by_stage": by_stage, "flops": flops}


# interventions whose run is the whole cost of its model: the online arm acts during SFT itself, and
# a "more epochs" run's counts already hold the baseline's trunk it continues (restored with it)
STANDALONE = ("online", "epochs")


def totals(compute: dict[str, dict[str, Any] | None], arms: Sequence[ArmConfig]) -> dict[str, dict[str, Any] | None]:
  """`compute` (run name -> `compute(...)`; "baseline" among them) with each run's total real
  tokens added (`total_real`): what a user spends to get that run's model. A post-hoc arm needs
  the baseline trained and diagnosed first, so its total adds the baseline's tokens; the baseline,
  a standalone arm (`STANDALONE`) and a derived more-epochs control count their own."""
  standalone = {"baseline"} | {a.name for a in arms if a.intervention in STANDALONE}
  standalone |= {name for name in compute if name.startswith(CONTROL_PREFIX)}
  base = (compute.get("baseline") or {}).get("tokens", {}).get("real")
  out = {}
  for name, c in compute.items():
    first = 0 if name in standalone else base
    out[name] = c and {**c, "total_real": None if first is None else c["tokens"]["real"] + first}
  return out


@dataclasses.dataclass(frozen=True)
class Raised:
  """What the control trains longer, as the baseline trained it."""

  phases: tuple[str, ...]  # names for the epochs intervention; () = every phase (via `sft.epochs`)
  epochs: int  # the most epochs the baseline trained one of them
  epoch_tokens: int  # real tokens of one epoch of them all
  trained_tokens: int  # real tokens the baseline trained on them: each one's epochs x its epoch

  def tokens(self, baseline: int, epochs: int) -> int:
    """Real tokens of the baseline's run (`baseline` of them) with these phases at `epochs`."""
    return baseline - self.trained_tokens + epochs * self.epoch_tokens


def trained_epochs(layout: Layout) -> dict[str, int]:
  """The epochs the baseline's SFT phases trained where its summary records them (phases trained
  until converged: `convergence.phases.<name>.trained_epochs`); the others trained their config's."""
  with open(layout.summary("sft")) as f:
    phases = (json.load(f).get("convergence") or {}).get("phases", {})
  return {name: int(p["trained_epochs"]) for name, p in phases.items() if p.get("trained_epochs")}


def plateau_epochs(layout: Layout) -> dict[str, int]:
  """The epoch each of the baseline's phases trained to convergence ended its plateau at (its
  summary's `convergence.phases.<name>.epoch` where it has `trained_epochs`), by phase name."""
  with open(layout.summary("sft")) as f:
    phases = (json.load(f).get("convergence") or {}).get("phases", {})
  return {name: int(p["epoch"]) for name, p in phases.items() if p.get("trained_epochs")}


def plateau_checkpoint(layout: Layout) -> str | None:
  """The baseline's train-state checkpoint at the step where training to convergence decided its
  last phase (the convergence control's state in `sft/summary.json`), when it is still there."""
  with open(layout.summary("sft")) as f:
    summary = json.load(f)
  decisions = (summary.get("controls") or [{}])[0].get("decisions", {})
  decided = decisions.get(str(summary.get("phases", 0)))
  path = decided and os.path.join(layout.checkpoints("sft"), str(decided["step"]))
  return path if path and os.path.isdir(path) else None


def raised(sft: Any, examples: pd.DataFrame, trained: dict[str, int] | None = None, replay: float = 0.0) -> Raised:
  """The baseline's last SFT phase (every phase when `sft.phases` is empty) over `examples`, the
  baseline's examples table as trained (dataset, phase, length); `trained`: the epochs phases
  actually trained, by name, where they differ from the config's (`trained_epochs`); `replay`:
  real tokens of replay batches per real token of SFT examples (`sft.replay`, the baseline's
  measured ratio), which every epoch trains besides its examples."""
  specs = batches.plan_phases(
    examples["dataset"].to_numpy(object), examples["phase"].to_numpy(), sft.phases, sft.epochs
  )
  chosen = specs[-1:] if sft.phases else specs
  lengths = examples["length"].to_numpy()
  per_epoch = [round(int(lengths[s.examples].sum()) * (1 + replay)) for s in chosen]
  epochs = [(trained or {}).get(s.name, s.epochs) for s in chosen]
  return Raised(
    tuple(s.name for s in chosen) if sft.phases else (),
    max(epochs, default=sft.epochs),
    sum(per_epoch),
    sum(e * t for e, t in zip(epochs, per_epoch)),
  )


def control_epochs(budget: int, baseline: int, raised: Raised, rounding: str) -> int:
  """The epochs E of the raised phase(s) whose run's tokens `raised.tokens(baseline, E)` match
  `budget`: the nearest (ties up), or with `rounding`="up" the least E reaching it; at least 1."""
  left, t = budget - baseline + raised.trained_tokens, raised.epoch_tokens  # for the raised phases
  return max(1, -(-left // t) if rounding == "up" else (2 * left + t) // (2 * t))


@dataclasses.dataclass(frozen=True)
class Plan:
  """A mitigation's equal-compute control."""

  budget: int  # the arm's real tokens (its CPT + SFT)
  baseline: int  # the baseline's real SFT tokens
  epochs: int  # of the raised phase(s) in the control
  predicted: int  # the control's real tokens, T(epochs)
  raised: Raised
  arm: ArmConfig | None  # the derived control arm; None: the baseline is the control

  @property
  def name(self) -> str:
    return self.arm.name if self.arm else "baseline"


def plan(config: Any, layout: Layout, arm: ArmConfig) -> Plan | None:
  """The equal-compute control of `arm` once it has run (`layout`: the baseline's); None when the
  comparison is off, `arm` is itself a control, or a token count is missing."""
  if not config.interventions.equal_compute or is_control(arm):
    return None
  base, own = compute(layout, BASELINE_STAGES), compute(layout.arm(arm.name), ARM_STAGES)
  if base is None or own is None or not os.path.exists(layout.examples):
    log.warning(
      "arm %s: no token counts in the baseline's or the arm's summary.json (or no %s): no equal-compute control",
      arm.name,
      layout.examples,
    )
    return None
  sft_tokens = base["by_stage"]["sft"]
  replay = int(sft_tokens.get("replay", 0)) / max(int(sft_tokens["real"]) - int(sft_tokens.get("replay", 0)), 1)
  examples = pd.read_parquet(layout.examples, columns=["dataset", "phase", "length"])
  r = raised(config.sft, examples, trained_epochs(layout), replay)
  if not r.epoch_tokens:
    return None
  budget, baseline = own["tokens"]["real"], base["tokens"]["real"]
  epochs = max(r.epochs, control_epochs(budget, baseline, r, config.interventions.equal_compute_rounding))
  control = (
    ArmConfig(f"{CONTROL_PREFIX}{epochs}", "epochs", {"epochs": epochs, "phases": r.phases})
    if epochs > r.epochs
    else None
  )
  return Plan(budget, baseline, epochs, r.tokens(baseline, epochs) if control else baseline, r, control)


def against_control(
  layout: Layout,
  plan: Plan,
  control: dict[str, Any] | None,
  base: pd.DataFrame,
  name: str,
  table: pd.DataFrame,
  targets: tuple[str, ...],
  bootstrap_samples: int,
  seed: int,
) -> tuple[pd.DataFrame | None, dict[str, Any]]:
  """Arm `name` (`table`, its target causes `targets`) against its equal-compute control: the same
  paired statistics as against the baseline (`compare.comparison` with the control's table in the
  baseline's place), over the baseline-attributed causes; "unlearned"/"learned" and the DiD's
  other examples are then the control's. `control` is that run's compute (None until it ran); no
  "comparison" until the control finished. Returns the control's comparison rows (None when the
  control is the baseline itself, whose rows the comparison has already) and the summary entry."""
  tokens = control["tokens"]["real"] if control else None
  entry = {
    "control": plan.name,
    "raised_phases": list(plan.raised.phases),
    "epochs": plan.epochs,
    "baseline_epochs": plan.raised.epochs,
    "epoch_tokens": plan.raised.epoch_tokens,
    "arm_tokens": plan.budget,
    "predicted_tokens": plan.predicted,
    "control_tokens": tokens,
    "tokens_ratio": tokens / plan.budget if tokens and plan.budget else None,
  }
  if plan.arm is None:
    reference = base
  elif os.path.exists(layout.arm(plan.name).attribution):
    reference = pd.read_parquet(layout.arm(plan.name).attribution, columns=list(compare.COLUMNS))
    reference = reference.merge(base[[col.ID, col.CAUSE]], on=col.ID)
  else:
    return None, {**entry, "finished": False}
  frame, summary = compare.comparison(reference, {name: table}, {name: targets}, bootstrap_samples, seed)
  rows = None if plan.arm is None else frame.assign(reference=plan.name)  # the baseline's rows are there already
  return rows, {**entry, "finished": True, "comparison": summary[name]}
