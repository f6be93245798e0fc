"""Training data from local files: JSONL, JSON, Parquet, raw text, Hugging Face and TFDS datasets.

A source is a plain mapping (one entry of `config.data.sft` or `config.data.corpora`):

  path     file, directory or glob (for `hf`: data files, or a `save_to_disk` directory)
  format   jsonl | json | parquet | hf | tfds | text (documents separated by blank lines) | lines
           (one document per line); default: from each file's extension
  dataset  source name (corpus name for corpora); default: the file's stem
  phase    sequential-SFT phase (SFT only), default 1
  fields   canonical field -> column name, for columns named otherwise
  split    hf/tfds split, default "train"
  name     hf: a `datasets` builder that reads local files ("json", "parquet", ...) or a local
           dataset directory; a URL path or a Hub id is refused (nothing is downloaded)

Every row of every source is validated before anything is returned, and all problems come back
as one `DataError` (up to `records.MAX_LISTED_PROBLEMS` listed), so a user fixes a whole file
in one pass. Locations are `path:LINE` (JSONL, 1-based), `path:[INDEX]` (JSON), `path:row N`
(Parquet), `hf:<path or name>[split]:row N`, `tfds:<dir>[split]:row N`, rows counted from 0.
Nothing is downloaded and nothing is written: Hugging Face data files are streamed rather than
converted into the `datasets` cache.
"""

from __future__ import annotations

import glob
import itertools
import json
import logging
import os
from typing import Any, Callable, Iterator, Mapping, NamedTuple, Sequence

from ilp.data.records import (
  CORPUS_FIELDS,
  SFT_FIELDS,
  CorpusDocument,
  DataError,
  SFTRecord,
  document_from_mapping,
  duplicate_id_problems,
  raise_problems,
  record_from_mapping,
)
from ilp.layout import component_problem

FORMATS = ("jsonl", "json", "parquet", "hf", "tfds", "text", "lines")
LOCAL_BUILDERS = ("json", "parquet", "text", "csv", "arrow")  # `datasets` builders that read local files only
LONG_DOCUMENT_LINES = 100  # a `text` document this long without a blank line is probably one per line
log = logging.getLogger(__name__)
_EXTENSIONS = {".jsonl": "jsonl", ".json": "json", ".parquet": "parquet", ".txt": "text"}
_HF_BUILDERS = {"jsonl": "json", "json": "json", "parquet": "parquet", "text": "text"}
_SOURCE_KEYS = ("path", "format", "dataset", "phase", "fields", "split", "name")

_Rows = Iterator[tuple[str, Any]]  # (location, raw row); a DataError in place of a row it could not read


class _Source(NamedTuple):
  path: str
  format: str | None
  dataset: str | None
  phase: int
  fields: dict[str, str]
  split: str
  name: str


class _Part(NamedTuple):
  """One file (or one hf/tfds dataset) of a source."""

  name: str  # default dataset/corpus name
  format: str
  rows: _Rows
  fields: dict[str, str]  # column mapping for these rows


def _as_dict(value: Any) -> Any:
  """A ConfigDict as a dict (sources come from the config); anything else unchanged."""
  return value.to_dict() if hasattr(value, "to_dict") else value


def _stem(path: str) -> str:
  return os.path.splitext(os.path.basename(path.rstrip("/")))[0]


def _source(raw: Any, index: int, allowed_fields: Sequence[str], keys: Sequence[str]) -> _Source:
  """Checks a source mapping; errors name the source by its position and path."""
  raw = _as_dict(raw)
  if not isinstance(raw, Mapping):
    raise DataError(f"data source #{index}: expected a mapping, got {type(raw).__name__}")
  label = f"data source #{index} ({raw.get('path') or raw.get('name')!r})"
  unknown = sorted(set(raw) - set(keys))
  if unknown:
    raise DataError(f"{label}: unknown key(s) {unknown} (expected some of {tuple(keys)})")
  source = _Source(
    path=raw.get("path") or "",
    format=raw.get("format") or None,
    dataset=raw.get("dataset"),
    phase=raw.get("phase", 1),
    fields=_as_dict(raw.get("fields") or {}),
    split=raw.get("split") or "train",
    name=raw.get("name") or "",
  )
  if source.format not in (None, *FORMATS):
    raise DataError(f"{label}: key 'format': '{source.format}' is not one of {FORMATS}")
  if not isinstance(source.path, str) or not (source.path or (source.format == "hf" and source.name)):
    raise DataError(f"{label}: key 'path': expected a file, directory or glob")
  if "://" in source.path:
    raise DataError(
      f"{label}: key 'path': '{source.path}' is a URL; sources must be local paths (nothing is downloaded at run time)"
    )
  if source.name and source.name not in LOCAL_BUILDERS and not os.path.isdir(source.name):
    raise DataError(
      f"{label}: key 'name': '{source.name}' is neither a local dataset directory nor one of "
      f"{LOCAL_BUILDERS}; a Hugging Face Hub id would need the network (download it beforehand "
      "and give its local path)"
    )
  if not isinstance(source.phase, int) or isinstance(source.phase, bool) or source.phase < 1:
    raise DataError(f"{label}: key 'phase': expected an int >= 1, got {source.phase!r}")
  if source.dataset is not None and not (isinstance(source.dataset, str) and source.dataset.strip()):
    raise DataError(f"{label}: key 'dataset': expected a non-empty string, got {source.dataset!r}")
  if source.dataset is not None and component_problem(source.dataset):
    raise DataError(f"{label}: key 'dataset': {component_problem(source.dataset)}")
  if not isinstance(source.fields, Mapping) or not all(isinstance(v, str) for v in source.fields.values()):
    raise DataError(f"{label}: key 'fields': expected a mapping of field name -> column name")
  bad = sorted(set(source.fields) - set(allowed_fields))
  if bad:
    raise DataError(f"{label}: key 'fields': unknown field(s) {bad} (expected some of {tuple(allowed_fields)})")
  return source._replace(fields=dict(source.fields))


