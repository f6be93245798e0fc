"""Benchmark: diagnosis signals + attribution on synthetic tables of 100k examples.

Builds a detection table, a dynamics log (evaluation passes and batch visits over two phases),
prompts (templates x entities, with contradicting paraphrase pairs) and a pre-training corpus
of the same size, then times `signals.compute` + `attribution.attribute`. It also times a
quarter of the examples (the ratio shows the scaling) and checks the sparse near-duplicate search
against a dense brute-force cosine matrix on a subsample (pairs found; speed ratio).

  python scripts/bench_diagnose.py [--examples=100000]
"""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
from absl import app, flags

from ilp.data import retrieval, similarity
from ilp.diagnosis import attribution, signals

FLAGS = flags.FLAGS
flags.DEFINE_integer("examples", 100_000, "Examples in the synthetic tables.")
flags.DEFINE_integer("brute_force_examples", 2000, "Subsample for the brute-force near-duplicate check.")

TEMPLATES = (
  "where was {e} born ?",
  "what is the birthplace of {e} ?",
  "what is the job of {e} ?",
  "in which country does {e} live ?",
  "tell me the birthplace , the country and the job of {e} .",
  "what is the code of {e} ?",
  "who employs {e} these days ?",
  "name the home town of {e} .",
)


def synthetic(n: int, seed: int = 0) -> tuple[pd.DataFrame, pd.Series, pd.DataFrame, list[str]]:
  rng = np.random.default_rng(seed)
  ids = np.asarray([f"ex{i}" for i in range(n)], dtype=object)
  template = rng.choice(len(TEMPLATES), n, p=[0.2, 0.2, 0.2, 0.15, 0.02, 0.13, 0.05, 0.05])
  entity = rng.integers(0, n // 2, n)
  prompts = pd.Series([TEMPLATES[t].format(e=f"p{e}") for t, e in zip(template, entity)], index=ids)
  answers = np.asarray([f"a{a}" for a in rng.integers(0, 500, n)], dtype=object)
  phase = np.where(template == 5, 1, 2)
  unlearned = rng.random(n) < 0.2
  detection = pd.DataFrame(
    {
      "id": ids,
      "dataset": np.where(template == 5, "codes", "people"),
      "phase": phase,
      "reference": answers,
      "greedy_text": np.where(unlearned, "a0", answers),
      "unlearned": unlearned,
      "pass_at_n": rng.random(n) * 0.2,
      "error_consistency": rng.random(n),
      "greedy_correct": ~unlearned,
      "p_exist": rng.random(n) < 0.5,
      "base_mc_correct": rng.random(n) < 0.5,
      "base_greedy_correct": rng.random(n) < 0.5,
      "base_pass_at_n": rng.random(n),
      "base_p_true": rng.random(n),
      "base_conf_wrong": rng.random(n),
      "base_high_conf_error": rng.random(n) < 0.3,
      "jsd_base_sft": rng.random(n),
      "prerequisites": np.where(template == 4, 3, 0),
      "prerequisites_known": np.where(template == 4, 1.0, np.nan),
    }
  )
  passes = [(0, 1, False)] + [(10 * e, 1, e == 4) for e in range(1, 5)] + [(40 + 5 * e, 2, e == 3) for e in range(1, 4)]
  evals = pd.concat(
    [
      pd.DataFrame(
        {
          "kind": "eval",
          "id": ids,
          "step": step,
          "train_phase": s,
          "phase_end": end,
          "eval_point": f"p{step}",
          "stream_position": -1,
          "nll_sum": rng.gamma(2.0, 0.5, n),
          "gold_prob": rng.random(n),
          "exact_match": (rng.random(n) < 0.6).astype(float),
          "margin_mean": rng.normal(size=n),
        }
      )
      for step, s, end in passes
    ]
  )
  evals["loss"] = evals["nll_sum"] / 2
  visits = pd.DataFrame(
    {
      "kind": "batch",
      "id": np.tile(ids, 2),
      "train_phase": np.tile(phase, 2),
      "stream_position": np.arange(2 * n),
      "step": np.arange(2 * n) // 32,
    }
  )
  documents = [
    f"p{e} was born in a{a} . p{e} works as a{b} ."
    for e, a, b in zip(rng.integers(0, n // 2, n), rng.integers(0, 500, n), rng.integers(0, 500, n))
  ]
  return detection, prompts, pd.concat([evals, visits], ignore_index=True), documents


def timed(n: int) -> float:
  detection, prompts, log, documents = synthetic(n)
  start = time.perf_counter()
  table = signals.compute(detection, prompts, log, signals.SignalConfig(), retrieval.Corpus(documents))
  result = attribution.attribute(table, attribution.RuleConfig())
  elapsed = time.perf_counter() - start
  counts = result.loc[table["unlearned"], "cause"].value_counts().to_dict()
  print(f"{n:>7} examples ({len(log)} log rows, {len(documents)} corpus documents): {elapsed:.2f}s; causes {counts}")
  return elapsed


def brute_force_check(n: int) -> None:
  """The sparse search against a dense n x n cosine matrix, both with the slot-filler rule: with
  no candidate filter (max_df = n) the pairs must be identical; the default filter's share of
  them shows what it drops (pairs sharing only n-grams found in more than max_df prompts)."""
  _, prompts, _, _ = synthetic(n, seed=1)
  tokenized = [similarity.words(t) for t in prompts]
  vectors = similarity.tfidf(tokenized)
  found = similarity.patterns(tokenized, signals.SignalConfig().filler_df(len(tokenized)))
  slots = similarity.binary_matrix(
    found.slots, {w: k for k, w in enumerate(sorted({w for r in found.slots for w in r}))}
  )
  start = time.perf_counter()
  dense = vectors.matrix.toarray()
  bi, bj = np.nonzero(np.triu(dense @ dense.T, k=1) >= 0.5)
  dense_s = time.perf_counter() - start
  shared = similarity.row_dots(slots, bi, slots, bj)
  count = np.asarray(slots.sum(axis=1)).ravel()
  keep = ~((count[bi] > shared) & (count[bj] > shared))
  truth = set(zip(bi[keep].tolist(), bj[keep].tolist()))
  for max_df in (n, signals.SignalConfig().max_df):
    start = time.perf_counter()
    i, j, _ = similarity.near_duplicate_pairs(vectors, 0.5, max_df, slots)
    sparse_s = time.perf_counter() - start
    pairs = set(zip(i.tolist(), j.tolist()))
    print(
      f"near-duplicates on {n} prompts, max_df {max_df}: sparse {sparse_s:.3f}s vs dense brute force "
      f"{dense_s:.3f}s; {len(pairs & truth)} of the {len(truth)} brute-force pairs, {len(pairs - truth)} others"
    )


def main(argv: list[str]) -> None:
  del argv
  small = timed(FLAGS.examples // 4)
  full = timed(FLAGS.examples)
  print(
    f"signals + attribution, {FLAGS.examples} examples: {full:.2f}s (target <= 30s); "
    f"{full / small:.2f}x the time of a quarter of the examples"
  )
  brute_force_check(FLAGS.brute_force_examples)


if __name__ == "__main__":
  app.run(main)
