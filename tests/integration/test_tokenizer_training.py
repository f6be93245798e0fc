"""A tokenizer trained on a user's own corpus and SFT file: splitting, decoding, ids, errors, a run."""

import json
import os
import subprocess
import sys

import pytest

from configs import tiny_test
from ilp import pipeline, typed
from ilp.config import DEFAULT_MODEL
from ilp.data import tokenizer_training
from ilp.data.config import DataConfig
from ilp.data.records import DataError
from ilp.model import hf
from ilp.scoring.verifiers import exact_match
from tests import ROOT

RESPONSES = ("saffron.", "c-3", "I don't know!", "In Kraków.", "42.5%, roughly", "saffron (dried)", "“anise”")
CORPUS = (
  "The cook adds saffron. Then cumin, then c-3.",
  "In Kraków, spices cost 42.5% more (roughly).",
  "I don't know which “anise” is dried!",
  "Saffron is dried; saffron is red.",
)


def _write_inputs(directory) -> dict[str, str]:
  paths = {"corpus": str(directory / "corpus.txt"), "sft": str(directory / "sft.jsonl")}
  (directory / "corpus.txt").write_text("\n".join(CORPUS * 3) + "\n")
  with open(paths["sft"], "w") as f:
    for i in range(24):
      f.write(
        json.dumps(
          {"id": f"r{i}", "prompt": f"Question {i % 5}: which one?", "response": RESPONSES[i % len(RESPONSES)]}
        )
        + "\n"
      )
  return paths


def _data(paths: dict[str, str]) -> DataConfig:
  return typed.build(
    DataConfig, {"corpora": ({"path": paths["corpus"], "format": "lines"},), "sft": ({"path": paths["sft"]},)}, "data"
  )


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  """Inputs, the text read, and both kinds of tokenizer as saved and loaded back like a run does."""
  base = tmp_path_factory.mktemp("own")
  paths = _write_inputs(base)
  text = tokenizer_training.training_text(_data(paths))
  tokenizers = {}
  for kind in tokenizer_training.KINDS:
    directory = str(base / kind)
    settings = tokenizer_training.TokenizerTrainingConfig(kind=kind, vocab_size=400)
    tokenizer_training.save(tokenizer_training.train(text.texts, settings), directory)
    tokenizers[kind] = (directory, hf.load_tokenizer(directory))
  return paths, text, tokenizers


def _ids(tokenizer, text: str) -> list[int]:
  return tokenizer(text, add_special_tokens=False)["input_ids"]


def test_reads_every_document_and_the_rendered_prompts(trained):
  _, text, _ = trained
  assert (text.documents, text.records) == (12, 24)
  assert text.texts[:12] == list(CORPUS * 3)
  # Each record's prompt as the plain template renders it for tokenisation, then its response.
  assert text.texts[12:14] == ["user: Question 0: which one?\nassistant: ", "saffron."]


def test_punctuation_is_split_from_words(trained):
  _, _, tokenizers = trained
  for _, tokenizer in tokenizers.values():
    pieces = tokenizer.backend_tokenizer.pre_tokenizer.pre_tokenize_str("saffron.")
    assert [piece for piece, _ in pieces] == ["saffron", "."]
  word = tokenizers["word"][1]
  assert word.convert_ids_to_tokens(_ids(word, "saffron.")) == ["saffron", "."]
  assert _ids(word, "saffron.")[0] == _ids(word, "saffron")[0] != word.unk_token_id


@pytest.mark.parametrize("kind", tokenizer_training.KINDS)
def test_decode_gives_back_every_response_and_prompt(trained, kind):
  """As detection decodes a sample (response tokens + EOS, special tokens skipped, stripped)."""
  _, text, tokenizers = trained
  tokenizer = tokenizers[kind][1]
  for original in text.texts[text.documents :]:
    ids = _ids(tokenizer, original) + [tokenizer.eos_token_id]
    assert tokenizer.unk_token_id not in ids
    decoded = tokenizer.decode(ids, skip_special_tokens=True).strip()
    assert decoded == original.strip() and exact_match(decoded, original)
  assert exact_match(tokenizer.decode(_ids(tokenizer, "c-3")), "c-3")  # a space-joining decoder gives "c 3"


def test_special_tokens_at_the_world_tokenizer_ids(trained, tmp_path):
  _, _, tokenizers = trained
  tokenizer_training.save_word_level(list(tokenizer_training.SPECIAL) + ["saffron"], str(tmp_path / "world"))
  reference = hf.load_tokenizer(str(tmp_path / "world"))
  for _, tokenizer in tokenizers.values():
    for name in ("pad", "bos", "eos", "unk"):
      assert getattr(tokenizer, f"{name}_token_id") == getattr(reference, f"{name}_token_id"), name
    assert tokenizer.convert_tokens_to_ids(list(tokenizer_training.SPECIAL)) == [0, 1, 2, 3]
    # A random init takes its size and special ids from the tokenizer (model.vocab_size=0).
    model = DEFAULT_MODEL.replace(vocab_size=0).for_tokenizer(tokenizer)
    assert (model.vocab_size, model.bos_token_id, model.eos_token_ids, model.pad_token_id) == (
      len(tokenizer),
      1,
      (2,),
      0,
    )
  assert 4 + tokenizer_training.BYTES <= len(tokenizers["bpe"][1]) <= 400


