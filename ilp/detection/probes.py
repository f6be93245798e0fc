"""The detection table (paper §2–3), probe by probe: which training examples did SFT fail to teach?

For every training example, from the fine-tuned model (and, for the probes, the base model):
N samples -> pass@N (fraction correct), unbiased pass@k, BoN and BoN@k by the model's own
confidence, greedy correctness, truncations; repeated runs -> the unlearned labels and an
error-consistency severity; a multiple-choice probe of both models -> base accuracy, P_exist,
high-confidence errors and JSD(base || SFT); the base model's samples for each example's
`meta.prerequisites` questions -> the share of prerequisite facts it knows. The MC probe's wrong
options include the base model's own sampled wrong answers (`MCConfig.base_distractors`).

Each `Probe` is one job that names the columns it may write (`ilp.detection.columns`) and writes
them for a `Chunk`; `table` calls them in turn, so a stage can write each chunk as it finishes and
resume after the last one. Summaries over the whole table: `ilp.detection.summary`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd

from ilp import parallel
from ilp.data.config import DataConfig
from ilp.detection import columns as col
from ilp.detection import entities, prerequisites
from ilp.detection import multiple_choice as mc
from ilp.detection.columns import GENERATIVE, MULTIPLE_CHOICE
from ilp.detection.config import DetectConfig
from ilp.detection.generative import GenerativeResult
from ilp.detection.inputs import Chunk, Inputs, Models
from ilp.model import checkpoint
from ilp.scoring import estimators
from ilp.scoring.inference import Model

Columns = dict[str, Any]


@dataclasses.dataclass(frozen=True)
class Probe:
  """One job of detection: `write` gives its columns for a chunk (none where the settings or the
  models leave it out); `columns` names every column it may write under the settings."""

  write: Callable[[Chunk], Columns]
  columns: Callable[[DetectConfig], tuple[str, ...]]


def _generation_columns(prefix: str, first: GenerativeResult) -> Columns:
  """What only generations have, per example of one sampling run: samples, truncations, confidence."""
  return {
    prefix + col.N: np.full(len(first.correct), first.correct.shape[1]),
    prefix + col.TRUNCATED: first.truncated.sum(1),
    prefix + col.MEAN_LOGPROB: first.confidence.mean(1),
    prefix + col.SAMPLES: [list(t) for t in first.texts],
  }


def _score_columns(prefix: str, correct: np.ndarray, confidence: np.ndarray) -> Columns:
  """Correct count, pass@N (the paper's: the fraction correct) and BoN of one run's [examples, N]."""
  return {
    prefix + col.PASS_AT_N: estimators.pass_fraction(correct),
    prefix + col.CORRECT: correct.sum(1),
    prefix + col.BON: estimators.best_of_n(correct, confidence),
  }


def _protocol_names(prefix: str, detect: DetectConfig) -> tuple[str, ...]:
  """The columns `_protocol_columns` writes under `prefix`."""
  names = col.SCORES + tuple(map(col.pass_at, detect.pass_k)) + tuple(map(col.bon_at, detect.bon_k))
  return tuple(prefix + name for name in names + (col.UNLEARNED, col.UNLEARNED_RUNS, col.ERROR_CONSISTENCY))


def _protocol_columns(prefix: str, runs: list[tuple[np.ndarray, np.ndarray]], detect: DetectConfig) -> Columns:
  """A protocol's label columns from its runs' ([examples, N] correct, confidence): pass@N, unbiased
  pass@k, BoN and BoN@k of the first run; the per-run labels (pass@N < threshold), the label
  combined by `repeat_rule`, and the error consistency (share of wrong predictions over all runs)."""
  correct, confidence = runs[0]
  labels = np.stack([estimators.pass_fraction(c) < detect.threshold for c, _ in runs])
  cols = _score_columns(prefix, correct, confidence)
  for k in detect.pass_k:
    cols[prefix + col.pass_at(k)] = estimators.unbiased_pass_at_k(detect.num_samples, correct.sum(1), k)
  for k in detect.bon_k:
    cols[prefix + col.bon_at(k)] = estimators.best_of_k(correct, confidence, k)
  cols[prefix + col.UNLEARNED] = estimators.combine_runs(labels, detect.repeat_rule)
  cols[prefix + col.UNLEARNED_RUNS] = [list(map(bool, labels[:, e])) for e in range(labels.shape[1])]
  cols[prefix + col.ERROR_CONSISTENCY] = 1.0 - np.concatenate([c for c, _ in runs], axis=1).mean(1)
  return cols


def _example(chunk: Chunk) -> Columns:
  """The example's identity, carried over from the examples table."""
  rows = chunk.inputs.frame.iloc[chunk.rows]
  return {
    **{name: rows[name].tolist() for name in (col.ID, col.DATASET, col.PHASE, col.META)},
    col.REFERENCE: chunk.references,
  }


def _generative(chunk: Chunk) -> Columns:
  """The generative protocol: N generations per run, each checked by the example's verifier."""
  d = chunk.detect
  if GENERATIVE not in d.protocols:
    return {}
  runs = [
    chunk.sample(chunk.models.sft, chunk.sampling(t, d.num_samples), chunk.seed + 7919 * r)
    for r, t in enumerate(d.temperatures)
  ]
  prefix = col.PREFIX[GENERATIVE]
  return {
    **_generation_columns(prefix, runs[0]),
    **_protocol_columns(prefix, [(r.correct, r.confidence) for r in runs], d),
  }


def _generative_expected_pass(chunk: Chunk) -> Columns:
  """The probability that one sample at the temperature is exactly the reference (its tokens, then
  EOS), by teacher forcing; greedy correctness at temperature 0."""
  d = chunk.detect
  if GENERATIVE not in d.protocols:
    return {}
  if d.temperature == 0:
    return {col.of(GENERATIVE, col.EXPECTED_PASS): chunk.sft_greedy.correct[:, 0].astype(np.float64)}
  ll = chunk.token_logliks(chunk.models.sft, chunk.prompts, chunk.responses, d.temperature)
  return {col.of(GENERATIVE, col.EXPECTED_PASS): np.exp([float(v.sum()) for v in ll])}


def _greedy(chunk: Chunk) -> Columns:
  if GENERATIVE not in chunk.detect.protocols:
    return {}
  greedy = chunk.sft_greedy
  return {col.GREEDY_CORRECT: greedy.correct[:, 0], col.GREEDY_TEXT: [t[0] for t in greedy.texts]}


def _prerequisites(chunk: Chunk) -> Columns:
  """The base model on each example's `meta.prerequisites` questions (`prerequisites.known_share`)."""
  base = chunk.models.base
  if base is None:
    return {}
  return prerequisites.known_share(
    [chunk.inputs.prerequisites[i] for i in chunk.rows],
    chunk.verifiers,
    base.sampler,
    base.params,
    chunk.base_sampling,
    chunk.detect,
    chunk.decode,
    chunk.buckets,
    chunk.pad,
    chunk.seed + 2,
  )


def _base_greedy(chunk: Chunk) -> Columns:
  if chunk.models.base is None:
    return {}
  greedy = chunk.base_greedy
  return {col.BASE_GREEDY_CORRECT: greedy.correct[:, 0], col.BASE_GREEDY_TEXT: [t[0] for t in greedy.texts]}


def _blind_facts(chunk: Chunk) -> Columns:
  """The paper's blind-fact rule on the base model's samples, and their numbers."""
  d = chunk.detect
  if chunk.models.base is None:
    return {}
  samples = chunk.base_samples
  numbers = (
    {**_generation_columns(col.BASE, samples), **_score_columns(col.BASE, samples.correct, samples.confidence)}
    if d.base_samples
    else {}
  )
  return {
    **numbers,
    col.BASE_BON_AT_BLIND_K: prerequisites.blind_rates(samples, d)[1],
    col.BASE_BLIND: prerequisites.blind(samples, d),
  }


def _entity_lift(chunk: Chunk) -> Columns:
  """The base model's entity-swap lift (`entities.lift`): its answer under the own and the swapped prompts."""
  base, inputs = chunk.models.base, chunk.inputs
  if base is None or not chunk.detect.entity_swaps:
    return {}
  n, responses = len(chunk.rows), chunk.responses
  owners = np.asarray([e for e, i in enumerate(chunk.rows) for _ in inputs.swapped[i]], np.int64)
  ll = chunk.token_logliks(
    base,
    chunk.base_prompts + [q for i in chunk.rows for q in inputs.swapped[i]],
    responses + [responses[e] for e in owners],
  )
  special = np.asarray(sorted(set(chunk.tokenizer.all_special_ids)), np.int32)
  fresh = [~np.isin(r, np.concatenate([q, special])) for q, r in zip(chunk.base_prompts, responses)]
  return {col.BASE_ENTITY_LIFT: entities.lift(ll[:n], ll[n:], owners, fresh)}


def _embedding(chunk: Chunk) -> Columns:
  """The probed model's prompt embeddings, and its answer embeddings of the references (what III
  compares near-duplicates' answers by, `ilp.scoring.equivalence`)."""
  d, sft = chunk.detect, chunk.models.sft
  if not d.embedding_dims:
    return {}
  out = {
    col.PROMPT_EMBEDDING: list(sft.embedder(sft.params, chunk.prompts, chunk.buckets, chunk.pad, d.embedding_dims))
  }
  if d.answers.embedding:
    out[col.RESPONSE_EMBEDDING] = [chunk.inputs.answers.vector(r) for r in chunk.references]
  return out


def _mc_options(chunk: Chunk) -> Columns:
  """The MC probe's options, and how many wrong ones each source gave."""
  if not chunk.detect.mc.enabled:
    return {}
  options = chunk.options
  return {
    **{col.options_from(s): options.counts[:, k] for k, s in enumerate(col.SOURCES)},
    col.MC_OPTIONS: options.texts,
  }


def _mc_sft(chunk: Chunk) -> Columns:
  """The probed model's option distribution."""
  if not chunk.detect.mc.enabled:
    return {}
  sft = chunk.option_probs("sft")
  return {col.MC_PROBS_SFT: [list(r) for r in sft], col.SFT_MC_CORRECT: sft.argmax(1) == 0, col.SFT_P_TRUE: sft[:, 0]}


def _predictions(chunk: Chunk, probs: np.ndarray, temperature: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
  d = chunk.detect
  return mc.predictions(probs, temperature, d.confidence_at(temperature), d.num_samples, seed)


def _multiple_choice(chunk: Chunk) -> Columns:
  """The paper's protocol: N predictions per run from the probed model's option distribution."""
  d = chunk.detect
  if MULTIPLE_CHOICE not in d.protocols:
    return {}
  sft = chunk.option_probs("sft")
  runs = [_predictions(chunk, sft, t, chunk.seed + 7919 * r) for r, t in enumerate(d.temperatures)]
  return _protocol_columns(col.PREFIX[MULTIPLE_CHOICE], runs, d)


def _mc_expected_pass(chunk: Chunk) -> Columns:
  """The tempered probability of the true option: what one prediction at the temperature passes with."""
  d = chunk.detect
  if MULTIPLE_CHOICE not in d.protocols:
    return {}
  return {col.of(MULTIPLE_CHOICE, col.EXPECTED_PASS): estimators.temper(chunk.option_probs("sft"), d.temperature)[:, 0]}


def _mc_reference(chunk: Chunk) -> Columns:
  if not chunk.detect.mc.enabled or chunk.models.reference is None:
    return {}
  probs = chunk.option_probs("reference")
  return {col.REFERENCE_MC_CORRECT: probs.argmax(1) == 0, col.REFERENCE_P_TRUE: probs[:, 0]}


def _mc_base(chunk: Chunk) -> Columns:
  """The base model on the options: P_exist (accuracy over N predictions > p_exist), its
  high-confidence errors and belief, JSD(base || SFT), and what the probed model gives its belief."""
  d = chunk.detect
  if not d.mc.enabled or chunk.models.base is None:
    return {}
  base, sft, options = chunk.option_probs("base"), chunk.option_probs("sft"), chunk.options.texts
  wrong = base[:, 1:].max(1) if base.shape[1] > 1 else np.zeros(len(base))
  belief = base[:, 1:].argmax(1) + 1 if base.shape[1] > 1 else np.zeros(len(base), np.int64)
  accuracy = estimators.pass_fraction(_predictions(chunk, base, d.temperature, chunk.seed + 3)[0])
  return {
    col.MC_PROBS_BASE: [list(r) for r in base],
    col.BASE_MC_CORRECT: base.argmax(1) == 0,
    col.BASE_P_TRUE: base[:, 0],
    col.BASE_MC_ACCURACY: accuracy,
    col.P_EXIST: accuracy > d.mc.p_exist,
    col.BASE_CONF_WRONG: wrong,
    col.BASE_HIGH_CONF_ERROR: (base.argmax(1) != 0) & (wrong > d.mc.t_conf),
    col.BASE_BELIEF: [opts[int(np.argmax(row[1:])) + 1] if len(opts) > 1 else "" for opts, row in zip(options, base)],
    col.JSD_BASE_SFT: estimators.js_divergence(base, sft),
    col.SFT_P_BASE_BELIEF: np.where(belief > 0, sft[np.arange(len(sft)), belief], 0.0),
  }


def _label(chunk: Chunk) -> Columns:
  """Each protocol's final label: the sampled one kept beside it, the expected-pass one when `detect.label` says."""
  d, cols = chunk.detect, {}
  for protocol in d.protocols:
    unlearned, expected = col.of(protocol, col.UNLEARNED), col.of(protocol, col.EXPECTED_PASS)
    cols[col.of(protocol, col.UNLEARNED_SAMPLED)] = chunk.columns[unlearned]
    if d.label == "expected":
      cols[unlearned] = np.asarray(chunk.columns[expected]) < d.threshold
  return cols


PROBES = (  # in the order of the table's columns
  Probe(_example, lambda d: col.EXAMPLE),
  Probe(
    _generative,
    lambda d: tuple(col.PREFIX[GENERATIVE] + n for n in col.GENERATIONS) + _protocol_names(col.PREFIX[GENERATIVE], d),
  ),
  Probe(_generative_expected_pass, lambda d: (col.of(GENERATIVE, col.EXPECTED_PASS),)),
  Probe(_greedy, lambda d: (col.GREEDY_CORRECT, col.GREEDY_TEXT)),
  Probe(_prerequisites, lambda d: (col.PREREQUISITES, col.PREREQUISITES_KNOWN)),
  Probe(_base_greedy, lambda d: (col.BASE_GREEDY_CORRECT, col.BASE_GREEDY_TEXT)),
  Probe(
    _blind_facts,
    lambda d: tuple(col.BASE + n for n in col.GENERATIONS + col.SCORES) + (col.BASE_BON_AT_BLIND_K, col.BASE_BLIND),
  ),
  Probe(_entity_lift, lambda d: (col.BASE_ENTITY_LIFT,)),
  Probe(_embedding, lambda d: (col.PROMPT_EMBEDDING,) + ((col.RESPONSE_EMBEDDING,) if d.answers.embedding else ())),
  Probe(_mc_options, lambda d: col.OPTIONS_FROM + (col.MC_OPTIONS,)),
  Probe(_mc_sft, lambda d: (col.MC_PROBS_SFT, col.SFT_MC_CORRECT, col.SFT_P_TRUE)),
  Probe(_multiple_choice, lambda d: _protocol_names(col.PREFIX[MULTIPLE_CHOICE], d)),
  Probe(_mc_expected_pass, lambda d: (col.of(MULTIPLE_CHOICE, col.EXPECTED_PASS),)),
  Probe(_mc_reference, lambda d: (col.REFERENCE_MC_CORRECT, col.REFERENCE_P_TRUE)),
  Probe(
    _mc_base,
    lambda d: (
      col.MC_PROBS_BASE,
      col.BASE_MC_CORRECT,
      col.BASE_P_TRUE,
      col.BASE_MC_ACCURACY,
      col.P_EXIST,
      col.BASE_CONF_WRONG,
      col.BASE_HIGH_CONF_ERROR,
      col.BASE_BELIEF,
      col.JSD_BASE_SFT,
      col.SFT_P_BASE_BELIEF,
    ),
  ),
  Probe(_label, lambda d: tuple(col.of(p, n) for p in d.protocols for n in (col.UNLEARNED_SAMPLED, col.UNLEARNED))),
)


def table(chunk: Chunk) -> pd.DataFrame:
  """The detection table's rows for the chunk's examples: every probe's columns, in turn."""
  for unit in PROBES:
    written = unit.write(chunk)
    undeclared = set(written) - set(unit.columns(chunk.detect))
    assert not undeclared, f"{unit.write.__name__} wrote columns it does not name: {sorted(undeclared)}"
    chunk.columns.update(written)
  return pd.DataFrame(chunk.columns)


def chunks(
  inputs: Inputs, models: Models, detect: DetectConfig, tokenizer: Any, buckets: Sequence[int], seed: int
) -> list[Chunk]:
  """Every example in chunks of `detect.chunk_size`; chunk k is seeded from `seed` and k."""
  n = len(inputs.frame)
  if detect.embedding_dims and detect.answers.embedding:
    inputs = inputs.embedded(models.sft, tokenizer, buckets, detect.embedding_dims)
  return [
    Chunk(np.arange(s, min(s + detect.chunk_size, n)), inputs, models, detect, tokenizer, buckets, seed * 1_000_003 + k)
    for k, s in enumerate(range(0, n, detect.chunk_size))
  ]


def probe_model(
  frame: pd.DataFrame, model_dir: str, detect: DetectConfig, data: DataConfig, mesh_config: Any, seed: int
) -> pd.DataFrame:
  """Detection rows of `frame`'s examples under the model in `model_dir` alone (no base or reference
  model, no entity swaps or embeddings): a per-phase check or a retest, outside the stage."""
  detect = dataclasses.replace(
    detect,
    base="",
    reference="",
    entity_swaps=0,
    embedding_dims=0,
    mc=dataclasses.replace(detect.mc, base_distractors=None),
  )
  tokenizer = checkpoint.load_tokenizer(model_dir, data.tokenizer)
  inputs = Inputs.from_examples(frame.reset_index(drop=True), detect, data, tokenizer)
  model = Model(model_dir, parallel.make_mesh(mesh_config.shape), mesh_config.rules, detect.batch_size)
  return pd.concat(
    [table(c) for c in chunks(inputs, Models(model), detect, tokenizer, tuple(sorted(data.buckets)), seed)],
    ignore_index=True,
  )
