"""Detection's settings (config section `detect`), and the identity of what they compute.

`settings_hash` names the settings a finished part of the detection table was computed with, so
a resumed stage never mixes parts of different settings.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json

from ilp.data.config import WORKDIR, DataConfig
from ilp.detection.columns import GENERATIVE, MULTIPLE_CHOICE, PROTOCOLS
from ilp.scoring import estimators
from ilp.scoring.equivalence import AnswersConfig
from ilp.scoring.verifiers import VERIFIERS
from ilp.typed import check

RUN = {MULTIPLE_CHOICE: (MULTIPLE_CHOICE,), GENERATIVE: (GENERATIVE,), "both": PROTOCOLS}
LABELS = ("sampled", "expected")
GUARDS = ("require_converged",)  # settings that gate the stage without changing its outputs: not in the parts' hash
STRATEGIES = ("same_kind", "random", "similar_length")  # how the other examples' responses are picked (MCConfig)
BASE_FORMATS = ("chat", "plain")  # how the base model is asked (`ilp.detection.base_prompts`)
DISTRACTOR_MODELS = ("base", "reference")  # who writes the sampled distractors (MCConfig.distractor_model)


@dataclasses.dataclass(frozen=True)
class MCConfig:
  """The multiple-choice probe (config section `detect.mc`)."""

  enabled: bool = True  # score the options (the multiple_choice protocol needs it)
  num_options: int = 4  # options per question, the true response included
  distractors: str = "same_kind"  # one of STRATEGIES
  include_base_answer: bool = True  # the base model's own greedy answer is an option when it is wrong
  base_distractors: bool | None = None  # model-written wrong answers as options (None: iff that model is set)
  distractor_model: str = "base"  # who writes them: "base" (detect.base) or "reference" (detect.reference)
  base_samples: int = 8  # samples per prompt from the base model, for `base_distractors`
  base_temperature: float = 1.0  # their temperature (1: the base model's own distribution)
  lead_in: bool = True  # long references: the writer continues the reference's words before its first new fact
  p_exist: float = 0.8  # knowledge exists: base accuracy over N predictions > p_exist (paper: 0.8)
  t_conf: float = 0.5  # high-confidence error: base P(a wrong option) > t_conf (paper: not given)

  def __post_init__(self):
    check(self.num_options >= 2, "num_options", f"must be >= 2, got {self.num_options}")
    check(self.distractors in STRATEGIES, "distractors", f"'{self.distractors}' is not one of {STRATEGIES}")
    for name in ("p_exist", "t_conf"):
      check(0 <= getattr(self, name) <= 1, name, f"must lie in [0, 1], got {getattr(self, name)}")
    check(self.base_samples >= 1, "base_samples", f"must be >= 1, got {self.base_samples}")
    check(
      self.base_temperature > 0,
      "base_temperature",
      f"must be > 0 (samples, not the greedy answer), got {self.base_temperature}",
    )


@dataclasses.dataclass(frozen=True)
class DetectConfig:
  """Detection settings (config section `detect`). The paper gives the 4-option MC protocol, N = 5,
  the 0.2 threshold, P_exist's 0.8 and the blind-fact rule; the decoding settings are ours
  (docs/method.md, "Detection")."""

  protocol: str = "both"  # "multiple_choice" (the paper's), "generative", or "both"
  model: str = "sft"  # the model to probe: "sft", "model_init", "pretrain" or a checkpoint path
  base: str = "model_init"  # base (pre-SFT) model for the probes: the same choices, or "" for none
  # how the base model is asked: "chat" (data.template, as SFT asked; an instruct or the world's base
  # model) or "plain" ("Question: ...\nAnswer:", a pre-trained-only checkpoint; ilp.detection.base_prompts)
  base_format: str = "chat"
  base_shots: int = 0  # "plain": solved questions (other SFT records) before each question
  reference: str = ""  # optional other model (e.g. an instruct checkpoint) scored on the MC options
  num_samples: int = 5  # N: predictions (MC) or generations per example and run
  temperature: float = 0.7  # sampling temperature of both protocols
  confidence_temperature: float | None = None  # BoN's confidence temperature (None: `temperature`; 1 if greedy)
  top_k: int = 0  # sample among the k likeliest tokens only (0: all)
  top_p: float = 1.0  # sample within the smallest set of tokens of this probability (1: all)
  max_new_tokens: int = 64  # the most tokens generated per answer (sampled or greedy)
  repeats: int = 2  # sampling runs with different seeds
  repeat_temperatures: tuple[float, ...] = ()  # per-run temperatures (default: all at `temperature`)
  repeat_rule: str = "all"  # unlearned when pass@N < threshold in: all runs, any, a majority, the first
  # "sampled": the repeat rule over the runs (paper); "expected": the model's own probability of a
  # pass at `temperature` < threshold (no sampling noise)
  label: str = "sampled"
  threshold: float = 0.2  # T: a pass rate below this is a failure (unlearned examples, blind facts)
  blind_bon: float = 0.1  # blind fact: also BoN-`blind_bon_k` accuracy below this (paper: BoN-5 < 0.1)
  blind_bon_k: int = 5  # k of the blind-fact rule's BoN-k accuracy (paper: 5); at most base_samples
  pass_k: tuple[int, ...] = (1, 5)  # the k's of the pass@k reported, each in 1..num_samples
  bon_k: tuple[int, ...] = (1, 3, 5)  # the k's of the BoN-k accuracy reported, each in 1..num_samples
  verifier: str = "exact_match"  # one of VERIFIERS (generative protocol)
  verifier_threshold: float = 0.5  # pass mark of the scored verifiers (token_f1, rouge_l)
  dataset_verifiers: tuple[tuple[str, str], ...] = ()  # (dataset, verifier) overriding `verifier`
  base_samples: int = 10  # generations per prompt from the base model (paper's blind facts: pass@10)
  batch_size: int = 16  # sequences per sampling, scoring and embedding batch
  chunk_size: int = 512  # examples per resumable part
  top_candidates: int = 1000  # K: the most severe unlearned examples go on to diagnosis (paper: 1000)
  entity_swaps: int = 3  # donor prompts per example for the base model's entity-swap probe (0: off)
  embedding_dims: int = 256  # the probed model's prompt embeddings, kept to this width (0: off)
  mc: MCConfig = MCConfig()  # the multiple-choice probe
  answers: AnswersConfig = AnswersConfig()  # when two answers say the same: MC options, III, the `equivalent` verifier
  require_converged: bool = False  # refuse a model whose SFT's last phase did not converge (sft/summary.json)

  def __post_init__(self):
    check(self.protocol in RUN, "protocol", f"'{self.protocol}' is not one of {tuple(RUN)}")
    check(
      self.mc.enabled or MULTIPLE_CHOICE not in RUN[self.protocol],
      "mc.enabled",
      f"the {self.protocol} protocol needs the multiple-choice probe",
    )
    check(
      self.mc.distractor_model in DISTRACTOR_MODELS,
      "mc.distractor_model",
      f"'{self.mc.distractor_model}' is not one of {DISTRACTOR_MODELS}",
    )
    check(
      self.mc.base_distractors is not True or bool(getattr(self, self.mc.distractor_model)),
      "mc.base_distractors",
      f"model-written distractors need a model to sample from, but detect.{self.mc.distractor_model} is empty "
      "(mc.distractor_model names it)",
    )
    check(self.base_format in BASE_FORMATS, "base_format", f"'{self.base_format}' is not one of {BASE_FORMATS}")
    check(self.base_shots >= 0, "base_shots", f"must be >= 0, got {self.base_shots}")
    check(
      not self.base_shots or self.base_format == "plain",
      "base_shots",
      f"is {self.base_shots}, but in-context examples go with base_format='plain' (the chat template is SFT's)",
    )
    check(bool(self.model), "model", "must name a model ('sft', 'model_init', 'pretrain' or a path)")
    check(self.num_samples >= 1, "num_samples", f"must be >= 1, got {self.num_samples}")
    check(self.temperature >= 0, "temperature", f"must be >= 0 (0: greedy), got {self.temperature}")
    check(
      self.confidence_temperature is None or self.confidence_temperature > 0,
      "confidence_temperature",
      f"must be > 0, got {self.confidence_temperature}",
    )
    check(self.top_k >= 0, "top_k", f"must be >= 0 (0: off), got {self.top_k}")
    check(0 < self.top_p <= 1, "top_p", f"must lie in (0, 1], got {self.top_p}")
    check(self.max_new_tokens >= 1, "max_new_tokens", f"must be >= 1, got {self.max_new_tokens}")
    check(self.repeats >= 1, "repeats", f"must be >= 1, got {self.repeats}")
    check(
      all(t >= 0 for t in self.repeat_temperatures),
      "repeat_temperatures",
      f"must be >= 0, got {self.repeat_temperatures}",
    )
    check(
      self.repeat_rule in estimators.REPEAT_RULES,
      "repeat_rule",
      f"'{self.repeat_rule}' is not one of {estimators.REPEAT_RULES}",
    )
    check(self.label in LABELS, "label", f"'{self.label}' is not one of {LABELS}")
    if self.label == "expected" and GENERATIVE in self.protocols:
      used = {self.verifier} | {v for _, v in self.dataset_verifiers}
      check(
        used == {"exact_match"} and self.top_k == 0 and self.top_p == 1.0,
        "label",
        "'expected' needs, for the generative protocol, the exact_match verifier only and no top_k/top_p "
        f"(the probability of a pass is then the reference's own); got verifiers {sorted(used)}, "
        f"top_k={self.top_k}, top_p={self.top_p}",
      )
    for name in ("threshold", "blind_bon"):
      check(0 <= getattr(self, name) <= 1, name, f"must lie in [0, 1], got {getattr(self, name)}")
    for name in ("pass_k", "bon_k"):
      bad = [k for k in getattr(self, name) if not 1 <= k <= self.num_samples]
      check(not bad, name, f"k={bad[0] if bad else ''} is not in 1..num_samples={self.num_samples}")
    check(
      1 <= self.blind_bon_k <= max(self.base_samples, 1),
      "blind_bon_k",
      f"{self.blind_bon_k} is not in 1..base_samples={self.base_samples}",
    )
    for field, name in [("verifier", self.verifier)] + [("dataset_verifiers", v) for _, v in self.dataset_verifiers]:
      check(name in VERIFIERS, field, f"unknown verifier {name!r} (available: {', '.join(VERIFIERS)})")
    check(0 <= self.verifier_threshold <= 1, "verifier_threshold", f"must lie in [0, 1], got {self.verifier_threshold}")
    check(self.base_samples >= 0, "base_samples", f"must be >= 0, got {self.base_samples}")
    for name in ("batch_size", "chunk_size"):
      check(getattr(self, name) >= 1, name, f"must be >= 1, got {getattr(self, name)}")
    check(self.top_candidates >= 0, "top_candidates", f"must be >= 0, got {self.top_candidates}")
    for name in ("entity_swaps", "embedding_dims"):
      check(getattr(self, name) >= 0, name, f"must be >= 0 (0: off), got {getattr(self, name)}")

  @property
  def protocols(self) -> tuple[str, ...]:
    return RUN[self.protocol]

  @property
  def temperatures(self) -> list[float]:
    """One temperature per sampling run."""
    return list(self.repeat_temperatures) or [self.temperature] * self.repeats

  def confidence_at(self, temperature: float) -> float:
    """The temperature BoN's confidence is measured at, for samples drawn at `temperature`."""
    if self.confidence_temperature is not None:
      return self.confidence_temperature
    return temperature if temperature > 0 else 1.0


def settings_hash(detect: DetectConfig, data: DataConfig, seed: int, root: str) -> str:
  """Identifies what finished parts were computed with, so a resume cannot mix settings. Paths
  under the work directory `root` count relative to it, so a moved work directory resumes."""
  settings = {k: v for k, v in dataclasses.asdict(detect).items() if k not in GUARDS}
  payload = json.dumps(
    {"detect": settings, "data": dataclasses.asdict(data), "seed": seed}, sort_keys=True, default=str
  )
  return hashlib.sha256(payload.replace(root.rstrip("/"), WORKDIR).encode()).hexdigest()[:16]
