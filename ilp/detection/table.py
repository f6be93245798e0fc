"""The detection table (paper §2–3): which training examples did SFT fail to teach?

For every training example, from the fine-tuned model (and, for the probes, the base model):
N samples -> pass@N (fraction correct), unbiased pass@k, BoN and BoN@k by the model's own
confidence, greedy correctness, truncations; repeated runs -> Cohen's kappa of the unlearned
labels and an error-consistency severity; a multiple-choice probe of both models -> base
accuracy, P_exist, high-confidence errors and JSD(base || SFT); the base model's samples for
each example's `meta.prerequisites` questions -> the share of prerequisite facts it knows.
Examples are processed in chunks (`chunk_table`), so a stage can write each chunk as it finishes
and resume after the last one.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any, Sequence

import numpy as np
import pandas as pd

from ilp.data import examples as examples_lib
from ilp.data.config import DataConfig
from ilp.detection import multiple_choice as mc
from ilp.detection import prerequisites
from ilp.detection.generative import GenerativeResult, sample_and_verify
from ilp.detection.multiple_choice import MCConfig
from ilp.model import checkpoint
from ilp.sampling.sampler import Sampler, SamplingConfig
from ilp.scoring import estimators
from ilp.scoring.evaluator import ExampleEvaluator
from ilp.scoring.verifiers import VERIFIERS, Verifier, get_verifier
from ilp.typed import check


@dataclasses.dataclass(frozen=True)
class DetectConfig:
  """Detection settings (config section `detect`). The paper gives N = 5 and the 0.2 threshold;
  the decoding settings are ours (README, "Detection")."""
  model: str = "sft"                  # the model to probe: "sft", "model_init", "pretrain" or a checkpoint path
  base: str = "model_init"            # base model for the probes: the same choices, or "" for none
  num_samples: int = 5
  temperature: float = 0.7
  top_k: int = 0
  top_p: float = 1.0
  max_new_tokens: int = 64
  repeats: int = 2                    # sampling runs with different seeds, for Cohen's kappa of the labels
  repeat_temperatures: tuple[float, ...] = ()  # per-run temperatures (default: all at `temperature`)
  threshold: float = 0.2              # a pass rate below this is a failure: unlearned examples, blind facts
  pass_k: tuple[int, ...] = (1, 5)
  bon_k: tuple[int, ...] = (1, 3, 5)
  verifier: str = "exact_match"       # one of VERIFIERS
  verifier_threshold: float = 0.5     # pass mark of the scored verifiers (token_f1, rouge_l)
  dataset_verifiers: tuple[tuple[str, str], ...] = ()  # (dataset, verifier) overriding `verifier`
  base_samples: int = 5               # samples per prompt from the base model (0: greedy only)
  batch_size: int = 16
  chunk_size: int = 512               # examples per resumable part
  top_candidates: int = 1000          # the K most severe unlearned examples are marked
  mc: MCConfig = MCConfig()

  def __post_init__(self):
    check(bool(self.model), "model", "must name a model ('sft', 'model_init', 'pretrain' or a path)")
    check(self.num_samples >= 1, "num_samples", f"must be >= 1, got {self.num_samples}")
    check(self.temperature >= 0, "temperature", f"must be >= 0 (0: greedy), got {self.temperature}")
    check(self.top_k >= 0, "top_k", f"must be >= 0 (0: off), got {self.top_k}")
    check(0 < self.top_p <= 1, "top_p", f"must lie in (0, 1], got {self.top_p}")
    check(self.max_new_tokens >= 1, "max_new_tokens", f"must be >= 1, got {self.max_new_tokens}")
    check(self.repeats >= 1, "repeats", f"must be >= 1, got {self.repeats}")
    check(all(t >= 0 for t in self.repeat_temperatures), "repeat_temperatures",
          f"must be >= 0, got {self.repeat_temperatures}")
    check(0 <= self.threshold <= 1, "threshold", f"must lie in [0, 1], got {self.threshold}")
    for name in ("pass_k", "bon_k"):
      bad = [k for k in getattr(self, name) if not 1 <= k <= self.num_samples]
      check(not bad, name, f"k={bad[0] if bad else ''} is not in 1..num_samples={self.num_samples}")
    for field, name in [("verifier", self.verifier)] + [("dataset_verifiers", v) for _, v in self.dataset_verifiers]:
      check(name in VERIFIERS, field, f"unknown verifier {name!r} (available: {', '.join(VERIFIERS)})")
    check(0 <= self.verifier_threshold <= 1, "verifier_threshold", f"must lie in [0, 1], got {self.verifier_threshold}")
    check(self.base_samples >= 0, "base_samples", f"must be >= 0, got {self.base_samples}")
    for name in ("batch_size", "chunk_size"):
      check(getattr(self, name) >= 1, name, f"must be >= 1, got {getattr(self, name)}")
    check(self.top_candidates >= 0, "top_candidates", f"must be >= 0, got {self.top_candidates}")

  @property
  def temperatures(self) -> list[float]:
    """One temperature per sampling run."""
    return list(self.repeat_temperatures) or [self.temperature] * self.repeats


class Model:
  """A checkpoint with its sampler and evaluator on the mesh."""

  def __init__(self, directory: str, mesh: Any, rules: Sequence[tuple[str, Any]], batch_size: int):
    self.cfg, graphdef, self.params = checkpoint.load_params(directory, mesh, rules)
    self.sampler = Sampler(graphdef, self.cfg, mesh, rules)
    self.evaluator = ExampleEvaluator(graphdef, self.cfg, mesh, batch_size, rules)


@dataclasses.dataclass(frozen=True)
class Inputs:
  """What detection asks about every example: from the examples table, tokenised once."""
  frame: pd.DataFrame                    # the examples table
  prompts: list[np.ndarray]
  verifiers: list[Verifier]
  probes: list[list[prerequisites.Probe]]
  pools: dict[str, dict[str, str]]       # distractor pools per data set

  @classmethod
  def from_examples(cls, frame: pd.DataFrame, detect: DetectConfig, data: DataConfig, tokenizer: Any) -> "Inputs":
    by_dataset = dict(detect.dataset_verifiers)
    verifiers = [get_verifier(by_dataset.get(d, detect.verifier), detect.verifier_threshold) for d in frame["dataset"]]
    return cls(frame, examples_lib.prompts(frame), verifiers,
               prerequisites.probes(frame["id"], frame["meta"], tokenizer, data.template, data.max_length),
               mc.distractor_pools(frame["response"], frame["dataset"]))


def _covering(buckets: Sequence[int], longest: int) -> tuple[int, ...]:
  """The data buckets plus, if needed, one more that fits the longest scored sequence."""
  buckets = sorted(buckets)
  return tuple(buckets if longest <= buckets[-1] else buckets + [int(np.ceil(longest / 64) * 64)])


def _generative_columns(prefix: str, first: GenerativeResult) -> dict:
  """Per-example summaries of one sampling run (the paper's pass@N is the fraction correct)."""
  return {f"{prefix}n": np.full(len(first.correct), first.correct.shape[1]),
          f"{prefix}c": first.correct.sum(1),
          f"{prefix}pass_at_n": estimators.pass_fraction(first.correct),
          f"{prefix}bon": estimators.best_of_n(first.correct, first.confidence),
          f"{prefix}truncated": first.truncated.sum(1),
          f"{prefix}mean_logprob": first.confidence.mean(1),
          f"{prefix}samples": [list(t) for t in first.texts]}


def _mc_columns(cols: dict, options: list[list[str]], probs: dict[str, np.ndarray], mc_config: MCConfig) -> None:
  """The probe's columns: option distributions of both models, P_exist, high-confidence errors, JSD."""
  cols["mc_options"] = options
  cols["mc_probs_sft"] = [list(r) for r in probs["sft"]]
  cols["sft_mc_correct"] = probs["sft"].argmax(1) == 0
  cols["sft_p_true"] = probs["sft"][:, 0]
  if "base" not in probs:
    return
  base = probs["base"]
  wrong = base[:, 1:].max(1) if base.shape[1] > 1 else np.zeros(len(base))
  cols["mc_probs_base"] = [list(r) for r in base]
  cols["base_mc_correct"] = base.argmax(1) == 0
  cols["base_p_true"] = base[:, 0]
  cols["p_exist"] = base[:, 0] > mc_config.p_exist
  cols["base_conf_wrong"] = wrong
  cols["base_high_conf_error"] = (base.argmax(1) != 0) & (wrong > mc_config.t_conf)
  cols["base_belief"] = [opts[int(np.argmax(row[1:])) + 1] if len(opts) > 1 else "" for opts, row in
                         zip(options, base)]
  cols["jsd_base_sft"] = estimators.js_divergence(base, probs["sft"])


def chunk_table(idx: np.ndarray, inputs: Inputs, sft: Model, base: Model | None, detect: DetectConfig, tokenizer: Any,
                buckets: Sequence[int], seed: int) -> pd.DataFrame:
  """The detection table's rows for examples `idx` (row indices of the examples table).

  Args:
    idx: the chunk's examples.
    inputs: prompts, references, verifiers, probes and distractor pools of all examples.
    sft, base: the model probed and the base model (None: no base probes).
    detect: the detection settings.
    tokenizer: decodes samples and tokenises options.
    buckets: prompt padding lengths.
    seed: the chunk's seed; each sampling run derives its own from it.
  """
  frame = inputs.frame
  eos = tokenizer.eos_token_id
  pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
  decode = lambda ids: tokenizer.decode(ids, skip_special_tokens=True).strip()
  p = [inputs.prompts[i] for i in idx]
  refs = [frame["response"].iloc[i] for i in idx]
  ver = [inputs.verifiers[i] for i in idx]
  stops = (eos,)
  run = lambda model, sampling, run_seed: sample_and_verify(model.sampler, model.params, p, refs, ver, decode, sampling,
                                                           buckets, detect.batch_size, pad, run_seed)
  sampled = lambda t, n: SamplingConfig(num_samples=n, max_new_tokens=detect.max_new_tokens, temperature=float(t),
                                        top_k=detect.top_k, top_p=detect.top_p, stop_tokens=stops)
  greedy = SamplingConfig(num_samples=1, max_new_tokens=detect.max_new_tokens, temperature=0.0, stop_tokens=stops)
  runs = [run(sft, sampled(t, detect.num_samples), seed + 7919 * r) for r, t in enumerate(detect.temperatures)]
  first = runs[0]
  rows = frame.iloc[idx]
  cols = {"id": rows["id"].tolist(), "dataset": rows["dataset"].tolist(), "phase": rows["phase"].tolist(),
          "meta": rows["meta"].tolist(), "reference": refs}
  cols.update(_generative_columns("", first))
  for k in detect.pass_k:
    cols[f"pass_at_{k}"] = estimators.unbiased_pass_at_k(detect.num_samples, first.correct.sum(1), k)
  for k in detect.bon_k:
    cols[f"bon_at_{k}"] = estimators.best_of_k(first.correct, first.confidence, k)
  labels = np.stack([estimators.pass_fraction(r.correct) < detect.threshold for r in runs])
  cols["unlearned"] = labels[0]
  cols["unlearned_runs"] = [list(map(bool, labels[:, e])) for e in range(len(idx))]
  cols["error_consistency"] = 1.0 - np.concatenate([r.correct for r in runs], axis=1).mean(1)
  sft_greedy = run(sft, greedy, seed)
  cols["greedy_correct"] = sft_greedy.correct[:, 0]
  cols["greedy_text"] = [t[0] for t in sft_greedy.texts]
  base_answers = None
  if base is not None:
    probe_sampling = sampled(detect.temperature, detect.base_samples) if detect.base_samples else greedy
    cols.update(prerequisites.known_share([inputs.probes[i] for i in idx], ver, base.sampler, base.params,
                                          probe_sampling, detect.threshold, decode, buckets, detect.batch_size, pad,
                                          seed + 2))
    base_greedy = run(base, greedy, seed)
    base_answers = [t[0] for t in base_greedy.texts]
    cols["base_greedy_correct"] = base_greedy.correct[:, 0]
    cols["base_greedy_text"] = base_answers
    if detect.base_samples:
      cols.update(_generative_columns("base_", run(base, sampled(detect.temperature, detect.base_samples), seed + 1)))
  if detect.mc.enabled:
    options = mc.choose_options(cols["id"], refs, cols["dataset"], inputs.pools,
                                base_answers if detect.mc.include_base_answer else None, detect.mc.num_options,
                                detect.mc.distractors, seed)
    option_tokens = [[np.asarray(tokenizer(o, add_special_tokens=False)["input_ids"] + [eos], np.int32) for o in opts]
                     for opts in options]
    longest = max(len(p[e]) + len(t) for e, opts in enumerate(option_tokens) for t in opts)
    score_buckets = _covering(buckets, longest)
    probs = {name: mc.option_probabilities(m.evaluator, m.params, p, option_tokens, detect.mc.num_options,
                                           score_buckets, pad)
             for name, m in (("sft", sft), ("base", base)) if m is not None}
    _mc_columns(cols, options, probs, detect.mc)
  return pd.DataFrame(cols)


def settings_hash(detect: DetectConfig, data: DataConfig, seed: int) -> str:
  """Identifies what finished parts were computed with, so a resume cannot mix settings."""
  payload = json.dumps({"detect": dataclasses.asdict(detect), "data": dataclasses.asdict(data), "seed": seed},
                       sort_keys=True, default=str)
  return hashlib.sha256(payload.encode()).hexdigest()[:16]


def finish(frame: pd.DataFrame, detect: DetectConfig) -> tuple[pd.DataFrame, dict]:
  """Global columns (severity rank, top candidates) and the summary."""
  order = frame.sort_values(["unlearned", "error_consistency", "mean_logprob", "id"],
                            ascending=[False, False, False, True], kind="stable").index
  rank = pd.Series(np.arange(1, len(frame) + 1), index=order)
  frame["severity_rank"] = np.where(frame["unlearned"], rank.reindex(frame.index), 0)
  frame["top_candidate"] = frame["unlearned"] & (frame["severity_rank"] <= detect.top_candidates)
  labels = np.asarray(frame["unlearned_runs"].tolist(), bool).T
  kappa = estimators.mean_pairwise_kappa(labels) if labels.shape[0] >= 2 else None
  rate = lambda g: {str(k): float(v) for k, v in frame.groupby(g)["unlearned"].mean().items()}
  summary = {"examples": int(len(frame)), "unlearned": int(frame["unlearned"].sum()),
             "unlearned_rate": float(frame["unlearned"].mean()), "unlearned_rate_by_dataset": rate("dataset"),
             "unlearned_rate_by_phase": rate("phase"), "kappa_between_runs": kappa, "runs": int(labels.shape[0]),
             "truncated_sample_rate": float(frame["truncated"].sum() / frame["n"].sum()),
             "mean_pass_at_n": float(frame["pass_at_n"].mean())}
  if "p_exist" in frame:
    summary.update(p_exist_rate=float(frame["p_exist"].mean()),
                   base_high_conf_error_rate=float(frame["base_high_conf_error"].mean()),
                   mean_jsd_base_sft=float(frame["jsd_base_sft"].mean()))
  return frame, summary
