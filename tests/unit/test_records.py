"""Data loading: every format yields the same validated records, and every bad row is named by
file, line (or row) and field, all in one error."""

from __future__ import annotations

import functools
import json
import os
from typing import Any

import ml_collections
import pytest

from ilp.data import loaders
from ilp.data.config import DataConfig
from ilp.data.records import CorpusDocument, DataError, SFTRecord, record_from_mapping, validate_unique_ids
from ilp.typed import ConfigError

CHAT = {
  "id": "c1",
  "messages": [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "2+2?"},
    {"role": "assistant", "content": "4"},
  ],
  "dataset": "math",
  "phase": 2,
  "meta": {"source": "quiz", "difficulty": 3},
}
PAIR = {"id": "p1", "prompt": "Capital of France?", "response": "Paris"}


def chat_record(dataset: str = "math", phase: int = 2) -> SFTRecord:
  return SFTRecord("c1", tuple(CHAT["messages"]), dataset, phase, {"source": "quiz", "difficulty": 3})


def pair_record(dataset: str, phase: int = 1) -> SFTRecord:
  messages = ({"role": "user", "content": "Capital of France?"}, {"role": "assistant", "content": "Paris"})
  return SFTRecord("p1", messages, dataset, phase, {})


def write_jsonl(path: Any, rows: list[Any]) -> str:
  with open(path, "w") as f:
    f.writelines((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows)
  return str(path)


def columnar(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
  """Rows with every column (None where absent), as Parquet and datasets store them."""
  columns = list(dict.fromkeys(k for r in rows for k in r))
  return [{k: r.get(k) for k in columns} for r in rows]


def load_error(sources: list[dict[str, Any]], load=loaders.load_sft) -> str:
  with pytest.raises(DataError) as info:
    load(sources)
  return str(info.value)


# --- one row -------------------------------------------------------------------------------------


def test_record_from_mapping_both_forms():
  record = record_from_mapping(CHAT, {}, "default", 1, "x.jsonl:1")
  assert record == chat_record()
  assert record.prompt_messages == tuple(CHAT["messages"][:2]) and record.response == "4"
  pair = record_from_mapping(PAIR, {}, "default", 5, "x.jsonl:2")
  assert pair == pair_record("default", 5)
  assert pair.prompt_messages == ({"role": "user", "content": "Capital of France?"},) and pair.response == "Paris"


@pytest.mark.parametrize(
  "row, message",
  [
    ({**PAIR, "id": 7}, "x:4: field 'id': expected a string, got int"),
    ({**PAIR, "id": " "}, "x:4: field 'id': empty string"),
    ({k: v for k, v in PAIR.items() if k != "id"}, "x:4: missing field 'id'"),
    ({**PAIR, "phase": "2"}, "x:4: field 'phase': expected an int, got str"),
    ({**PAIR, "phase": True}, "x:4: field 'phase': expected an int, got bool"),
    ({**PAIR, "phase": 0}, "x:4: field 'phase': must be >= 1, got 0"),
    ({**PAIR, "dataset": 3}, "x:4: field 'dataset': expected a string, got int"),
    ({**PAIR, "meta": [1]}, "x:4: field 'meta': expected an object, got list"),
    ({**PAIR, "meta": {"prerequisites": "q"}}, "x:4: field 'meta.prerequisites': expected a list, got str"),
    (
      {**PAIR, "meta": {"prerequisites": [{"prompt": "q"}]}},
      "x:4: field 'meta.prerequisites[0]': missing key 'response'",
    ),
    (
      {**PAIR, "meta": {"prerequisites": [{"prompt": "q", "response": " "}]}},
      "x:4: field 'meta.prerequisites[0].response': empty string",
    ),
    ({**PAIR, "response": " \n"}, "x:4: field 'response': empty response"),
    ({**PAIR, "response": 4}, "x:4: field 'response': expected a string, got int"),
    ({"id": "a", "prompt": "q"}, "x:4: missing field 'response' (or 'messages')"),
    ({"id": "a", "response": "r"}, "x:4: missing field 'prompt' (or 'messages')"),
    (
      {**CHAT, "messages": CHAT["messages"][:2]},
      "x:4: field 'messages': last turn is 'user'; it must be 'assistant' (the response)",
    ),
    (
      {**CHAT, "messages": [CHAT["messages"][0], CHAT["messages"][2]]},
      "x:4: field 'messages[1].role': 'assistant' where 'user' belongs: a conversation is an optional first "
      "'system' turn, then 'user' and 'assistant' in turn, ending with 'assistant'",
    ),
    ({**CHAT, "messages": []}, "x:4: field 'messages': no turns"),
    ({**CHAT, "messages": "hi"}, "x:4: field 'messages': expected a list, got str"),
    (
      {**CHAT, "messages": [{"role": "bot", "content": "x"}]},
      "x:4: field 'messages[0].role': unknown role 'bot' (expected one of ('system', 'user', 'assistant'))",
    ),
    ({**CHAT, "messages": [{"role": "user"}]}, "x:4: missing field 'messages[0].content'"),
    (
      {**CHAT, "messages": [{"role": "user", "content": "q", "name": "n"}]},
      "x:4: field 'messages[0]': unexpected keys ['name']",
    ),
    (
      {**CHAT, "messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": ""}]},
      "x:4: field 'messages[1].content': empty response",
    ),
    ({**CHAT, "prompt": "q"}, "x:4: field 'messages' and field 'prompt' both given"),
    (["not", "an", "object"], "x:4: expected an object (a mapping of fields), got list"),
  ],
)
def test_record_errors_name_location_and_field(row, message):
  with pytest.raises(DataError) as info:
    record_from_mapping(row, {}, "d", 1, "x:4")
  assert str(info.value).startswith(message)


