"""The training-data schema, and validation of raw rows into it.

Every loader turns its rows into `SFTRecord`s or `CorpusDocument`s through this module, so the
rules (and the wording of errors) are the same for JSONL, Parquet, Hugging Face and TFDS data.
Types are checked strictly, with no coercion: a silently converted id or phase would change what
is trained on, or which rows later tables join, without anyone noticing. Every error names the
location (file and line, or row) and the field, so a bad row can be found and fixed directly.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import unicodedata
from typing import Any, Iterable, Mapping, Sequence

from ilp.layout import component_problem

ROLES = ("system", "user", "assistant")
SFT_FIELDS = ("id", "messages", "prompt", "response", "dataset", "phase", "meta")
CORPUS_FIELDS = ("id", "text")
MAX_LISTED_PROBLEMS = 20
PREREQUISITES = "prerequisites"  # optional meta key: [{"prompt", "response"}, ...]
DISTRACTORS = "distractors"  # optional meta key: wrong answers for the multiple-choice probe

_KINDS = {str: "a string", int: "an int", dict: "an object", list: "a list"}
EXTRA_FIELDS = ("error", "ignore")  # `data.extra_fields`: what an unknown top-level field of a record is
# Names other SFT sets give the canonical fields, for the hint of an unknown-field error.
ALIASES = {
  "stage": "phase",
  "instruction": "prompt",
  "question": "prompt",
  "input": "prompt",
  "query": "prompt",
  "output": "response",
  "answer": "response",
  "completion": "response",
  "target": "response",
  "conversation": "messages",
  "conversations": "messages",
  "source": "dataset",
  "metadata": "meta",
}
_INVISIBLE = ("Cc", "Cf", "Zs", "Zl", "Zp")  # control, format (zero-width), space and separator characters


class DataError(ValueError):
  """Bad input data; the message names the file, the line (or row index) and the field."""


@dataclasses.dataclass(frozen=True)
class SFTRecord:
  """One supervised example: a conversation whose last (assistant) turn is the target."""

  id: str  # unique across all SFT sources of a run
  messages: tuple[dict[str, str], ...]  # {"role", "content"} turns; the last is the assistant's
  dataset: str  # source name
  phase: int  # sequential-SFT phase, >= 1
  meta: dict[str, Any] = dataclasses.field(default_factory=dict)  # passed through to output tables
  where: str = dataclasses.field(default="", compare=False)  # "file:line" it was read from (messages only)

  @property
  def prompt_messages(self) -> tuple[dict[str, str], ...]:
    return self.messages[:-1]

  @property
  def response(self) -> str:
    return self.messages[-1]["content"]


@dataclasses.dataclass(frozen=True)
class CorpusDocument:
  """Raw text for (continual) pre-training."""

  id: str
  text: str
  corpus: str


def raise_problems(problems: Sequence[str], what: str) -> None:
  """Raises one error for all problems, so a user fixes every bad row in one pass."""
  if not problems:
    return
  if len(problems) == 1:
    raise DataError(problems[0])
  listed = "".join(f"\n  {p}" for p in problems[:MAX_LISTED_PROBLEMS])
  more = len(problems) - MAX_LISTED_PROBLEMS
  if more > 0:
    listed += f"\n  ... and {more} more"
  raise DataError(f"{len(problems)} problems in the {what}:{listed}")


def duplicate_id_problems(items_with_locations: Iterable[tuple[Any, str]]) -> list[str]:
  """One problem per repeated `.id`, naming its location and that of the first occurrence."""
  first: dict[str, str] = {}
  problems = []
  for item, where in items_with_locations:
    if item.id in first:
      problems.append(f"{where}: field 'id': duplicate id '{item.id}' (first at {first[item.id]})")
    else:
      first[item.id] = where
  return problems


def validate_unique_ids(records_with_locations: Iterable[tuple[Any, str]]) -> None:
  """Ids key every per-example table, so a repeated id would merge two examples' statistics."""
  raise_problems(duplicate_id_problems(records_with_locations), "record ids")


def _field_error(where: str, column: str, message: str) -> DataError:
  return DataError(f"{where}: field '{column}': {message}")


def _expect(value: Any, kind: type, where: str, column: str) -> Any:
  """`value` if it is of `kind` (bool is not an int); `list` also admits tuples."""
  accepted = (list, tuple) if kind is list else kind
  if not isinstance(value, accepted) or (kind is int and isinstance(value, bool)):
    raise _field_error(where, column, f"expected {_KINDS[kind]}, got {type(value).__name__}")
  return value