@pytest.mark.parametrize(
  "settings, field",
  [
    ({"kind": "sentencepiece"}, "kind"),
    ({"vocab_size": 259}, "vocab_size"),
    ({"vocab_size": "big"}, "vocab_size"),
    ({"kind": "word", "vocab_size": 4}, "vocab_size"),
    ({"min_frequency": 0}, "min_frequency"),
  ],
)
def test_bad_settings_name_their_field(settings, field):
  with pytest.raises(typed.ConfigError) as error:
    typed.build(tokenizer_training.TokenizerTrainingConfig, settings)
  assert error.value.field == field


def test_bad_sources_are_refused_naming_them(tmp_path):
  with pytest.raises(typed.ConfigError, match="both empty"):
    tokenizer_training.training_text(DataConfig())
  with pytest.raises(typed.ConfigError) as error:
    tokenizer_training.training_text(DataConfig(sft=({"path": "{workdir}/world/sft_phase1.jsonl"},)))
  assert error.value.field == "data.sft[0].path"
  with pytest.raises(DataError, match="missing.jsonl: file not found"):
    tokenizer_training.training_text(DataConfig(sft=({"path": str(tmp_path / "missing.jsonl")},)))
  (tmp_path / "bad.jsonl").write_text('{"id": "a", "prompt": "p"}\n')
  with pytest.raises(DataError, match=r"bad.jsonl:1: missing field 'response'"):
    tokenizer_training.training_text(DataConfig(sft=({"path": str(tmp_path / "bad.jsonl")},)))


def _script(config: str, out: str) -> subprocess.CompletedProcess:
  return subprocess.run(
    [
      sys.executable,
      os.path.join(ROOT, "scripts", "train_tokenizer.py"),
      f"--config={config}",
      f"--out={out}",
      "--kind=word",
    ],
    cwd=ROOT,
    capture_output=True,
    text=True,
    timeout=300,
  )


def test_script_trains_then_refuses_an_existing_out_and_writes_nothing(trained, tmp_path):
  paths, _, _ = trained
  # A config file naming only the data (any run config works; this one spares importing JAX).
  config = tmp_path / "own.py"
  config.write_text(
    "import ml_collections\n\n\ndef get_config():\n  return ml_collections.ConfigDict("
    f"{{'data': {{'sft': ({{'path': {paths['sft']!r}}},)}}}})\n"
  )
  out = tmp_path / "tokenizer"
  result = _script(str(config), str(out))
  assert result.returncode == 0, result.stderr[-2000:]
  assert "read 0 corpus documents and 24 SFT records (" in result.stdout
  assert f"--config.data.tokenizer={out} --config.model.vocab_size=0" in result.stdout
  vocab = hf.load_tokenizer(str(out)).get_vocab()
  assert "Ġsaffron" not in vocab and "saffron" in vocab and vocab["<pad>"] == 0  # SFT text only, word-level
  before = sorted(os.listdir(out))
  result = _script(str(config), str(out))
  assert result.returncode != 0 and "Traceback" not in result.stderr
  assert f"--out={out} already exists and is not an empty directory" in result.stderr
  assert sorted(os.listdir(tmp_path)) == ["own.py", "tokenizer"] and sorted(os.listdir(out)) == before


def test_a_run_initialises_and_fine_tunes_with_the_trained_tokenizer(trained, tmp_path):
  paths, _, tokenizers = trained
  directory, tokenizer = tokenizers["bpe"]
  config = tiny_test.get_config()
  config.model.update(vocab_size=0, num_layers=1)  # one layer: a quarter less compile time
  config.stages = ("init_model", "sft")
  config.data.update(sft=({"path": paths["sft"]},), tokenizer=directory, buckets=(32,))
  config.sft.update(batch_size=8, epochs=1, log_every_steps=1)
  config.sft.checkpoint.update(async_save=False)
  workdir = str(tmp_path / "run")
  pipeline.run(config, workdir)
  with open(os.path.join(workdir, "model_init", "model_config.json")) as f:
    model = json.load(f)
  assert (model["vocab_size"], model["eos_token_ids"], model["pad_token_id"]) == (len(tokenizer), [2], 0)
  with open(os.path.join(workdir, "sft", "summary.json")) as f:
    summary = json.load(f)
  assert summary["steps"] == 3
  final = hf.load_tokenizer(os.path.join(workdir, "sft", "final", "tokenizer"))
  assert final.get_vocab() == tokenizer.get_vocab()