def test_validate_unique_ids_names_both_locations():
  validate_unique_ids([(chat_record(), "a:1"), (pair_record("d"), "a:2")])
  with pytest.raises(DataError, match=r"^b:7: field 'id': duplicate id 'c1' \(first at a:1\)$"):
    validate_unique_ids([(chat_record(), "a:1"), (pair_record("d"), "a:2"), (chat_record(), "b:7")])


# --- formats -------------------------------------------------------------------------------------


def test_jsonl_defaults_overrides_and_blank_lines(tmp_path):
  path = write_jsonl(tmp_path / "train.jsonl", [CHAT, "", "   ", PAIR])
  assert loaders.load_sft([{"path": path}]) == [chat_record(), pair_record("train")]
  assert loaders.load_sft([{"path": path, "dataset": "mine", "phase": 3}]) == [chat_record(), pair_record("mine", 3)]
  config = ml_collections.ConfigDict({"sft": ({"path": path, "phase": 4},), "one": {"path": path, "fields": {}}})
  assert loaders.load_sft(config.sft) == [chat_record(), pair_record("train", 4)]
  assert loaders.load_sft([config.one]) == [chat_record(), pair_record("train")]


def test_meta_distractors_are_checked(tmp_path):
  path = write_jsonl(tmp_path / "x.jsonl", [{**PAIR, "meta": {"distractors": ["Lyon", ""]}}])
  assert load_error([{"path": path}]) == f"{path}:1: field 'meta.distractors[1]': empty string"
  write_jsonl(path, [{**PAIR, "meta": {"distractors": "Lyon"}}])
  assert load_error([{"path": path}]) == f"{path}:1: field 'meta.distractors': expected a list, got str"


def test_field_mapping_renames_columns_in_records_and_errors(tmp_path):
  fields = {"id": "uid", "prompt": "question", "response": "answer", "meta": "info", "phase": "step"}
  row = {"uid": "q1", "question": "Why?", "answer": "Because.", "info": {"k": [1, 2]}, "step": 4, "id": 99}
  path = write_jsonl(tmp_path / "qa.jsonl", [row, {**row, "uid": "q2", "answer": ""}])
  lenient = functools.partial(loaders.load_sft, extra_fields="ignore")  # the unread "id" column passed over
  assert load_error([{"path": path, "fields": fields}], lenient) == f"{path}:2: field 'answer': empty response"
  write_jsonl(path, [row])
  messages = ({"role": "user", "content": "Why?"}, {"role": "assistant", "content": "Because."})
  assert lenient([{"path": path, "fields": fields}]) == [SFTRecord("q1", messages, "qa", 4, {"k": [1, 2]})]
  assert load_error([{"path": path, "fields": fields}]) == (  # strict (the default): the unread column named
    f"{path}:1: unknown field 'id' (the source's 'fields' reads this field from another column); "
    "set data.extra_fields='ignore' to pass unknown fields over"
  )


