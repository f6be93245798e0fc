"""The detection table (paper §2–3): which training examples did SFT fail to teach?

For every training example, from the fine-tuned model (and, for the probes, the base model):
N samples -> pass@N (fraction correct), unbiased pass@k, BoN and BoN@k by the model's own
confidence, greedy correctness, truncations; repeated runs -> Cohen's kappa of the unlearned
labels and an error-consistency severity; a multiple-choice probe of both models -> base
accuracy, P_exist, high-confidence errors and JSD(base || SFT); the base model's samples for
each example's `meta.prerequisites` questions -> the share of prerequisite facts it knows. The
probe's wrong options include the base model's own sampled wrong answers (`MCConfig.base_distractors`),
and `mc_options_from_<source>` counts, per example, the wrong options of each source.
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

from ilp import parallel
from ilp.data import batches as batching
from ilp.data import examples as examples_lib
from ilp.data.config import WORKDIR, DataConfig
from ilp.data.records import DISTRACTORS
from ilp.detection import multiple_choice as mc
from ilp.detection import entities, prerequisites
from ilp.detection.generative import GenerativeResult, sample_and_verify
from ilp.detection.multiple_choice import MCConfig
from ilp.model import checkpoint
from ilp.sampling.sampler import Sampler, SamplingConfig
from ilp.scoring import estimators
from ilp.scoring.embedding import PromptEmbedder
from ilp.scoring.evaluator import ExampleEvaluator, continuation_token_logliks
from ilp.scoring.verifiers import VERIFIERS, Verifier, get_verifier
from ilp.typed import check


PROTOCOLS = ("multiple_choice", "generative")
RUN = {"multiple_choice": ("multiple_choice",), "generative": ("generative",), "both": PROTOCOLS}
PREFIX = {"multiple_choice": "mc_", "generative": "gen_"}  # column prefix of each protocol's numbers
LABELS = ("sampled", "expected")
GUARDS = ("require_converged",)  # settings that gate the stage without changing its outputs: not in the parts' hash


@dataclasses.dataclass(frozen=True)
class DetectConfig:
  """Detection settings (config section `detect`). The paper gives the 4-option MC protocol, N = 5,
  the 0.2 threshold, P_exist's 0.8 and the blind-fact rule; the decoding settings are ours
  (docs/method.md, "Detection")."""
  protocol: str = "both"              # "multiple_choice" (the paper's), "generative", or "both"
  model: str = "sft"                  # the model to probe: "sft", "model_init", "pretrain" or a checkpoint path
  base: str = "model_init"            # base (pre-SFT) model for the probes: the same choices, or "" for none
  reference: str = ""                 # optional other model (e.g. an instruct checkpoint) scored on the MC options
  num_samples: int = 5                # N: predictions (MC) or generations per example and run
  temperature: float = 0.7            # sampling temperature of both protocols
  confidence_temperature: float | None = None  # BoN's confidence temperature (None: `temperature`; 1 if greedy)
  top_k: int = 0
  top_p: float = 1.0
  max_new_tokens: int = 64
  repeats: int = 2                    # sampling runs with different seeds
  repeat_temperatures: tuple[float, ...] = ()  # per-run temperatures (default: all at `temperature`)
  repeat_rule: str = "all"            # unlearned when pass@N < threshold in: all runs, any, a majority, the first
  label: str = "sampled"              # "sampled": the repeat rule over the runs (paper); "expected": the model's own
                                      # probability of a pass at `temperature` < threshold (no sampling noise)
  threshold: float = 0.2              # T: a pass rate below this is a failure (unlearned examples, blind facts)
  blind_bon: float = 0.1              # blind fact: also BoN-`blind_bon_k` accuracy below this (paper: BoN-5 < 0.1)
  blind_bon_k: int = 5
  pass_k: tuple[int, ...] = (1, 5)
  bon_k: tuple[int, ...] = (1, 3, 5)
  verifier: str = "exact_match"       # one of VERIFIERS (generative protocol)
  verifier_threshold: float = 0.5     # pass mark of the scored verifiers (token_f1, rouge_l)
  dataset_verifiers: tuple[tuple[str, str], ...] = ()  # (dataset, verifier) overriding `verifier`
  base_samples: int = 10              # generations per prompt from the base model (paper's blind facts: pass@10)
  batch_size: int = 16
  chunk_size: int = 512               # examples per resumable part
  top_candidates: int = 1000          # K: the most severe unlearned examples go on to diagnosis (paper: 1000)
  entity_swaps: int = 3               # donor prompts per example for the base model's entity-swap probe (0: off)
  embedding_dims: int = 256           # the probed model's prompt embeddings, kept to this width (0: off)
  mc: MCConfig = MCConfig()
  require_converged: bool = False     # refuse a model whose SFT's last phase did not converge (sft/summary.json)

  def __post_init__(self):
    check(self.protocol in RUN, "protocol", f"'{self.protocol}' is not one of {tuple(RUN)}")
    check(self.mc.enabled or "multiple_choice" not in RUN[self.protocol], "mc.enabled",
          f"the {self.protocol} protocol needs the multiple-choice probe")
    check(self.mc.base_distractors is not True or bool(self.base), "mc.base_distractors",
          "the base model's sampled answers need a base model, but detect.base is empty")
    check(bool(self.model), "model", "must name a model ('sft', 'model_init', 'pretrain' or a path)")
    check(self.num_samples >= 1, "num_samples", f"must be >= 1, got {self.num_samples}")
    check(self.temperature >= 0, "temperature", f"must be >= 0 (0: greedy), got {self.temperature}")
    check(self.confidence_temperature is None or self.confidence_temperature > 0, "confidence_temperature",
          f"must be > 0, got {self.confidence_temperature}")
    check(self.top_k >= 0, "top_k", f"must be >= 0 (0: off), got {self.top_k}")
    check(0 < self.top_p <= 1, "top_p", f"must lie in (0, 1], got {self.top_p}")
    check(self.max_new_tokens >= 1, "max_new_tokens", f"must be >= 1, got {self.max_new_tokens}")
    check(self.repeats >= 1, "repeats", f"must be >= 1, got {self.repeats}")
    check(all(t >= 0 for t in self.repeat_temperatures), "repeat_temperatures",
          f"must be >= 0, got {self.repeat_temperatures}")
    check(self.repeat_rule in estimators.REPEAT_RULES, "repeat_rule",
          f"'{self.repeat_rule}' is not one of {estimators.REPEAT_RULES}")
    check(self.label in LABELS, "label", f"'{self.label}' is not one of {LABELS}")
    if self.label == "expected" and "generative" in self.protocols:
      used = {self.verifier} | {v for _, v in self.dataset_verifiers}
      check(used == {"exact_match"} and self.top_k == 0 and self.top_p == 1.0, "label",
            "'expected' needs, for the generative protocol, the exact_match verifier only and no top_k/top_p "
            f"(the probability of a pass is then the reference's own); got verifiers {sorted(used)}, "
            f"top_k={self.top_k}, top_p={self.top_p}")
    for name in ("threshold", "blind_bon"):
      check(0 <= getattr(self, name) <= 1, name, f"must lie in [0, 1], got {getattr(self, name)}")
    for name in ("pass_k", "bon_k"):
      bad = [k for k in getattr(self, name) if not 1 <= k <= self.num_samples]
      check(not bad, name, f"k={bad[0] if bad else ''} is not in 1..num_samples={self.num_samples}")
    check(1 <= self.blind_bon_k <= max(self.base_samples, 1), "blind_bon_k",
          f"{self.blind_bon_k} is not in 1..base_samples={self.base_samples}")
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


class Model:
  """A checkpoint with its sampler and evaluator on the mesh."""

  def __init__(self, directory: str, mesh: Any, rules: Sequence[tuple[str, Any]], batch_size: int):
    self.cfg, graphdef, self.params = checkpoint.load_any(directory, mesh, rules)
    self.sampler = Sampler(graphdef, self.cfg, mesh, rules)
    self.evaluator = ExampleEvaluator(graphdef, self.cfg, mesh, batch_size, rules)
    self.embedder = PromptEmbedder(graphdef, self.cfg, mesh, batch_size, rules)


@dataclasses.dataclass(frozen=True)
class Models:
  """The model probed, and the optional base and reference models."""
  sft: Model
  base: Model | None = None
  reference: Model | None = None


@dataclasses.dataclass(frozen=True)
class Inputs:
  """What detection asks about every example: from the examples table, tokenised once."""
  frame: pd.DataFrame                    # the examples table
  prompts: list[np.ndarray]
  verifiers: list[Verifier]
  probes: list[list[prerequisites.Probe]]
  distractors: mc.Distractors
  swapped: list[list[np.ndarray]]        # per example, its entity-swapped prompts (`entities`)

  @classmethod
  def from_examples(cls, frame: pd.DataFrame, detect: DetectConfig, data: DataConfig, tokenizer: Any) -> "Inputs":
    by_dataset = dict(detect.dataset_verifiers)
    verifiers = [get_verifier(by_dataset.get(d, detect.verifier), detect.verifier_threshold) for d in frame["dataset"]]
    metas = [json.loads(m) for m in frame["meta"]]
    supplied = [(meta.get(DISTRACTORS) or []) + other for meta, other in
                zip(metas, mc.duplicate_answers(frame["prompt"], frame["response"]))]
    swapped = entities.swapped_prompts(list(frame["prompt"]), detect.entity_swaps, seed=0)
    flat = entities.render([q for texts in swapped for q in texts], tokenizer, data.template, data.max_length)
    ends = np.cumsum([len(texts) for texts in swapped])
    return cls(frame, examples_lib.prompts(frame), verifiers,
               prerequisites.probes(frame["id"], metas, tokenizer, data.template, data.max_length),
               mc.Distractors.build(frame["prompt"], frame["response"], frame["dataset"], supplied),
               [flat[e - len(texts):e] for e, texts in zip(ends, swapped)])


def _generation_columns(prefix: str, first: GenerativeResult) -> dict:
  """What only generations have, per example of one sampling run: samples, truncations, confidence."""
  return {f"{prefix}n": np.full(len(first.correct), first.correct.shape[1]),
          f"{prefix}truncated": first.truncated.sum(1),
          f"{prefix}mean_logprob": first.confidence.mean(1),
          f"{prefix}samples": [list(t) for t in first.texts]}


def _score_columns(prefix: str, correct: np.ndarray, confidence: np.ndarray) -> dict:
  """Correct count, pass@N (the paper's: the fraction correct) and BoN of one run's [examples, N]."""
  return {f"{prefix}pass_at_n": estimators.pass_fraction(correct), f"{prefix}c": correct.sum(1),
          f"{prefix}bon": estimators.best_of_n(correct, confidence)}


def _protocol_columns(prefix: str, runs: list[tuple[np.ndarray, np.ndarray]], detect: DetectConfig) -> dict:
  """A protocol's label columns from its runs' ([examples, N] correct, confidence): pass@N, unbiased
  pass@k, BoN and BoN@k of the first run; the per-run labels (pass@N < threshold), the label
  combined by `repeat_rule`, and the error consistency (share of wrong predictions over all runs)."""
  correct, confidence = runs[0]
  labels = np.stack([estimators.pass_fraction(c) < detect.threshold for c, _ in runs])
  cols = _score_columns(prefix, correct, confidence)
  for k in detect.pass_k:
    cols[f"{prefix}pass_at_{k}"] = estimators.unbiased_pass_at_k(detect.num_samples, correct.sum(1), k)
  for k in detect.bon_k:
    cols[f"{prefix}bon_at_{k}"] = estimators.best_of_k(correct, confidence, k)
  cols[f"{prefix}unlearned"] = estimators.combine_runs(labels, detect.repeat_rule)
  cols[f"{prefix}unlearned_runs"] = [list(map(bool, labels[:, e])) for e in range(labels.shape[1])]
  cols[f"{prefix}error_consistency"] = 1.0 - np.concatenate([c for c, _ in runs], axis=1).mean(1)
  return cols


def _mc_columns(probs: dict[str, np.ndarray], options: list[list[str]], detect: DetectConfig, seed: int) -> dict:
  """The probe's columns: option distributions, the paper's MC protocol on the probed model, and
  the base model's P_exist (accuracy over N predictions > p_exist), high-confidence errors and JSD."""
  sft = probs["sft"]
  predict = lambda p, t, run_seed: mc.predictions(p, t, detect.confidence_at(t), detect.num_samples, run_seed)
  cols = {"mc_options": options, "mc_probs_sft": [list(r) for r in sft], "sft_mc_correct": sft.argmax(1) == 0,
          "sft_p_true": sft[:, 0]}
  if "multiple_choice" in detect.protocols:
    runs = [predict(sft, t, seed + 7919 * r) for r, t in enumerate(detect.temperatures)]
    cols.update(_protocol_columns(PREFIX["multiple_choice"], runs, detect))
    cols["mc_expected_pass"] = estimators.temper(sft, detect.temperature)[:, 0]
  if "reference" in probs:
    cols.update(reference_mc_correct=probs["reference"].argmax(1) == 0, reference_p_true=probs["reference"][:, 0])
  if "base" not in probs:
    return cols
  base = probs["base"]
  wrong = base[:, 1:].max(1) if base.shape[1] > 1 else np.zeros(len(base))
  belief = base[:, 1:].argmax(1) + 1 if base.shape[1] > 1 else np.zeros(len(base), np.int64)
  accuracy = estimators.pass_fraction(predict(base, detect.temperature, seed + 3)[0])
  cols.update(mc_probs_base=[list(r) for r in base], base_mc_correct=base.argmax(1) == 0, base_p_true=base[:, 0],
              base_mc_accuracy=accuracy, p_exist=accuracy > detect.mc.p_exist, base_conf_wrong=wrong,
              base_high_conf_error=(base.argmax(1) != 0) & (wrong > detect.mc.t_conf),
              base_belief=[opts[int(np.argmax(row[1:])) + 1] if len(opts) > 1 else "" for opts, row in zip(options, base)],
              jsd_base_sft=estimators.js_divergence(base, sft),
              sft_p_base_belief=np.where(belief > 0, sft[np.arange(len(sft)), belief], 0.0))
  return cols


def chunk_table(idx: np.ndarray, inputs: Inputs, models: Models, detect: DetectConfig, tokenizer: Any,
                buckets: Sequence[int], seed: int) -> pd.DataFrame:
  """The detection table's rows for examples `idx` (row indices of the examples table).

  Args:
    idx: the chunk's examples.
    inputs: prompts, references, verifiers, probes and distractor pools of all examples.
    models: the model probed, and the base (None: no base probes) and reference models.
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
                                        top_k=detect.top_k, top_p=detect.top_p, stop_tokens=stops,
                                        confidence_temperature=detect.confidence_at(float(t)))
  greedy = SamplingConfig(num_samples=1, max_new_tokens=detect.max_new_tokens, temperature=0.0, stop_tokens=stops)
  rows = frame.iloc[idx]
  cols = {"id": rows["id"].tolist(), "dataset": rows["dataset"].tolist(), "phase": rows["phase"].tolist(),
          "meta": rows["meta"].tolist(), "reference": refs}
  if "generative" in detect.protocols:
    runs = [run(models.sft, sampled(t, detect.num_samples), seed + 7919 * r) for r, t in enumerate(detect.temperatures)]
    prefix = PREFIX["generative"]
    cols.update(_generation_columns(prefix, runs[0]))
    cols.update(_protocol_columns(prefix, [(r.correct, r.confidence) for r in runs], detect))
    sft_greedy = run(models.sft, greedy, seed)
    cols[f"{prefix}expected_pass"] = (_reference_probability(idx, inputs, models.sft, detect.temperature, buckets, pad)
                                      if detect.temperature > 0 else sft_greedy.correct[:, 0].astype(np.float64))
    cols["greedy_correct"] = sft_greedy.correct[:, 0]
    cols["greedy_text"] = [t[0] for t in sft_greedy.texts]
  base_answers = None   # per example, the base model's wrong answers to offer as options
  if models.base is not None:
    base = models.base
    probe_sampling = sampled(detect.temperature, detect.base_samples) if detect.base_samples else greedy
    cols.update(prerequisites.known_share([inputs.probes[i] for i in idx], ver, base.sampler, base.params,
                                          probe_sampling, detect, decode, buckets, pad, seed + 2))
    base_greedy = run(base, greedy, seed)
    cols["base_greedy_correct"] = base_greedy.correct[:, 0]
    cols["base_greedy_text"] = [t[0] for t in base_greedy.texts]
    # an answer the verifier accepts is no distractor; nor is a sample cut by the budget (not an answer given)
    base_answers = [t[:1] if detect.mc.include_base_answer and not ok else []
                    for t, ok in zip(base_greedy.texts, base_greedy.correct[:, 0])]
    sampled_base = run(base, probe_sampling, seed + 1) if detect.base_samples else base_greedy
    if detect.mc.enabled and detect.mc.base_distractors is not False:
      mc_sampling = sampled(detect.mc.base_temperature, detect.mc.base_samples)
      drawn = sampled_base if mc_sampling == probe_sampling else run(base, mc_sampling, seed + 4)
      for e, ref in enumerate(refs):
        wrong = [t for t, ok, cut in zip(drawn.texts[e], drawn.correct[e], drawn.truncated[e]) if not (ok or cut)]
        base_answers[e] += mc.ranked_wrong_answers(wrong, ref, detect.mc.same_answer_rouge_l)
    if detect.base_samples:
      cols.update(_generation_columns("base_", sampled_base))
      cols.update(_score_columns("base_", sampled_base.correct, sampled_base.confidence))
    cols["base_bon_at_blind_k"] = prerequisites.blind_rates(sampled_base, detect)[1]
    cols["base_blind"] = prerequisites.blind(sampled_base, detect)
    if detect.entity_swaps:
      cols["base_entity_lift"] = _entity_lift(idx, inputs, base, buckets, pad, set(tokenizer.all_special_ids))
  if detect.embedding_dims:
    cols["prompt_embedding"] = list(models.sft.embedder(models.sft.params, p, buckets, pad, detect.embedding_dims))
  if detect.mc.enabled:
    chosen = mc.choose_options(cols["id"], idx, refs, inputs.distractors, base_answers, detect.mc.num_options,
                               detect.mc.distractors, seed, detect.mc.same_answer_rouge_l)
    options = chosen.texts
    cols.update({f"mc_options_from_{source}": chosen.counts[:, k] for k, source in enumerate(mc.SOURCES)})
    option_tokens = [[np.asarray(tokenizer(o, add_special_tokens=False)["input_ids"] + [eos], np.int32) for o in opts]
                     for opts in options]
    longest = max(len(p[e]) + len(t) for e, opts in enumerate(option_tokens) for t in opts)
    score_buckets = batching.covering(buckets, longest)
    probs = {name: mc.option_probabilities(m.evaluator, m.params, p, option_tokens, detect.mc.num_options,
                                           score_buckets, pad)
             for name, m in (("sft", models.sft), ("base", models.base), ("reference", models.reference))
             if m is not None}
    cols.update(_mc_columns(probs, options, detect, seed))
  for protocol in detect.protocols:
    p = PREFIX[protocol]
    cols[f"{p}unlearned_sampled"] = cols[f"{p}unlearned"]
    if detect.label == "expected":
      cols[f"{p}unlearned"] = np.asarray(cols[f"{p}expected_pass"]) < detect.threshold
  return pd.DataFrame(cols)


def _responses(inputs: Inputs, idx: np.ndarray) -> list[np.ndarray]:
  """The response token ids (then EOS) of examples `idx`, as trained on."""
  frame = inputs.frame
  return [np.asarray(frame["tokens"].iloc[i][frame["prompt_length"].iloc[i]:], np.int32) for i in idx]


def _reference_probability(idx: np.ndarray, inputs: Inputs, model: Model, temperature: float, buckets: Sequence[int],
                           pad: int) -> np.ndarray:
  """Probability that one sample at `temperature` is exactly the reference (its tokens, then EOS)."""
  responses = _responses(inputs, idx)
  prompts = [inputs.prompts[i] for i in idx]
  longest = max(len(q) + len(a) for q, a in zip(prompts, responses))
  ll = continuation_token_logliks(model.evaluator, model.params, prompts, responses,
                                  batching.covering(buckets, longest), pad, temperature)
  return np.exp([float(v.sum()) for v in ll])


def _entity_lift(idx: np.ndarray, inputs: Inputs, model: Model, buckets: Sequence[int], pad: int,
                 special: set[int]) -> np.ndarray:
  """The base model's entity-swap lift (`entities.lift`) of examples `idx`."""
  own_prompts = [inputs.prompts[i] for i in idx]
  responses = _responses(inputs, idx)
  owners = np.asarray([e for e, i in enumerate(idx) for _ in inputs.swapped[i]], np.int64)
  prompts = own_prompts + [q for i in idx for q in inputs.swapped[i]]
  answers = responses + [responses[e] for e in owners]
  longest = max(len(q) + len(a) for q, a in zip(prompts, answers))
  ll = continuation_token_logliks(model.evaluator, model.params, prompts, answers,
                                  batching.covering(buckets, longest), pad)
  fresh = [~np.isin(r, np.concatenate([q, np.asarray(sorted(special), np.int32)])) for q, r in zip(own_prompts, responses)]
  return entities.lift(ll[:len(idx)], ll[len(idx):], owners, fresh)


def probe(frame: pd.DataFrame, model_dir: str, detect: DetectConfig, data: DataConfig, mesh_config: Any,
          seed: int) -> pd.DataFrame:
  """Detection rows of `frame`'s examples under the model in `model_dir` alone (no base or reference
  model, no entity swaps or embeddings): a per-phase check or a retest, outside the stage."""
  detect = dataclasses.replace(detect, base="", reference="", entity_swaps=0, embedding_dims=0,
                               mc=dataclasses.replace(detect.mc, base_distractors=None))
  tokenizer = checkpoint.load_tokenizer(model_dir, data.tokenizer)
  inputs = Inputs.from_examples(frame.reset_index(drop=True), detect, data, tokenizer)
  model = Model(model_dir, parallel.make_mesh(mesh_config.shape), mesh_config.rules, detect.batch_size)
  rows = [chunk_table(np.arange(s, min(s + detect.chunk_size, len(frame))), inputs, Models(model), detect, tokenizer,
                      tuple(sorted(data.buckets)), seed * 1_000_003 + k)
          for k, s in enumerate(range(0, len(frame), detect.chunk_size))]
  return pd.concat(rows, ignore_index=True)


def settings_hash(detect: DetectConfig, data: DataConfig, seed: int, root: str) -> str:
  """Identifies what finished parts were computed with, so a resume cannot mix settings. Paths
  under the work directory `root` count relative to it, so a moved work directory resumes."""
  settings = {k: v for k, v in dataclasses.asdict(detect).items() if k not in GUARDS}
  payload = json.dumps({"detect": settings, "data": dataclasses.asdict(data), "seed": seed},
                       sort_keys=True, default=str)
  return hashlib.sha256(payload.replace(root.rstrip("/"), WORKDIR).encode()).hexdigest()[:16]


def _severity(frame: pd.DataFrame, protocol: str, top_candidates: int) -> None:
  """`<p>severity_rank` (1 = most severe unlearned example, 0 for learned ones) and
  `<p>top_candidate` (the first `top_candidates`: what the paper diagnoses). Severity is the error
  consistency over all runs; ties go to the example the model is most confident about (the
  generative protocol's mean log-prob of its samples; the MC protocol's lowest P(true option))."""
  p = PREFIX[protocol]
  tie = frame["gen_mean_logprob"] if protocol == "generative" else -frame["sft_p_true"]
  order = frame.assign(_tie=tie).sort_values([f"{p}unlearned", f"{p}error_consistency", "_tie", "id"],
                                             ascending=[False, False, False, True], kind="stable").index
  rank = pd.Series(np.arange(1, len(frame) + 1), index=order)
  frame[f"{p}severity_rank"] = np.where(frame[f"{p}unlearned"], rank.reindex(frame.index), 0)
  frame[f"{p}top_candidate"] = frame[f"{p}unlearned"] & (frame[f"{p}severity_rank"] <= top_candidates)


def finish(frame: pd.DataFrame, detect: DetectConfig) -> tuple[pd.DataFrame, dict]:
  """Global columns (severity ranks, top candidates) and the summary: per protocol its unlearned
  rate (overall, per data set, per phase), Cohen's kappa between its runs, and, when both ran,
  their agreement."""
  summary: dict[str, Any] = {"examples": int(len(frame)), "protocols": list(detect.protocols)}
  for protocol in detect.protocols:
    p = PREFIX[protocol]
    _severity(frame, protocol, detect.top_candidates)
    labels = np.asarray(frame[f"{p}unlearned_runs"].tolist(), bool).T
    rate = lambda g: {str(k): float(v) for k, v in frame.groupby(g)[f"{p}unlearned"].mean().items()}
    summary[protocol] = {
        "unlearned": int(frame[f"{p}unlearned"].sum()), "unlearned_rate": float(frame[f"{p}unlearned"].mean()),
        "unlearned_rate_by_dataset": rate("dataset"), "unlearned_rate_by_phase": rate("phase"),
        "kappa_between_runs": estimators.mean_pairwise_kappa(labels) if labels.shape[0] >= 2 else None,
        "runs": int(labels.shape[0]), "repeat_rule": detect.repeat_rule, "label": detect.label,
        "top_candidates": int(frame[f"{p}top_candidate"].sum()), "mean_pass_at_n": float(frame[f"{p}pass_at_n"].mean())}
  if len(detect.protocols) == 2:
    summary["kappa_between_protocols"] = estimators.cohen_kappa(frame["mc_unlearned"], frame["gen_unlearned"])
  if "gen_truncated" in frame:
    summary["generative"]["truncated_sample_rate"] = float(frame["gen_truncated"].sum() / frame["gen_n"].sum())
  if "p_exist" in frame:
    summary.update(p_exist_rate=float(frame["p_exist"].mean()),
                   base_high_conf_error_rate=float(frame["base_high_conf_error"].mean()),
                   mean_jsd_base_sft_bits=float(frame["jsd_base_sft"].mean()))
  if "base_blind" in frame:
    summary["base_blind_rate"] = float(frame["base_blind"].mean())
  if "mc_options_from_base" in frame:   # how plausible the distractors were: wrong options per example by source
    summary["mc_mean_options_from"] = {s: float(frame[f"mc_options_from_{s}"].mean()) for s in mc.SOURCES}
  return frame, summary
