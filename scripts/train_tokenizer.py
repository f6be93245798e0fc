"""Trains a tokenizer on a run's own corpora and SFT data, for a model trained from scratch.

  python scripts/train_tokenizer.py --config=configs/world.py --out=data/tokenizer \\
      --config.data.corpora='({"path": "data/corpus.txt"},)' --config.data.sft='({"path": "data/sft.jsonl"},)' \\
      [--kind=bpe|word] [--vocab_size=4096] [--min_frequency=1]

The config file and its `--config.a.b=value` overrides are the ones a run gets, so the text read
(`data.corpora`, `data.sft`, prompts rendered with `data.template`) is what the run trains on;
see `ilp.data.tokenizer_training`. A run then uses the tokenizer with
`--config.data.tokenizer=<out> --config.model.vocab_size=0`. A bad flag, config field or data
file, or an `--out` that already holds files, stops it with one error and nothing written.
"""

from __future__ import annotations

import os
import sys

from absl import app, flags
from ml_collections import config_flags

from ilp import console, typed
from ilp.data.config import DataConfig
from ilp.data.records import DataError
from ilp.data.tokenizer_training import KINDS, TokenizerTrainingConfig, save, train, training_text

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file(
  "config", None, "Config file (a get_config() module) naming the data.", lock_config=True
)
flags.DEFINE_string("out", None, "Tokenizer directory to write; must not exist or be empty.")
flags.DEFINE_enum("kind", None, KINDS, f"Tokenizer kind (default {TokenizerTrainingConfig.kind}).")
flags.DEFINE_integer(
  "vocab_size", None, f"Largest vocabulary, special tokens included (default {TokenizerTrainingConfig.vocab_size})."
)
flags.DEFINE_integer(
  "min_frequency",
  None,
  f"Fewest occurrences of a merge or word kept (default {TokenizerTrainingConfig.min_frequency}).",
)
flags.mark_flags_as_required(["config", "out"])

NAME = "train_tokenizer.py"


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  console.configure_logging()
  out = FLAGS.out
  if os.path.exists(out) and (not os.path.isdir(out) or os.listdir(out)):
    sys.exit(f"{NAME}: --out={out} already exists and is not an empty directory; give a new one")
  given = {name: FLAGS[name].value for name in ("kind", "vocab_size", "min_frequency") if FLAGS[name].value is not None}
  try:
    settings = typed.build(TokenizerTrainingConfig, given)
  except typed.ConfigError as e:
    sys.exit(f"{NAME}: --{e.field}: {e.message}")
  try:
    text = training_text(typed.build(DataConfig, FLAGS.config.data, "data"))
  except (typed.ConfigError, DataError) as e:
    sys.exit(f"{NAME}: {e}")
  print(
    f"read {text.documents} corpus documents and {text.records} SFT records ({sum(map(len, text.texts)):,} characters)"
  )
  tokenizer = train(text.texts, settings)
  save(tokenizer, out)
  print(f"trained a {settings.kind} tokenizer of {len(tokenizer)} tokens (at most {settings.vocab_size}) into {out}")
  print(
    f"next: launch.py --config={config_flags.get_config_filename(FLAGS['config'])} --workdir=<run> with the "
    f"same --config.data overrides and --config.data.tokenizer={os.path.abspath(out)} --config.model.vocab_size=0"
  )


if __name__ == "__main__":
  app.run(main)