def test_json_list_data_object_and_directory(tmp_path):
  (tmp_path / "a.json").write_text(json.dumps([CHAT]))
  (tmp_path / "b.json").write_text(json.dumps({"data": [PAIR]}))
  (tmp_path / "notes.md").write_text("not data")
  assert loaders.load_sft([{"path": str(tmp_path)}]) == [chat_record(), pair_record("b")]
  assert loaders.load_sft([{"path": str(tmp_path / "*.json"), "phase": 2}]) == [chat_record(), pair_record("b", 2)]
  bad = str(tmp_path / "b.json")
  (tmp_path / "b.json").write_text(json.dumps({"data": [PAIR, {**PAIR, "id": 1}]}))
  assert load_error([{"path": bad}]) == f"{bad}:[1]: field 'id': expected a string, got int"
  (tmp_path / "b.json").write_text('[\n  {"id": "x",\n   "prompt": }\n]')
  assert load_error([{"path": bad}]) == f"{bad}:3: invalid JSON (Expecting value at column 14)"
  (tmp_path / "b.json").write_bytes(b'[\n  {"id": "\xff"}\n]')
  assert load_error([{"path": bad}]) == f"{bad}:2: invalid UTF-8"


def test_parquet_mixed_forms(tmp_path):
  import pyarrow as pa
  import pyarrow.parquet as pq

  path = str(tmp_path / "mix.parquet")
  pq.write_table(pa.Table.from_pylist(columnar([CHAT, PAIR])), path)
  assert loaders.load_sft([{"path": path}]) == [chat_record(), pair_record("mix")]
  pq.write_table(pa.Table.from_pylist([PAIR, {**PAIR, "id": "p2", "response": ""}]), path)
  assert load_error([{"path": path}]) == f"{path}:row 1: field 'response': empty response"


def test_hf_data_files_and_saved_datasets(tmp_path, monkeypatch):
  import datasets

  monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
  monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "cache"))
  path = write_jsonl(tmp_path / "chat.jsonl", [CHAT, PAIR])
  assert loaders.load_sft([{"path": path, "format": "hf"}]) == [chat_record(), pair_record("chat")]
  renamed = loaders.load_sft([{"path": path, "format": "hf", "name": "json", "split": "dev", "dataset": "x"}])
  assert [(r.id, r.dataset) for r in renamed] == [("c1", "math"), ("p1", "x")]
  assert not [f for _, _, fs in os.walk(tmp_path / "cache") for f in fs if not f.endswith(".lock")]  # streamed
  write_jsonl(path, [PAIR, {**PAIR, "id": "p2", "response": " "}])
  assert load_error([{"path": path, "format": "hf"}]) == f"hf:{path}[train]:row 1: field 'response': empty response"

  rows = datasets.Dataset.from_list(
    [{"uid": "h1", "q": "Hi", "a": "Hello", "level": 2}, {"uid": "h2", "q": "Bye", "a": "Ciao", "level": 1}]
  )
  rows.save_to_disk(str(tmp_path / "saved"))
  datasets.DatasetDict({"test": rows}).save_to_disk(str(tmp_path / "saved_dict"))
  fields = {"id": "uid", "prompt": "q", "response": "a", "phase": "level"}
  for source in ({"path": str(tmp_path / "saved")}, {"path": str(tmp_path / "saved_dict"), "split": "test"}):
    records = loaders.load_sft([{**source, "format": "hf", "fields": fields}])
    assert [(r.id, r.response, r.phase, r.dataset) for r in records] == [
      ("h1", "Hello", 2, os.path.basename(source["path"])),
      ("h2", "Ciao", 1, os.path.basename(source["path"])),
    ]


