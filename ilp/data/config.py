"""The `data` config section: where SFT records and corpora come from and how they are tokenised."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Iterable

from ilp.data.records import EXTRA_FIELDS
from ilp.data.tokenize import OVERLONG_POLICIES, TemplateConfig
from ilp.typed import check

SOURCES = (
  "sft",
  "corpora",
  "replay",
  "dev",
  "knowledge",
  "general",
  "heldout",
  "heldout_text",
)  # fields listing sources
WORKDIR = "{workdir}"  # in a data path: the run's work directory (for files an earlier stage writes)


@dataclasses.dataclass(frozen=True)
class DataConfig:
  """Each source is a dict: path, format (jsonl/json/parquet/hf/tfds/text; default from the
  extension), dataset (default: file stem), phase (default 1), fields (column mapping), split and
  name (hf/tfds); corpora also take `weight` (their share of the pre-training mixture). Paths may
  contain `{workdir}` for files an earlier stage writes."""

  sft: tuple[dict, ...] = ()  # SFT records: the training set, detected and diagnosed
  corpora: tuple[dict, ...] = ()  # pre-training text (`pretrain` stage, diagnosis's corpus evidence)
  replay: tuple[dict, ...] = ()  # SFT-format records mixed into SFT as replay (`sft.replay`), never detected
  dev: tuple[dict, ...] = ()  # SFT-format records held out to watch training (resampling, early stop)
  dev_fraction: float = 0.0  # without `dev`: hold out this share of `sft` by id hash (ilp.data.dev)
  knowledge: tuple[dict, ...] = ()  # documents the knowledge/calibration arms retrieve from
  general: tuple[dict, ...] = ()  # general text those arms mix into continual pre-training
  heldout: tuple[dict, ...] = ()  # SFT-format questions never trained on (capability check)
  heldout_text: tuple[dict, ...] = ()  # text never trained on (held-out perplexity)
  tokenizer: str = ""  # HF tokenizer directory; default: the one stored with the model
  index_dir: str = "{workdir}/indexes"  # BM25 indexes of corpora, built once and memory-mapped ("": none kept)
  buckets: tuple[int, ...] = (64, 128, 256)  # padded sequence lengths; the largest is the maximum length
  overlong: str = "truncate_prompt"  # one of OVERLONG_POLICIES: what to do with a longer example
  extra_fields: str = "error"  # one of records.EXTRA_FIELDS: a record's unknown top-level field (error names it)
  template: TemplateConfig = TemplateConfig()  # how a conversation becomes the model's text

  def __post_init__(self):
    check(
      len(self.buckets) > 0 and all(b >= 2 for b in self.buckets),
      "buckets",
      f"must list lengths >= 2, got {self.buckets}",
    )
    check(self.overlong in OVERLONG_POLICIES, "overlong", f"'{self.overlong}' is not one of {OVERLONG_POLICIES}")
    check(self.extra_fields in EXTRA_FIELDS, "extra_fields", f"'{self.extra_fields}' is not one of {EXTRA_FIELDS}")
    check(0 <= self.dev_fraction < 1, "dev_fraction", f"must be in [0, 1), got {self.dev_fraction}")
    for k, source in enumerate(self.corpora):
      weight = source.get("weight", 1.0)
      check(
        isinstance(weight, (int, float)) and not isinstance(weight, bool) and weight > 0,
        f"corpora[{k}].weight",
        f"must be a positive number, got {weight!r}",
      )

  @property
  def max_length(self) -> int:
    return max(self.buckets)

  @property
  def index_directory(self) -> str | None:
    """Where BM25 indexes are kept: `index_dir` once resolved against a run's work directory;
    None (indexes built in memory) when empty or when no run resolved it (a library call
    outside a pipeline run, which has no work directory to keep them in)."""
    return self.index_dir if self.index_dir and WORKDIR not in self.index_dir else None

  def corpus_sources(self) -> list[tuple[dict[str, Any], float]]:
    """(source without its weight, weight) for every corpus."""
    return [
      ({k: v for k, v in source.items() if k != "weight"}, float(source.get("weight", 1.0))) for source in self.corpora
    ]

  def resolved(self, workdir: str) -> "DataConfig":
    """A copy with `{workdir}` in every path replaced by `workdir`."""
    fill = lambda sources: tuple(
      {**s, "path": str(s["path"]).replace(WORKDIR, workdir)} if "path" in s else s for s in sources
    )
    return dataclasses.replace(
      self,
      tokenizer=self.tokenizer.replace(WORKDIR, workdir),
      index_dir=self.index_dir.replace(WORKDIR, workdir),
      **{name: fill(getattr(self, name)) for name in SOURCES},
    )

  def existing(self) -> "DataConfig":
    """A copy without the sources under `{workdir}`: they do not exist before their stage runs."""
    keep: Callable[[Iterable[dict]], tuple] = lambda sources: tuple(
      s for s in sources if WORKDIR not in str(s.get("path", ""))
    )
    return dataclasses.replace(self, **{name: keep(getattr(self, name)) for name in SOURCES})
