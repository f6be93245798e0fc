"""Stage `detect`: which training examples did SFT fail to teach? (paper §2–3)

For every training example, from the fine-tuned model (and, for the probes, the base model):
N samples -> pass@N (fraction correct), unbiased pass@k, BoN and BoN@k by the model's own
confidence, greedy correctness, truncations; repeated runs -> Cohen's kappa of the unlearned
labels and an error-consistency severity; a multiple-choice probe of both models -> base
accuracy, P_exist, high-confidence errors and JSD(base || SFT); the base model's samples for
each example's `meta.prerequisites` questions -> the share of prerequisite facts it knows. Work
goes in chunks written as Parquet parts, so a killed run resumes after its last finished chunk.

Writes `workdir/detect/`: `detection.parquet` (one row per example), `summary.json`, `parts/`,
`tensorboard/`.
"""
from __future__ import annotations

import glob
import hashlib
import json
import logging
import os
import time

import jax
import ml_collections
import numpy as np
import pandas as pd

from ilp import fileio, parallel
from ilp.data.records import PREREQUISITES, SFTRecord
from ilp.data.tokenize import TemplateConfig, tokenize_sft
from ilp.detection import multiple_choice as mc
from ilp.detection.generative import GenerativeResult, sample_and_verify
from ilp.model import checkpoint
from ilp.sampling import estimators
from ilp.sampling.sampler import Sampler, SamplingConfig
from ilp.sampling.verifiers import get_verifier
from ilp.stages import sft, training_inputs
from ilp.train.evaluate import ExampleEvaluator
from ilp.train.metrics import MetricWriter

log = logging.getLogger(__name__)
NAME = "detect"
TABLE = "detection.parquet"


def outputs(workdir: str) -> list[str]:
  return [os.path.join(workdir, NAME, TABLE), os.path.join(workdir, NAME, "summary.json")]


def validate(config: ml_collections.ConfigDict) -> None:
  """The detect settings (the SFT records are checked by `sft.validate`)."""
  d = config.detect
  for k in d.pass_k:
    if not 1 <= k <= d.num_samples:
      raise ValueError(f"config field 'detect.pass_k': k={k} is not in 1..num_samples={d.num_samples}")
  for k in d.bon_k:
    if not 1 <= k <= d.num_samples:
      raise ValueError(f"config field 'detect.bon_k': k={k} is not in 1..num_samples={d.num_samples}")
  get_verifier(d.verifier, d.verifier_threshold)
  for dataset, name in d.dataset_verifiers:
    get_verifier(name, d.verifier_threshold)


class _Model:
  """A checkpoint with its sampler and evaluator on the mesh."""

  def __init__(self, directory: str, mesh, rules, batch_size: int):
    self.cfg, graphdef, self.params = checkpoint.load_params(directory, mesh, rules)
    self.sampler = Sampler(graphdef, self.cfg, mesh, rules)
    self.evaluator = ExampleEvaluator(graphdef, self.cfg, mesh, batch_size, rules)


def _model_dir(name: str, workdir: str, field: str) -> str:
  if name == "sft":
    return os.path.join(workdir, "sft", training_inputs.FINAL_DIR)
  return training_inputs.init_dir(ml_collections.ConfigDict({"init_from": name}), workdir, field)


def _covering(buckets, longest: int) -> tuple[int, ...]:
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


def _prerequisite_probes(records, examples, tokenizer, config: ml_collections.ConfigDict
                         ) -> list[list[tuple[np.ndarray, str]]]:
  """Per example, the (prompt tokens, reference) of each of its `meta.prerequisites` questions,
  rendered with the training template (empty for examples without prerequisites)."""
  template = TemplateConfig(**config.data.template)
  probes = []
  for ex in examples:
    record = records[ex.record]
    listed = record.meta.get(PREREQUISITES) or []
    rendered = [SFTRecord(f"{record.id}/prerequisite{k}", ({"role": "user", "content": q["prompt"]},
                                                          {"role": "assistant", "content": q["response"]}),
                          record.dataset, record.stage) for k, q in enumerate(listed)]
    tokenized = tokenize_sft(rendered, tokenizer, max(config.data.buckets), template)[0] if rendered else []
    probes.append([(t.tokens[:t.prompt_length], rendered[t.record].response) for t in tokenized])
  return probes


