"""The config reference: every section and field of `ilp.config.Config` with its type, default and
meaning, read from the dataclasses themselves (`launch.py --describe`, docs/configuration.md).

A field's meaning is the comment on its line in the section's source (or the comment lines right
above it), as in flax's `configs/default.py`: the comment stays next to the code it describes,
and `missing` lists the fields that have none, so a test can require one on every field.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import io
import textwrap
import tokenize
import typing
from typing import Any, Iterator

_MISSING = dataclasses.MISSING


@dataclasses.dataclass(frozen=True)
class Field:
  path: str  # dotted, from the root (`sft.convergence.delta`); list entries as `phases[]`
  kind: str  # the annotation as written
  default: str  # repr of the default ('' for a section)
  comment: str


@dataclasses.dataclass(frozen=True)
class Section:
  path: str  # '' for the root
  doc: str  # the class docstring's first paragraph
  fields: tuple[Field, ...]


def _comments(cls: type) -> dict[str, tuple[str, str]]:
  """name -> (annotation text, comment) for the fields `cls` itself declares."""
  source = textwrap.dedent(inspect.getsource(cls))
  by_line: dict[int, str] = {}
  for token in tokenize.generate_tokens(io.StringIO(source).readline):
    if token.type == tokenize.COMMENT:
      by_line[token.start[0]] = token.string.lstrip("#").strip()
  lines = source.splitlines()
  body = ast.parse(source).body[0].body
  out = {}
  for node in body:
    if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
      continue
    own = [by_line[k] for k in range(node.lineno, node.end_lineno + 1) if k in by_line]
    above, k = [], node.lineno - 1
    while k >= 1 and lines[k - 1].strip().startswith("#"):
      above.insert(0, by_line[k])
      k -= 1
    out[node.target.id] = (ast.get_source_segment(source, node.annotation), " ".join(own or above))
  return out


def _declared(cls: type) -> dict[str, tuple[str, str]]:
  """Every field's annotation and comment, base classes first (a subclass may re-declare)."""
  out: dict[str, tuple[str, str]] = {}
  for base in reversed(cls.__mro__):
    if dataclasses.is_dataclass(base) and "__annotations__" in base.__dict__:
      out.update(_comments(base))
  return out


def _section_type(kind: Any) -> tuple[type | None, bool]:
  """The dataclass a field holds (itself, optional, or as tuple entries) and whether as entries."""
  args = [a for a in typing.get_args(kind) if a is not type(None) and a is not Ellipsis]
  if dataclasses.is_dataclass(kind):
    return kind, False
  if typing.get_origin(kind) is tuple and len(args) == 1 and dataclasses.is_dataclass(args[0]):
    return args[0], True
  if len(args) == 1 and dataclasses.is_dataclass(args[0]):
    return args[0], False
  return None, False


def _doc(cls: type) -> str:
  doc = inspect.getdoc(cls) or ""
  return " ".join(doc.split("\n\n")[0].split())


def _default(f: dataclasses.Field, instance: Any) -> tuple[bool, Any]:
  """Whether the field has a default, and it: the enclosing default's value where there is one
  (the root's `model` differs from `ModelConfig`'s own defaults), else the class's."""
  if instance is not None:
    return True, getattr(instance, f.name)
  if f.default is not _MISSING:
    return True, f.default
  if f.default_factory is not _MISSING:
    return True, f.default_factory()
  return False, None


def sections(cls: type, path: str = "", instance: Any = None) -> Iterator[Section]:
  """`cls`'s section, then each nested section, depth first. `instance`: the section's default
  value where its parent gives one (entries of a tuple and unset optional sections: none)."""
  hints = typing.get_type_hints(cls)
  declared = _declared(cls)
  own, nested = [], []
  for f in dataclasses.fields(cls):
    kind, comment = declared[f.name]
    sub, entries = _section_type(hints[f.name])
    name = f"{path}.{f.name}" if path else f.name
    known, value = _default(f, instance)
    if sub is not None and not entries:
      nested.append((sub, name, value if dataclasses.is_dataclass(value) else None))
      own.append(Field(name, kind, "None (a section when set)" if known and value is None else "(section)", comment))
      continue
    own.append(Field(name, kind, repr(value) if known else "(required)", comment))
    if sub is not None:
      nested.append((sub, f"{name}[]", None))
  yield Section(path, _doc(cls), tuple(own))
  for sub, name, value in nested:
    yield from sections(sub, name, value)


def reference(cls: type) -> Iterator[Section]:
  """Every section of the root `cls` (its defaults: `cls()`), then each intervention's settings
  (an arm's `settings` overrides them)."""
  from ilp.interventions import config as interventions

  yield from sections(cls, "", cls())
  for name in interventions.INTERVENTIONS:
    yield from sections(interventions.module(name).Settings, f"interventions.arms[].settings ({name})")


def missing(cls: type) -> list[str]:
  """The fields without a comment."""
  return [f.path for s in reference(cls) for f in s.fields if not f.comment]


def _cell(text: str) -> str:
  return text.replace("|", "\\|").replace("\n", " ")


def markdown(cls: type) -> str:
  """The reference as Markdown: one table per section."""
  out = [
    "# Configuration reference",
    "",
    "Generated by `python launch.py --describe` from the config dataclasses (`ilp/config.py` and the",
    "section classes it names); a test fails when this file is stale. Override any field on the command",
    "line (`--config.sft.epochs=5`) or in a config file (`configs/`); a bad value is one `ConfigError`",
    "naming the field before any work.",
    "",
  ]
  for section in reference(cls):
    out += [
      f"## `{section.path or 'root'}`",
      "",
      section.doc,
      "",
      "| field | type | default | meaning |",
      "|---|---|---|---|",
    ]
    out += [f"| `{f.path}` | `{_cell(f.kind)}` | `{_cell(f.default)}` | {_cell(f.comment)} |" for f in section.fields]
    out.append("")
  return "\n".join(out)