def _tfds_dataset(data_dir: str, rows: list[dict[str, Any]]) -> str:
  """A tiny TFDS dataset in array_record format, written without TensorFlow; returns its directory."""
  import numpy as np
  import tensorflow_datasets as tfds

  class IlpTinyChat(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    VERSION = tfds.core.Version("1.0.0")
    code_path = None  # no checksums file to find (tfds would look beside this module, via a missing package)

    def _info(self):
      turn = {"role": tfds.features.Text(), "content": tfds.features.Text()}
      return tfds.core.DatasetInfo(
        builder=self,
        features=tfds.features.FeaturesDict(
          {"id": tfds.features.Text(), "messages": tfds.features.Sequence(turn), "phase": np.int64}
        ),
      )

    def _split_generators(self, dl_manager):
      return {"train": self._generate_examples()}

    def _generate_examples(self):
      yield from enumerate(rows)

  builder = IlpTinyChat(data_dir=data_dir, file_format="array_record")
  builder.download_and_prepare()
  return str(builder.data_dir)


def test_tfds_array_record_without_tensorflow(tmp_path):
  with pytest.raises(ImportError):
    import tensorflow  # noqa: F401  (the point: reading needs no TensorFlow)
  french = ({"role": "user", "content": "Ça va ?"}, {"role": "assistant", "content": "Oui."})
  path = _tfds_dataset(
    str(tmp_path),
    [{k: CHAT[k] for k in ("id", "messages", "phase")}, {"id": "t2", "messages": list(french), "phase": 1}],
  )
  assert loaders.load_sft([{"path": path, "format": "tfds"}]) == [
    SFTRecord("c1", tuple(CHAT["messages"]), "ilp_tiny_chat", 2, {}),
    SFTRecord("t2", french, "ilp_tiny_chat", 1, {}),
  ]
  lenient = functools.partial(loaders.load_sft, extra_fields="ignore")
  assert load_error([{"path": path, "format": "tfds", "fields": {"id": "phase"}}], lenient) == (
    f"2 problems in the SFT data:\n  tfds:{path}[train]:row 0: field 'phase': expected a string, got int\n"
    f"  tfds:{path}[train]:row 1: field 'phase': expected a string, got int"
  )


def test_strict_records_name_file_line_and_field(tmp_path):
  """Faults a record can hide: each is an error naming its file, line and field, found by the load."""
  path = str(tmp_path / "odd.jsonl")
  cases = [
    ({**PAIR, "stage": 2}, "unknown field 'stage'; did you mean 'phase'? (or map it with the source's 'fields')"),
    ({**PAIR, "promt": "q"}, "unknown field 'promt'; did you mean 'prompt'?"),
    ({**PAIR, "prompt": " \t"}, "field 'prompt': empty prompt"),
    ({**PAIR, "response": "\u00a0\u200b"}, "field 'response': empty response"),  # invisible characters only
    ({**PAIR, "prompt": "q\ud800"}, "field 'prompt': lone surrogate U+D800 at character 2 (not text)"),
    (
      {**CHAT, "messages": [{"role": r, "content": "x"} for r in ("assistant", "user", "assistant", "assistant")]},
      "field 'messages[0].role': 'assistant' where 'user' belongs",
    ),
    (
      {**CHAT, "messages": [{"role": r, "content": "x"} for r in ("user", "system", "assistant")]},
      "field 'messages[1].role': 'system' where 'assistant' belongs",
    ),
    ({**PAIR, "dataset": ".."}, "field 'dataset': '..' is not a directory name"),
    ({**PAIR, "dataset": "a/b"}, "field 'dataset': 'a/b' holds '/', which a directory name cannot"),
  ]
  for row, message in cases:
    with open(path, "w") as f:
      f.write(json.dumps(row) + "\n")
    assert load_error([{"path": path}]).startswith(f"{path}:1: {message}"), message
  with open(path, "w") as f:
    f.write('{"id": "a", "prompt": "q", "response": "x", "prompt": "other"}\n')
  assert load_error([{"path": path}]) == f"{path}:1: key 'prompt' given twice in one object"
  with open(path, "w") as f:
    f.write(json.dumps({**PAIR, "stage": 2}) + "\n")
  assert loaders.load_sft([{"path": path}], extra_fields="ignore")[0].phase == 1  # passed over when asked
  named = load_error([{"path": path, "dataset": "x\ty"}])
  assert named.endswith("key 'dataset': 'x\\ty' holds '\\t', which a directory name cannot")
  with pytest.raises(ConfigError, match="'extra_fields': 'warn' is not one of"):
    DataConfig(extra_fields="warn")


# --- errors across a whole load --------------------------------------------------------------------


def test_malformed_json_and_invalid_utf8_name_their_lines(tmp_path):
  path = str(tmp_path / "bad.jsonl")
  with open(path, "wb") as f:
    f.write(json.dumps(PAIR).encode() + b"\n\n" + b'{"id": "x", "prompt": \n' + b'{"id": "\xff\xfe"}\n')
  assert load_error([{"path": path}]) == (
    f"2 problems in the SFT data:\n  {path}:3: invalid JSON (Expecting value at column 23)\n"
    f"  {path}:4: invalid UTF-8 (byte 9 of the line)"
  )
  write_jsonl(path, [PAIR, "[1, 2]"])
  assert load_error([{"path": path}]) == f"{path}:2: expected an object (a mapping of fields), got list"


def test_duplicate_ids_across_files_name_both_locations(tmp_path):
  first = write_jsonl(tmp_path / "first.jsonl", [PAIR, CHAT])
  second = write_jsonl(tmp_path / "second.jsonl", [{**PAIR, "id": "p9"}, {**CHAT, "phase": 1}])
  assert load_error([{"path": first}, {"path": second}]) == (
    f"{second}:2: field 'id': duplicate id 'c1' (first at {first}:2)"
  )


def test_many_bad_rows_one_error(tmp_path):
  path = write_jsonl(
    tmp_path / "many.jsonl",
    [
      {**PAIR, "id": 1},
      {**PAIR, "id": "a", "phase": "2"},
      PAIR,
      {**PAIR, "id": "b", "response": ""},
      {**CHAT, "id": "c", "messages": CHAT["messages"][:2]},
      {"id": "d", "prompt": "q"},
    ],
  )
  message = load_error([{"path": path}, {"path": str(tmp_path / "missing.jsonl")}, {"path": path, "stages": 2}])
  assert message.splitlines() == [
    "7 problems in the SFT data:",
    f"  {path}:1: field 'id': expected a string, got int",
    f"  {path}:2: field 'phase': expected an int, got str",
    f"  {path}:4: field 'response': empty response",
    f"  {path}:5: field 'messages': last turn is 'user'; it must be 'assistant' (the response)",
    f"  {path}:6: missing field 'response' (or 'messages')",
    f"  {tmp_path}/missing.jsonl: file not found",
    f"  data source #2 ('{path}'): unknown key(s) ['stages'] (expected some of "
    "('path', 'format', 'dataset', 'phase', 'fields', 'split', 'name'))",
  ]


def test_error_list_is_capped(tmp_path):
  path = write_jsonl(tmp_path / "bad.jsonl", [{**PAIR, "id": str(i), "response": ""} for i in range(25)])
  lines = load_error([{"path": path}]).splitlines()
  assert lines[0] == "25 problems in the SFT data:" and len(lines) == 22
  assert lines[20] == f"  {path}:20: field 'response': empty response" and lines[21] == "  ... and 5 more"


def test_text_is_not_an_sft_format(tmp_path):
  (tmp_path / "notes.txt").write_text("hello\n")
  assert load_error([{"path": str(tmp_path / "notes.txt")}]).startswith(
    f"{tmp_path}/notes.txt: format 'text' is not for SFT data"
  )


# --- corpora -------------------------------------------------------------------------------------


def test_corpus_text_jsonl_and_parquet(tmp_path):
  import pyarrow as pa
  import pyarrow.parquet as pq

  (tmp_path / "wiki.txt").write_text("Para one,\nline two.\n\n\n  \nPara two.\n\n")
  write_jsonl(tmp_path / "facts.jsonl", [{"body": "Fact A."}, {"body": "  "}, {"body": "Fact C.", "key": "fc"}])
  pq.write_table(pa.Table.from_pylist([{"text": "Row zero."}]), str(tmp_path / "web.parquet"))
  documents = loaders.load_corpus(
    [
      {"path": str(tmp_path / "wiki.txt")},
      {"path": str(tmp_path / "facts.jsonl"), "fields": {"text": "body", "id": "key"}},
      {"path": str(tmp_path / "web.parquet"), "dataset": "crawl"},
    ]
  )
  assert documents == [
    CorpusDocument("wiki:0", "Para one,\nline two.", "wiki"),
    CorpusDocument("wiki:1", "Para two.", "wiki"),
    CorpusDocument("facts:0", "Fact A.", "facts"),
    CorpusDocument("fc", "Fact C.", "facts"),
    CorpusDocument("web:0", "Row zero.", "crawl"),
  ]


def test_corpus_errors(tmp_path):
  path = write_jsonl(tmp_path / "c.jsonl", [{"text": "ok"}, {"txt": "typo"}, {"text": 5}])
  with open(tmp_path / "t.txt", "wb") as f:
    f.write(b"fine\n\nbad \xc3\x28 byte\n")
  assert load_error(
    [{"path": path}, {"path": str(tmp_path / "t.txt")}, {"path": path, "phase": 2}], loaders.load_corpus
  ).splitlines() == [
    "4 problems in the corpus data:",
    f"  {path}:2: missing field 'text'",
    f"  {path}:3: field 'text': expected a string, got int",
    f"  {tmp_path}/t.txt:3: invalid UTF-8 (byte 5 of the line)",
    f"  data source #2 ('{path}'): unknown key(s) ['phase'] (expected some of "
    "('path', 'format', 'dataset', 'fields', 'split', 'name'))",
  ]