def _prerequisite_columns(idx, probes, verifiers, base_model, d, config: SamplingConfig, pad, decode, buckets,
                          seed) -> dict:
  """How many prerequisite facts each example has and the share the base model knows: a fact is
  known unless it is blind, i.e. its pass rate over the base model's samples is below the
  detection threshold (the paper's fact-level criterion; greedy when base_samples is 0)."""
  flat = [(e, prompt, ref) for e, i in enumerate(idx) for prompt, ref in probes[i]]
  counts = np.asarray([len(probes[i]) for i in idx])
  known = np.full(len(idx), np.nan)
  if flat:
    result = sample_and_verify(base_model.sampler, base_model.params, [p for _, p, _ in flat], [r for _, _, r in flat],
                               [verifiers[e] for e, _, _ in flat], decode, config, buckets, d.batch_size, pad, seed)
    fact_known = (estimators.pass_fraction(result.correct) >= d.threshold).astype(float)
    owners = np.asarray([e for e, _, _ in flat])
    known[counts > 0] = (np.bincount(owners, fact_known, len(idx)) / np.maximum(counts, 1))[counts > 0]
  return {"prerequisites": counts, "prerequisites_known": known}


def _chunk_table(idx: np.ndarray, records, examples, prompts, references, verifiers, probes, models, d, pools, seed,
                 tokenizer, buckets) -> pd.DataFrame:
  eos = tokenizer.eos_token_id
  pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
  decode = lambda ids: tokenizer.decode(ids, skip_special_tokens=True).strip()
  p = [prompts[i] for i in idx]
  refs = [references[i] for i in idx]
  ver = [verifiers[i] for i in idx]
  stops = (eos,)
  run = lambda model, config, run_seed: sample_and_verify(model.sampler, model.params, p, refs, ver, decode, config,
                                                         buckets, d.batch_size, pad, run_seed)
  temps = list(d.repeat_temperatures) or [d.temperature] * d.repeats
  sampling = lambda t, n: SamplingConfig(num_samples=n, max_new_tokens=d.max_new_tokens, temperature=float(t),
                                        top_k=d.top_k, top_p=d.top_p, stop_tokens=stops)
  greedy = SamplingConfig(num_samples=1, max_new_tokens=d.max_new_tokens, temperature=0.0, stop_tokens=stops)
  sft_model, base_model = models
  runs = [run(sft_model, sampling(t, d.num_samples), seed + 7919 * r) for r, t in enumerate(temps)]
  first = runs[0]
  cols = {"id": [records[examples[i].record].id for i in idx],
          "dataset": [records[examples[i].record].dataset for i in idx],
          "stage": [records[examples[i].record].stage for i in idx],
          "meta": [json.dumps(records[examples[i].record].meta, sort_keys=True) for i in idx],
          "reference": refs}
  cols.update(_generative_columns("", first))
  for k in d.pass_k:
    cols[f"pass_at_{k}"] = estimators.unbiased_pass_at_k(d.num_samples, first.correct.sum(1), k)
  for k in d.bon_k:
    cols[f"bon_at_{k}"] = estimators.best_of_k(first.correct, first.confidence, k)
  labels = np.stack([estimators.pass_fraction(r.correct) < d.threshold for r in runs])
  cols["unlearned"] = labels[0]
  cols["unlearned_runs"] = [list(map(bool, labels[:, e])) for e in range(len(idx))]
  cols["error_consistency"] = 1.0 - np.concatenate([r.correct for r in runs], axis=1).mean(1)
  sft_greedy = run(sft_model, greedy, seed)
  cols["greedy_correct"] = sft_greedy.correct[:, 0]
  cols["greedy_text"] = [t[0] for t in sft_greedy.texts]
  base_answers = None
  if base_model is not None:
    probe_config = sampling(d.temperature, d.base_samples) if d.base_samples else greedy
    cols.update(_prerequisite_columns(idx, probes, ver, base_model, d, probe_config, pad, decode, buckets, seed + 2))
    base_greedy = run(base_model, greedy, seed)
    base_answers = [t[0] for t in base_greedy.texts]
    cols["base_greedy_correct"] = base_greedy.correct[:, 0]
    cols["base_greedy_text"] = base_answers
    if d.base_samples:
      cols.update(_generative_columns("base_", run(base_model, sampling(d.temperature, d.base_samples), seed + 1)))
  if d.mc.enabled:
    options = mc.choose_options(cols["id"], refs, cols["dataset"], pools,
                                base_answers if d.mc.include_base_answer else None, d.mc.num_options,
                                d.mc.distractors, seed)
    option_tokens = [[np.asarray(tokenizer(o, add_special_tokens=False)["input_ids"] + [eos], np.int32) for o in opts]
                     for opts in options]
    longest = max(len(p[e]) + len(t) for e, opts in enumerate(option_tokens) for t in opts)
    score_buckets = _covering(buckets, longest)
    probs = {name: mc.option_probabilities(m.evaluator, m.params, p, option_tokens, d.mc.num_options,
                                           score_buckets, pad)
             for name, m in (("sft", sft_model), ("base", base_model)) if m is not None}
    cols["mc_options"] = options
    cols["mc_probs_sft"] = [list(r) for r in probs["sft"]]
    cols["sft_mc_correct"] = probs["sft"].argmax(1) == 0
    cols["sft_p_true"] = probs["sft"][:, 0]
    if "base" in probs:
      base = probs["base"]
      wrong = base[:, 1:].max(1) if base.shape[1] > 1 else np.zeros(len(base))
      cols["mc_probs_base"] = [list(r) for r in base]
      cols["base_mc_correct"] = base.argmax(1) == 0
      cols["base_p_true"] = base[:, 0]
      cols["p_exist"] = base[:, 0] > d.mc.p_exist
      cols["base_conf_wrong"] = wrong
      cols["base_high_conf_error"] = (base.argmax(1) != 0) & (wrong > d.mc.t_conf)
      cols["base_belief"] = [opts[int(np.argmax(row[1:])) + 1] if len(opts) > 1 else "" for opts, row in
                             zip(options, base)]
      cols["jsd_base_sft"] = estimators.js_divergence(base, probs["sft"])
  return pd.DataFrame(cols)