def _non_empty(value: Any, where: str, column: str) -> str:
  if not _expect(value, str, where, column).strip():
    raise _field_error(where, column, "empty string")
  return value


def _dataset(value: Any, where: str, column: str) -> str:
  problem = component_problem(_non_empty(value, where, column))
  if problem:
    raise _field_error(where, column, problem)
  return value


def _text(value: Any, where: str, column: str, empty: str) -> str:
  """A prompt, response or turn: a string of encodable text with a visible character (`empty`
  names the fault otherwise; spaces, zero-width and control characters are not visible). A lone
  surrogate ("\\ud800" in JSON) cannot be encoded, and would fail three stages later in the
  tokenizer."""
  text = _expect(value, str, where, column)
  try:
    text.encode("utf-8")  # at C speed: records are many, surrogates rare
  except UnicodeEncodeError as e:
    char = text[e.start]
    raise _field_error(
      where, column, f"lone surrogate U+{ord(char):04X} at character {e.start + 1} (not text)"
    ) from None
  if not any(unicodedata.category(char) not in _INVISIBLE for char in text):
    raise _field_error(where, column, empty)
  return text


def _unknown_fields(row: Mapping[str, Any], known: Iterable[str], where: str) -> None:
  """An error naming the first field the record has that the schema does not, with the closest
  known name (a typo, or another data set's name for it)."""
  known = set(known)
  extra = [k for k, v in row.items() if k not in known and v is not None]
  if extra:
    name = str(extra[0])
    close = ALIASES.get(name.lower()) or next(iter(difflib.get_close_matches(name, SFT_FIELDS, n=1)), None)
    hint = f"; did you mean '{close}'? (or map it with the source's 'fields')" if close else ""
    if name in SFT_FIELDS:  # a canonical name the source's `fields` reads from another column
      hint = " (the source's 'fields' reads this field from another column)"
    raise DataError(
      f"{where}: unknown field '{name}'{hint}; set data.extra_fields='ignore' to pass unknown fields over"
    )


def _turn(turn: Any, where: str, column: str) -> dict[str, str]:
  _expect(turn, dict, where, column)
  extra = sorted(k for k, v in turn.items() if k not in ("role", "content") and v is not None)
  if extra:
    raise _field_error(where, column, f"unexpected keys {extra} (a turn has only 'role' and 'content')")
  for key in ("role", "content"):
    if turn.get(key) is None:
      raise DataError(f"{where}: missing field '{column}.{key}'")
    _expect(turn[key], str, where, f"{column}.{key}")
  if turn["role"] not in ROLES:
    raise _field_error(where, f"{column}.role", f"unknown role '{turn['role']}' (expected one of {ROLES})")
  return {"role": turn["role"], "content": turn["content"]}


def _messages(value: Any, where: str, column: str) -> tuple[dict[str, str], ...]:
  turns = tuple(_turn(t, where, f"{column}[{i}]") for i, t in enumerate(_expect(value, list, where, column)))
  if not turns:
    raise _field_error(where, column, "no turns")
  if turns[-1]["role"] != "assistant":
    raise _field_error(where, column, f"last turn is '{turns[-1]['role']}'; it must be 'assistant' (the response)")
  for k, turn in enumerate(turns):
    _text(turn["content"], where, f"{column}[{k}].content", "empty response" if k == len(turns) - 1 else "empty turn")
  start = 1 if turns[0]["role"] == "system" else 0
  for k in range(start, len(turns)):
    expected = ("user", "assistant")[(k - start) % 2]
    if turns[k]["role"] != expected:
      raise _field_error(
        where,
        f"{column}[{k}].role",
        f"'{turns[k]['role']}' where '{expected}' belongs: a conversation is an optional first 'system' "
        "turn, then 'user' and 'assistant' in turn, ending with 'assistant'",
      )
  return turns


def _prompt_response(row: Mapping[str, Any], fields: Mapping[str, str], where: str) -> tuple[dict[str, str], ...]:
  """The [user, assistant] conversation of a row in prompt/response form."""
  prompt, response = fields.get("prompt", "prompt"), fields.get("response", "response")
  for column, empty in ((prompt, "empty prompt"), (response, "empty response")):
    if row.get(column) is None:
      raise DataError(f"{where}: missing field '{column}' (or '{fields.get('messages', 'messages')}')")
    _text(row[column], where, column, empty)
  return {"role": "user", "content": row[prompt]}, {"role": "assistant", "content": row[response]}


