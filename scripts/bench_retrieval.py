"""Benchmark: BM25 retrieval (`ilp.data.retrieval`, bm25s) at real size.

Generates a synthetic collection of `--documents` documents (Zipf-distributed words over a
`--vocabulary`, lengths around 60 words, each naming one of `--documents` / 10 entities, as the
pre-training and knowledge corpora do), then: builds the index and saves it (time, peak RSS),
loads it memory-mapped as a later run does (time), and times `--queries` entity queries against
the memory-mapped index and against the in-memory one it was built as (the ratio: what the
memory mapping costs per query). Peak RSS is the process's maximum resident set (getrusage) after
each phase; the generated texts alone are reported first.

  python scripts/bench_retrieval.py [--documents=1000000] [--queries=1000]
"""

from __future__ import annotations

import os
import resource
import shutil
import tempfile
import time

import numpy as np
from absl import app, flags

from ilp.data import retrieval

FLAGS = flags.FLAGS
flags.DEFINE_integer("documents", 1_000_000, "Documents in the synthetic collection.")
flags.DEFINE_integer("vocabulary", 200_000, "Distinct ordinary words.")
flags.DEFINE_integer("queries", 1000, "Entity queries timed.")
flags.DEFINE_string("directory", "", "Where the index is saved (default: a temporary directory, removed after).")


def _peak_gib() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def collection(n: int, vocabulary: int, seed: int = 0) -> list[str]:
  """`n` documents of Zipf-distributed words, each about one entity `e<k>` (k < n / 10)."""
  rng = np.random.default_rng(seed)
  words = np.asarray([f"w{i}" for i in range(vocabulary)], dtype=object)
  lengths = np.clip(rng.lognormal(np.log(60), 0.4, n).astype(int), 8, 400)
  drawn = np.minimum(rng.zipf(1.2, int(lengths.sum())) - 1, vocabulary - 1)
  entities = rng.integers(0, max(n // 10, 1), n)
  out, start = [], 0
  for length, entity in zip(lengths, entities):
    body = words[drawn[start : start + length]]
    start += length
    out.append(f"e{entity} " + " ".join(body) + f" e{entity} .")
  return out


def _time_queries(retriever: retrieval.Retriever, queries: list[str]) -> float:
  start = time.perf_counter()
  retriever.search(queries, 20)
  return (time.perf_counter() - start) / len(queries)


def _time_dense(retriever: retrieval.Retriever, queries: list[str]) -> float:
  """Per query: every document's score (`Retriever.scores`), then the top 20 of the positive ones."""
  start = time.perf_counter()
  for query in queries:
    s = retriever.scores(query)
    hits = np.flatnonzero(s > 0)
    hits[np.lexsort((hits, -s[hits]))][:20]
  return (time.perf_counter() - start) / len(queries)


def main(argv: list[str]) -> None:
  del argv
  start = time.perf_counter()
  texts = collection(FLAGS.documents, FLAGS.vocabulary)
  print(
    f"{len(texts):,} documents, {sum(map(len, texts)) / 2**20:.0f} MiB of text, generated in "
    f"{time.perf_counter() - start:.0f} s; peak RSS {_peak_gib():.2f} GiB"
  )
  directory = FLAGS.directory or tempfile.mkdtemp(prefix="bm25-")
  try:
    start = time.perf_counter()
    built = retrieval.Retriever(texts)
    build = time.perf_counter() - start
    print(f"build (in memory): {build:.0f} s; peak RSS {_peak_gib():.2f} GiB")
    start = time.perf_counter()
    retrieval._saved(texts, 1.5, 0.75, directory)  # fingerprint, build, save
    saved = time.perf_counter() - start
    print(f"fingerprint + build + save: {saved:.0f} s; peak RSS {_peak_gib():.2f} GiB")
    start = time.perf_counter()
    mapped = retrieval.Retriever(texts, directory=directory)
    print(f"load (fingerprint + memory map): {time.perf_counter() - start:.1f} s")
    rng = np.random.default_rng(1)
    entities = rng.integers(0, len(texts) // 10, FLAGS.queries)
    kinds = {  # the retrieval's queries (entities), and a harder kind: an entity with one of the 50 commonest words
      "entity": [f"e{e}" for e in entities],
      "entity + common word": [f"e{e} w{w}" for e, w in zip(entities, rng.integers(0, 50, FLAGS.queries))],
    }
    for kind, queries in kinds.items():
      in_memory, on_disk = _time_queries(built, queries), _time_queries(mapped, queries)
      dense = _time_dense(mapped, queries[: max(1, len(queries) // 10)])
      print(
        f"{kind} query, top 20 of {len(texts):,}: {1000 * on_disk:.2f} ms memory-mapped, {1000 * in_memory:.2f} ms "
        f"in memory (ratio {on_disk / in_memory:.2f}); every document scored (bm25s get_scores) {1000 * dense:.1f} ms "
        f"(postings only: {dense / on_disk:.0f}x faster)"
      )
    print(f"peak RSS {_peak_gib():.2f} GiB")
    size = sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(directory) for f in fs)
    print(f"index on disk: {size / 2**20:.0f} MiB")
  finally:
    if not FLAGS.directory:
      shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
  app.run(main)
