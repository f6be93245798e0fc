"""A tokenizer trained on a run's own text, for a model trained from scratch on a user's data.

Only the synthetic world comes with a tokenizer (`save_word_level`: word-level over its known
words, split on whitespace alone). This one is trained with the `tokenizers` library on the
pieces of text the pipeline tokenises: every corpus document (`data.corpora`) and every SFT
record's prompt, as the plain template renders it (`ilp.data.tokenize`: a trained tokenizer has
no chat template), and response; both are read through the pipeline's loaders, so their
validation and errors apply.
It is saved as a `transformers` tokenizer directory for `data.tokenizer`, with the special tokens
every tokenizer built here shares (`SPECIAL`) at the same ids.

Pre-tokenisation splits off punctuation (`saffron.` -> `saffron`, `.`), then maps the text to
bytes as GPT-2 does, each piece keeping its leading space (`Ġ`). Byte-level because detection
decodes a sample and compares it with the reference, and exact match deletes punctuation without
inserting spaces: a decoder that joins pieces with spaces (what the `Whitespace` pre-tokenizer
leaves) turns `c-3` into `c 3` and `don't` into `don ' t`, which then fail. With byte-level
pieces decode(encode(x)) == x: for `bpe` always (all 256 bytes are in its vocabulary), for
`word` whenever every word of x is in the vocabulary (any other becomes `<unk>`).
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Iterable, NamedTuple

from ilp import fileio
from ilp.data.config import WORKDIR, DataConfig
from ilp.data.loaders import load_corpus, load_sft
from ilp.data.tokenize import plain_prompt
from ilp.typed import check

if TYPE_CHECKING:
  import transformers

SPECIAL = ("<pad>", "<s>", "</s>", "<unk>")  # ids 0..3 in every tokenizer built here
KINDS = ("bpe", "word")
BYTES = 256  # the byte-level alphabet, every one of it in a `bpe` vocabulary
PAD, BOS, EOS, UNK = SPECIAL


@dataclasses.dataclass(frozen=True)
class TokenizerTrainingConfig:
  """What to train: `bpe` (byte-level BPE: any text encodes without `<unk>`) or `word` (one
  token per word or punctuation mark seen, `<unk>` for any other). `vocab_size` counts the
  special tokens and is an upper bound: training stops earlier when the text has no more merges
  (bpe) or words (word) seen `min_frequency` times."""

  kind: str = "bpe"
  vocab_size: int = 4096
  min_frequency: int = 1

  def __post_init__(self):
    check(self.kind in KINDS, "kind", f"'{self.kind}' is not one of {KINDS}")
    smallest = len(SPECIAL) + (BYTES if self.kind == "bpe" else 1)
    check(
      self.vocab_size >= smallest,
      "vocab_size",
      f"must be >= {smallest} for kind '{self.kind}' (the special tokens"
      f"{f' and the {BYTES} bytes' if self.kind == 'bpe' else ' and one word'}), got {self.vocab_size}",
    )
    check(self.min_frequency >= 1, "min_frequency", f"must be >= 1, got {self.min_frequency}")


class TrainingText(NamedTuple):
  texts: list[str]  # corpus documents, then each record's prompt and response
  documents: int
  records: int


def training_text(data: DataConfig) -> TrainingText:
  """The text of `data.corpora` and `data.sft`, validated by the loaders (a DataError names the
  file, line and field); a ConfigError when there is none, or a path is under the work directory."""
  check(
    bool(data.corpora or data.sft),
    "data.corpora",
    "no text to train a tokenizer on: data.corpora and data.sft are both empty",
  )
  for name in ("corpora", "sft"):
    for k, source in enumerate(getattr(data, name)):
      path = str(source.get("path", ""))
      check(
        WORKDIR not in path,
        f"data.{name}[{k}].path",
        f"'{path}' is a file a run writes ({WORKDIR}); a tokenizer is trained on existing files",
      )
  documents = load_corpus([source for source, _ in data.corpus_sources()])
  records = load_sft(data.sft, data.extra_fields)
  texts = [d.text for d in documents]
  for record in records:
    texts += [plain_prompt(record, data.template), record.response]
  return TrainingText(texts, len(documents), len(records))


def train(texts: Iterable[str], settings: TokenizerTrainingConfig) -> "transformers.PreTrainedTokenizerFast":
  """A tokenizer of `settings.kind` trained on `texts`, the special tokens at ids 0..3 (`SPECIAL`)."""
  import transformers
  from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

  options = dict(
    vocab_size=settings.vocab_size,
    min_frequency=settings.min_frequency,
    special_tokens=list(SPECIAL),
    show_progress=False,
  )
  if settings.kind == "bpe":
    core = Tokenizer(models.BPE(unk_token=UNK))
    trainer = trainers.BpeTrainer(initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), **options)
  else:
    core = Tokenizer(models.WordLevel(unk_token=UNK))
    trainer = trainers.WordLevelTrainer(**options)
  core.pre_tokenizer = pre_tokenizers.Sequence(
    [pre_tokenizers.Punctuation(), pre_tokenizers.ByteLevel(add_prefix_space=False)]
  )
  core.decoder = decoders.ByteLevel()
  core.train_from_iterator(texts, trainer)
  # No clean-up on decode: it would drop the space before punctuation ("a ." -> "a.").
  return transformers.PreTrainedTokenizerFast(
    tokenizer_object=core,
    pad_token=PAD,
    bos_token=BOS,
    eos_token=EOS,
    unk_token=UNK,
    clean_up_tokenization_spaces=False,
  )


def save(tokenizer: "transformers.PreTrainedTokenizerFast", directory: str) -> None:
  """Writes the tokenizer directory whole or not at all."""
  with fileio.atomic_directory(directory) as tmp:
    tokenizer.save_pretrained(tmp)


def save_word_level(words: list[str], directory: str) -> None:
  """A word-level HF tokenizer whose ids are the positions in `words` (`SPECIAL` first), splitting on
  whitespace alone: for text written in a known vocabulary (the world, benchmarks), built offline."""
  import transformers
  from tokenizers import Tokenizer, models, pre_tokenizers

  core = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token=UNK))
  core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
  tokenizer = transformers.PreTrainedTokenizerFast(
    tokenizer_object=core, pad_token=PAD, bos_token=BOS, eos_token=EOS, unk_token=UNK
  )
  tokenizer.save_pretrained(directory)