def _meta(value: Any, where: str, column: str) -> dict[str, Any]:
  _expect(value, dict, where, column)
  try:
    json.dumps(value)
  except (TypeError, ValueError) as e:
    raise _field_error(where, column, f"not JSON-serialisable ({e})") from e
  _prerequisites(value.get(PREREQUISITES), where, f"{column}.{PREREQUISITES}")
  if value.get(DISTRACTORS) is not None:
    for k, option in enumerate(_expect(value[DISTRACTORS], list, where, f"{column}.{DISTRACTORS}")):
      _non_empty(option, where, f"{column}.{DISTRACTORS}[{k}]")
  return dict(value)


def _prerequisites(value: Any, where: str, column: str) -> None:
  """`meta.prerequisites`: the one-hop questions a multi-hop prompt composes, which detection
  asks the base model (diagnosis tells missing knowledge from a hard composition with them)."""
  if value is None:
    return
  _expect(value, list, where, column)
  for k, probe in enumerate(value):
    _expect(probe, dict, where, f"{column}[{k}]")
    for key in ("prompt", "response"):
      if probe.get(key) is None:
        raise _field_error(where, f"{column}[{k}]", f"missing key '{key}'")
      _non_empty(probe[key], where, f"{column}[{k}].{key}")


def record_from_mapping(
  row: Mapping[str, Any],
  fields: Mapping[str, str],
  default_dataset: str,
  default_phase: int,
  where: str,
  extra_fields: str = "error",
) -> SFTRecord:
  """Validates one raw row into an `SFTRecord`.

  `fields` maps canonical names (`SFT_FIELDS`) to the row's column names (identity when absent);
  errors name the row's own columns, prefixed by `where` (e.g. "data/train.jsonl:17"). A None
  value counts as absent, since columnar formats fill the columns a row lacks with nulls. A field
  the schema does not know is an error (`extra_fields` "error", with the closest known name) or
  passed over ("ignore"): a misspelt `phase` would otherwise train in phase 1 without a word.
  """
  if not isinstance(row, Mapping):
    raise DataError(f"{where}: expected an object (a mapping of fields), got {type(row).__name__}")
  column = {name: fields.get(name, name) for name in SFT_FIELDS}
  if extra_fields == "error":
    _unknown_fields(row, column.values(), where)
  if row.get(column["id"]) is None:
    raise DataError(f"{where}: missing field '{column['id']}'")
  record_id = _non_empty(row[column["id"]], where, column["id"])
  if row.get(column["messages"]) is not None:
    both = [column[k] for k in ("prompt", "response") if row.get(column[k]) is not None]
    if both:
      raise DataError(f"{where}: field '{column['messages']}' and field '{both[0]}' both given; use one form")
    messages = _messages(row[column["messages"]], where, column["messages"])
  else:
    messages = _prompt_response(row, column, where)
  dataset, phase, meta = (row.get(column[k]) for k in ("dataset", "phase", "meta"))
  if phase is not None and _expect(phase, int, where, column["phase"]) < 1:
    raise _field_error(where, column["phase"], f"must be >= 1, got {phase}")
  return SFTRecord(
    id=record_id,
    messages=messages,
    dataset=default_dataset if dataset is None else _dataset(dataset, where, column["dataset"]),
    phase=default_phase if phase is None else phase,
    meta={} if meta is None else _meta(meta, where, column["meta"]),
    where=where,
  )


def document_from_mapping(
  row: Mapping[str, Any], fields: Mapping[str, str], default_id: str, corpus: str, where: str
) -> CorpusDocument | None:
  """Validates one raw row into a `CorpusDocument`; None for an empty (whitespace) text, which is skipped."""
  if not isinstance(row, Mapping):
    raise DataError(f"{where}: expected an object (a mapping of fields), got {type(row).__name__}")
  text_column, id_column = fields.get("text", "text"), fields.get("id", "id")
  if row.get(text_column) is None:
    raise DataError(f"{where}: missing field '{text_column}'")
  text = _expect(row[text_column], str, where, text_column)
  doc_id = default_id if row.get(id_column) is None else _non_empty(row[id_column], where, id_column)
  return CorpusDocument(id=doc_id, text=text, corpus=corpus) if text.strip() else None