def _settings_hash(config: ml_collections.ConfigDict) -> str:
  payload = json.dumps({"detect": config.detect.to_dict(), "data": config.data.to_dict(), "seed": config.seed},
                       sort_keys=True, default=str)
  return hashlib.sha256(payload.encode()).hexdigest()[:16]


def _finish(frame: pd.DataFrame, d: ml_collections.ConfigDict) -> tuple[pd.DataFrame, dict]:
  """Global columns (severity rank, top candidates) and the summary."""
  order = frame.sort_values(["unlearned", "error_consistency", "mean_logprob", "id"],
                            ascending=[False, False, False, True], kind="stable").index
  rank = pd.Series(np.arange(1, len(frame) + 1), index=order)
  frame["severity_rank"] = np.where(frame["unlearned"], rank.reindex(frame.index), 0)
  frame["top_candidate"] = frame["unlearned"] & (frame["severity_rank"] <= d.top_candidates)
  labels = np.asarray(frame["unlearned_runs"].tolist(), bool).T
  kappa = estimators.mean_pairwise_kappa(labels) if labels.shape[0] >= 2 else None
  rate = lambda g: {str(k): float(v) for k, v in frame.groupby(g)["unlearned"].mean().items()}
  summary = {"examples": int(len(frame)), "unlearned": int(frame["unlearned"].sum()),
             "unlearned_rate": float(frame["unlearned"].mean()), "unlearned_rate_by_dataset": rate("dataset"),
             "unlearned_rate_by_stage": rate("stage"), "kappa_between_runs": kappa, "runs": int(labels.shape[0]),
             "truncated_sample_rate": float(frame["truncated"].sum() / frame["n"].sum()),
             "mean_pass_at_n": float(frame["pass_at_n"].mean())}
  if "p_exist" in frame:
    summary.update(p_exist_rate=float(frame["p_exist"].mean()),
                   base_high_conf_error_rate=float(frame["base_high_conf_error"].mean()),
                   mean_jsd_base_sft=float(frame["jsd_base_sft"].mean()))
  return frame, summary


