"""Typed config sections: frozen dataclasses built from mappings, with every error naming its field.

Each config section is a frozen dataclass whose defaults are the project's only defaults: the
ml_collections files under `configs/` start from `config_dict(Config())` and override. At
pipeline start `build` turns the (possibly overridden) ConfigDict back into the dataclasses,
checking keys, types and each section's `__post_init__` rules, so a bad field fails as one
`ConfigError` naming it before any work is done. Hand-written rather than a validation library
because it must speak ml_collections (placeholders for optional fields, tuples for lists) and
prefix `__post_init__` errors with the section's path; it is ~100 lines.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, Mapping

import ml_collections
from ml_collections import config_dict as cd


class ConfigError(ValueError):
  """A config field is unknown, of the wrong type, out of range or inconsistent with another."""

  def __init__(self, field: str, message: str):
    self.field, self.message = field, message
    super().__init__(f"config field '{field}': {message}")


def check(condition: bool, field: str, message: str) -> None:
  """Raises ConfigError(field, message) unless `condition`; for `__post_init__` rules."""
  if not condition:
    raise ConfigError(field, message)


def _join(path: str, field: str) -> str:
  return f"{path}.{field}" if path and not field.startswith("[") else f"{path}{field}"


def _convert(kind: Any, value: Any, path: str) -> Any:
  """`value` as an instance of the type hint `kind`; lists become tuples, ints may be floats."""
  origin, args = typing.get_origin(kind), typing.get_args(kind)
  if kind is Any:
    return _free_form(value)
  if origin in (typing.Union, types.UnionType):
    if value is None and type(None) in args:
      return None
    options = [a for a in args if a is not type(None)]
    if len(options) == 1:  # Optional[X]: X's own error, with its field
      return _convert(options[0], value, path)
    errors = []
    for option in options:
      try:
        return _convert(option, value, path)
      except ConfigError as e:
        errors.append(e.message)
    raise ConfigError(path, " or ".join(errors))
  if dataclasses.is_dataclass(kind):
    return build(kind, value, path)
  if origin is tuple or kind is tuple:
    if not isinstance(value, (list, tuple)):
      raise ConfigError(path, f"expected a tuple, got {type(value).__name__} {value!r}")
    if not args:
      return _free_form(tuple(value))
    if len(args) == 2 and args[1] is Ellipsis:
      return tuple(_convert(args[0], v, f"{path}[{i}]") for i, v in enumerate(value))
    if len(args) != len(value):
      raise ConfigError(path, f"expected {len(args)} entries, got {len(value)}")
    return tuple(_convert(a, v, f"{path}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
  if origin is dict or kind is dict:
    if not isinstance(value, Mapping):
      raise ConfigError(path, f"expected a mapping, got {type(value).__name__} {value!r}")
    return {str(k): _free_form(v) for k, v in value.items()}
  if kind is float and isinstance(value, int) and not isinstance(value, bool):
    return float(value)
  if kind in (int, float, str, bool):
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
      raise ConfigError(path, f"expected {kind.__name__}, got {type(value).__name__} {value!r}")
    return value
  raise TypeError(f"{path}: unsupported config type {kind}")


def _free_form(value: Any) -> Any:
  """Free-form values (data sources, mesh rules) as plain dicts and tuples."""
  if isinstance(value, Mapping):
    return {str(k): _free_form(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return tuple(_free_form(v) for v in value)
  return value


def build(cls: type, mapping: Any, path: str = "") -> Any:
  """An instance of dataclass `cls` from `mapping` (a dict or ConfigDict); absent fields keep their
  defaults, and any error is a ConfigError naming the field under `path`."""
  if isinstance(mapping, cls):
    return mapping
  if isinstance(mapping, ml_collections.ConfigDict):
    mapping = mapping.to_dict()
  if not isinstance(mapping, Mapping):
    raise ConfigError(path or cls.__name__, f"expected a section (mapping), got {type(mapping).__name__}")
  hints = typing.get_type_hints(cls)
  fields = {f.name for f in dataclasses.fields(cls) if f.init}
  unknown = sorted(set(mapping) - fields)
  if unknown:
    raise ConfigError(_join(path, unknown[0]), f"unknown field (the section has: {', '.join(sorted(fields))})")
  values = {name: _convert(hints[name], value, _join(path, name)) for name, value in mapping.items()}
  try:
    return cls(**values)
  except ConfigError as e:
    raise ConfigError(_join(path, e.field), e.message) from None
  except TypeError as e:  # a required field without default
    raise ConfigError(path or cls.__name__, str(e)) from None


def config_dict(instance: Any) -> ml_collections.ConfigDict:
  """The ConfigDict of a dataclass instance: nested sections as ConfigDicts, optional fields that
  are None as typed placeholders (so `--config.x=...` can set them), absent optional sections
  left out."""
  out = ml_collections.ConfigDict()
  hints = typing.get_type_hints(type(instance))
  for field in dataclasses.fields(instance):
    value = getattr(instance, field.name)
    if dataclasses.is_dataclass(value):
      out[field.name] = config_dict(value)
    elif value is None:
      inner = [a for a in typing.get_args(hints[field.name]) if a is not type(None)]
      if inner and not dataclasses.is_dataclass(inner[0]):
        out[field.name] = cd.placeholder(typing.get_origin(inner[0]) or inner[0])
    elif isinstance(value, tuple) and any(dataclasses.is_dataclass(v) for v in value):
      out[field.name] = tuple(dataclasses.asdict(v) for v in value)
    else:
      out[field.name] = value
  return out


def known_fields(cls: type, mapping: Any, path: str = "") -> tuple[dict[str, Any], list[str]]:
  """`mapping` (a recorded section of dataclass `cls`) without the fields `cls` no longer has, at
  any depth, and their dotted paths: a run recorded by an older version of the config still reads."""
  fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
  hints = typing.get_type_hints(cls)
  kept, dropped = {}, []
  for name, value in mapping.items():
    if name not in fields:
      dropped.append(_join(path, name))
      continue
    kind = hints[name]
    options = [a for a in typing.get_args(kind) if a is not type(None)] or [kind]
    section = next((o for o in options if dataclasses.is_dataclass(o)), None)
    if section is not None and isinstance(value, Mapping):
      value, deeper = known_fields(section, value, _join(path, name))
      dropped += deeper
    kept[name] = value
  return kept, dropped