def _lines(path: str) -> Iterator[tuple[str, str | DataError]]:
  """(path:LINE, text) per line; decoded line by line so an encoding error names its line."""
  with open(path, "rb") as f:
    for number, raw in enumerate(f, 1):
      where = f"{path}:{number}"
      try:
        yield where, raw.decode("utf-8")
      except UnicodeDecodeError as e:
        yield where, DataError(f"{where}: invalid UTF-8 (byte {e.start + 1} of the line)")


def _unique_keys(where: str) -> Callable[[list[tuple[str, Any]]], dict[str, Any]]:
  """A `json.loads` object hook that refuses a key given twice in one object (JSON keeps the last
  silently: a record could say two things and train on one)."""

  def build(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
      if key in out:
        raise DataError(f"{where}: key '{key}' given twice in one object")
      out[key] = value
    return out

  return build


def _json_line(line: str, where: str) -> Any:
  try:
    return json.loads(line, object_pairs_hook=_unique_keys(where))
  except json.JSONDecodeError as e:
    return DataError(f"{where}: invalid JSON ({e.msg} at column {e.colno})")
  except DataError as e:
    return e


def _jsonl_rows(path: str) -> _Rows:
  """One object per line; blank lines are skipped."""
  for where, line in _lines(path):
    if isinstance(line, DataError):
      yield where, line
    elif line.strip():
      yield where, _json_line(line.rstrip("\r\n"), where)


def _json_rows(path: str) -> _Rows:
  """A top-level list of objects, or an object holding that list under "data"."""
  with open(path, "rb") as f:
    data = f.read()
  try:
    payload = json.loads(data.decode("utf-8"), object_pairs_hook=_unique_keys(path))
  except UnicodeDecodeError as e:
    line = data.count(b"\n", 0, e.start) + 1
    raise DataError(f"{path}:{line}: invalid UTF-8") from e
  except json.JSONDecodeError as e:
    raise DataError(f"{path}:{e.lineno}: invalid JSON ({e.msg} at column {e.colno})") from e
  if isinstance(payload, dict) and isinstance(payload.get("data"), list):
    payload = payload["data"]
  if not isinstance(payload, list):
    raise DataError(f'{path}: expected a list of objects, or an object with a list under "data"')
  for index, row in enumerate(payload):
    yield f"{path}:[{index}]", row


def _parquet_rows(path: str) -> _Rows:
  import pyarrow.parquet as pq  # only Parquet sources need it

  try:
    batches = pq.ParquetFile(path).iter_batches()
  except Exception as e:  # pyarrow raises several types for unreadable files
    raise DataError(f"{path}: cannot read Parquet ({type(e).__name__}: {e})") from e
  number = 0
  for batch in batches:
    for row in batch.to_pylist():
      yield f"{path}:row {number}", row
      number += 1


def _text_rows(path: str) -> _Rows:
  """Documents separated by blank lines, each located at its first line. A very long document
  gets a warning: a corpus with one document per line needs `format: lines`."""
  start, lines, warned = "", [], False
  for where, line in itertools.chain(_lines(path), [("", "")]):  # a final blank line ends the last document
    if isinstance(line, DataError):
      yield where, line
    elif line.strip():
      start = start if lines else where
      lines.append(line)
    elif lines:
      if len(lines) >= LONG_DOCUMENT_LINES and not warned:
        log.warning(
          "%s: a document of %d lines without a blank line (documents are separated by blank lines); "
          "for one document per line, set the source's format to 'lines'",
          start,
          len(lines),
        )
        warned = True
      yield start, {"text": "".join(lines).rstrip("\r\n")}
      lines = []


def _lines_rows(path: str) -> _Rows:
  """One document per non-empty line."""
  for where, line in _lines(path):
    if isinstance(line, DataError) or line.strip():
      yield where, line if isinstance(line, DataError) else {"text": line.rstrip("\r\n")}


_FILE_READERS: dict[str, Callable[[str], _Rows]] = {
  "jsonl": _jsonl_rows,
  "json": _json_rows,
  "parquet": _parquet_rows,
  "text": _text_rows,
  "lines": _lines_rows,
}


def _files(source: _Source) -> list[str]:
  """The data files of a file-based source: a file, a glob's matches, or a directory's known files."""
  path = source.path
  if os.path.isdir(path):
    wanted = (source.format,) if source.format else tuple(_EXTENSIONS.values())
    candidates = (os.path.join(path, n) for n in sorted(os.listdir(path)) if not n.startswith((".", "_")))
    files = [f for f in candidates if os.path.isfile(f) and _EXTENSIONS.get(os.path.splitext(f)[1]) in wanted]
  elif any(c in path for c in "*?["):
    files = sorted(f for f in glob.glob(path) if os.path.isfile(f))
  elif os.path.isfile(path):
    files = [path]
  else:
    raise DataError(f"{path}: file not found")
  if not files:
    raise DataError(
      f"{path}: no data files (expected {', '.join(_EXTENSIONS)}; set 'format' to 'hf' or 'tfds' "
      f"for a saved dataset directory)"
    )
  return files


def _file_format(path: str, source: _Source) -> str:
  fmt = source.format or _EXTENSIONS.get(os.path.splitext(path)[1])
  if fmt is None:
    raise DataError(f"{path}: cannot tell the format from the extension; set 'format' to one of {FORMATS}")
  return fmt


def _hf_part(source: _Source) -> _Part:
  import datasets  # heavy; only hf sources need it

  label = f"hf:{source.path or source.name}[{source.split}]"
  try:
    if os.path.isdir(source.path) and not source.name:
      data = datasets.load_from_disk(source.path)
      data = data[source.split] if isinstance(data, datasets.DatasetDict) else data
    else:
      builder = source.name or _HF_BUILDERS.get(_EXTENSIONS.get(os.path.splitext(source.path)[1], ""))
      if builder is None:
        raise DataError(f"{label}: cannot tell the builder from the extension; set 'name' (e.g. 'json')")
      data_files = {source.split: source.path} if source.path else None
      data = datasets.load_dataset(builder, data_files=data_files, split=source.split, streaming=True)
  except DataError:
    raise
  except Exception as e:  # datasets raises many types (missing files, bad splits, schema errors)
    raise DataError(f"{label}: cannot load ({type(e).__name__}: {e})") from e
  return _Part(_stem(source.path or source.name), "hf", _hf_rows(data, label), source.fields)


def _hf_rows(data: Any, label: str) -> _Rows:
  number = 0
  try:
    for row in data:
      yield f"{label}:row {number}", row
      number += 1
  except Exception as e:  # a streamed file can fail mid-way (e.g. malformed JSON)
    raise DataError(f"{label}:row {number}: cannot read ({type(e).__name__}: {e})") from e


def _tfds_value(value: Any) -> Any:
  """Plain Python from a TFDS example: text features arrive as bytes, numbers as numpy values."""
  if isinstance(value, bytes):
    return value.decode("utf-8")
  if isinstance(value, dict):
    return {k: _tfds_value(v) for k, v in value.items()}
  if hasattr(value, "tolist"):
    return _tfds_value(value.tolist())
  if isinstance(value, (list, tuple)):
    return [_tfds_value(v) for v in value]
  return value


def _tfds_row(example: Mapping[str, Any], messages_column: str, where: str) -> dict[str, Any] | DataError:
  row = {}
  for key, value in example.items():
    try:
      row[key] = _tfds_value(value)
    except UnicodeDecodeError:
      return DataError(f"{where}: field '{key}': invalid UTF-8")
  turns = row.get(messages_column)
  if isinstance(turns, dict) and turns and all(isinstance(v, list) for v in turns.values()):
    # A TFDS Sequence of turns is stored column-wise ({"role": [...], "content": [...]}).
    row[messages_column] = [dict(zip(turns, values)) for values in zip(*turns.values())]
  return row


def _tfds_part(source: _Source) -> _Part:
  import tensorflow_datasets as tfds  # heavy; reads array_record datasets without TensorFlow

  label = f"tfds:{source.path}[{source.split}]"
  try:
    builder = tfds.builder_from_directory(source.path)
    data = builder.as_data_source(split=source.split)
  except Exception as e:  # tfds raises many types (missing metadata, unknown split, non-array_record files)
    raise DataError(f"{label}: cannot load ({type(e).__name__}: {e})") from e
  messages = source.fields.get("messages", "messages")
  rows = ((f"{label}:row {n}", _tfds_row(data[n], messages, f"{label}:row {n}")) for n in range(len(data)))
  return _Part(builder.name, "tfds", rows, source.fields)


def _parts(source: _Source) -> Iterator[_Part]:
  if source.format == "hf":
    yield _hf_part(source)
  elif source.format == "tfds":
    yield _tfds_part(source)
  else:
    for path in _files(source):
      fmt = _file_format(path, source)
      if fmt in ("hf", "tfds"):
        raise DataError(f"{path}: format '{fmt}' reads a dataset directory, not a file")
      # Raw text has one fixed column; the source's mapping is for its structured files.
      yield _Part(_stem(path), fmt, _FILE_READERS[fmt](path), {} if fmt in ("text", "lines") else source.fields)


class _Kind(NamedTuple):
  """What a load produces, and what its sources may say."""

  name: str  # for errors: "SFT data"
  fields: tuple[str, ...]  # canonical fields a source's `fields` may map
  keys: tuple[str, ...]  # keys a source may have
  formats: tuple[str, ...]  # formats that can hold it
  make: Callable[[_Source, _Part, int, str, Any], Any]  # (source, part, ordinal, location, row) -> item or None


def _read(sources: Sequence[Any], kind: _Kind) -> tuple[list[Any], list[str], list[str]]:
  """Every row of every source through `kind.make`: (items, their locations, problems)."""
  items, locations, problems = [], [], []
  for index, raw in enumerate(sources):
    try:
      source = _source(raw, index, kind.fields, kind.keys)
      found, failed = len(items), len(problems)
      for part in _parts(source):
        if part.format not in kind.formats:
          raise DataError(f"{source.path}: format '{part.format}' is not for {kind.name} (use one of {kind.formats})")
        for number, (where, row) in enumerate(part.rows):
          try:
            item = kind.make(source, part, number, where, row)
          except DataError as e:
            problems.append(str(e))
            continue
          if item is not None:
            items.append(item)
            locations.append(where)
      if len(items) == found and len(problems) == failed:  # a configured source that is empty is a mistake
        raise DataError(f"{source.path or source.name}: holds no {kind.name} (the source is empty)")
    except DataError as e:
      problems.append(str(e))
  return items, locations, problems


def _sft_record(source: _Source, part: _Part, number: int, where: str, row: Any, extra_fields: str) -> SFTRecord:
  if isinstance(row, DataError):
    raise row
  return record_from_mapping(row, part.fields, source.dataset or part.name, source.phase, where, extra_fields)


def _corpus_document(source: _Source, part: _Part, number: int, where: str, row: Any) -> CorpusDocument | None:
  if isinstance(row, DataError):
    raise row
  return document_from_mapping(row, part.fields, f"{part.name}:{number}", source.dataset or part.name, where)


_SFT = _Kind("SFT data", SFT_FIELDS, _SOURCE_KEYS, tuple(f for f in FORMATS if f not in ("text", "lines")), _sft_record)
_CORPUS = _Kind("corpus data", CORPUS_FIELDS, tuple(k for k in _SOURCE_KEYS if k != "phase"), FORMATS, _corpus_document)


def load_sft(sources: Sequence[Mapping[str, Any]], extra_fields: str = "error") -> list[SFTRecord]:
  """Every SFT record of `sources`, in order; ids must be unique across all of them. A record's
  unknown top-level field is an error or passed over (`extra_fields`, one of `EXTRA_FIELDS`)."""
  make = lambda source, part, number, where, row: _sft_record(source, part, number, where, row, extra_fields)
  records, locations, problems = _read(sources, _SFT._replace(make=make))
  raise_problems(problems + duplicate_id_problems(zip(records, locations)), _SFT.name)
  return records


def load_corpus(sources: Sequence[Mapping[str, Any]]) -> list[CorpusDocument]:
  """Every non-empty document of `sources`, in order.

  A source's `dataset` names its corpus; a document without an id field gets `<name>:<n>`, n its
  row's (or, for raw text, its document's) ordinal in the file from 0, so ids stay stable.
  """
  documents, _, problems = _read(sources, _CORPUS)
  raise_problems(problems, _CORPUS.name)
  return documents