def run(config: ml_collections.ConfigDict, workdir: str) -> None:
  d = config.detect
  out = os.path.join(workdir, NAME)
  parts_dir = os.path.join(out, "parts")
  mesh = parallel.make_mesh(config.mesh.shape)
  rules = config.mesh.rules
  model_dir = _model_dir(d.model, workdir, "detect.model")
  tokenizer = training_inputs.tokenizer(config, model_dir)
  records, examples, _ = sft.load_examples(config, tokenizer)
  prompts = [ex.tokens[:ex.prompt_length] for ex in examples]
  references = [records[ex.record].response for ex in examples]
  by_dataset = dict(d.dataset_verifiers)
  verifiers = [get_verifier(by_dataset.get(records[ex.record].dataset, d.verifier), d.verifier_threshold)
               for ex in examples]
  pools = mc.distractor_pools(references, [records[ex.record].dataset for ex in examples])
  probes = _prerequisite_probes(records, examples, tokenizer, config)

  settings = _settings_hash(config)
  settings_path = os.path.join(parts_dir, "settings.json")
  if os.path.exists(settings_path):
    if json.load(open(settings_path))["hash"] != settings:
      raise RuntimeError(f"{parts_dir}: finished parts were computed with other detect/data settings; "
                         f"delete {out} to start over")
  elif jax.process_index() == 0:
    fileio.write_json_atomic(settings_path, {"hash": settings})

  models = (_Model(model_dir, mesh, rules, d.batch_size),
            _Model(_model_dir(d.base, workdir, "detect.base"), mesh, rules, d.batch_size) if d.base else None)
  buckets = tuple(sorted(config.data.buckets))
  chunks = [np.arange(s, min(s + d.chunk_size, len(examples))) for s in range(0, len(examples), d.chunk_size)]
  start = time.time()
  for k, idx in enumerate(chunks):
    path = os.path.join(parts_dir, f"part-{k:05d}.parquet")
    if os.path.exists(path):
      continue
    table = _chunk_table(idx, records, examples, prompts, references, verifiers, probes, models, d, pools,
                         config.seed * 1_000_003 + k, tokenizer, buckets)
    if jax.process_index() == 0:
      table.to_parquet(path + ".tmp", index=False)
      os.replace(path + ".tmp", path)
    log.info("detect: chunk %d/%d (%d examples), %.0fs elapsed", k + 1, len(chunks), len(idx), time.time() - start)

  if jax.process_index() != 0:
    return
  frame = pd.concat([pd.read_parquet(p) for p in sorted(glob.glob(os.path.join(parts_dir, "part-*.parquet")))],
                    ignore_index=True)
  frame, summary = _finish(frame, d)
  writer = MetricWriter(os.path.join(out, "tensorboard"))
  writer.scalars(0, {"detect/unlearned_rate": summary["unlearned_rate"],
                     **{f"detect/unlearned_rate_by_dataset/{k}": v for k, v in summary["unlearned_rate_by_dataset"].items()}})
  if summary["kappa_between_runs"] is not None:
    writer.scalars(0, {"detect/kappa_between_runs": summary["kappa_between_runs"]})
  writer.histogram(0, "detect/pass_at_n", frame["pass_at_n"].to_numpy())
  writer.close()
  frame.to_parquet(os.path.join(out, TABLE + ".tmp"), index=False)
  os.replace(os.path.join(out, TABLE + ".tmp"), os.path.join(out, TABLE))
  fileio.write_json_atomic(os.path.join(out, "summary.json"), summary)
  log.info("detect: %d of %d examples unlearned (%.1f%%); kappa between runs %s", summary["unlearned"],
           summary["examples"], 100 * summary["unlearned_rate"], summary["kappa_between_runs"])
