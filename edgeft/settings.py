"""Settings declared once (ground floor): a settings dataclass read from a recipe or config mapping, every key checked
against its fields (unknown keys get the close ones) and every value against its field's type, with errors that name
the field (``prune.round_to must be an integer, got '8x'``)."""

from __future__ import annotations

from dataclasses import fields
from typing import Any

from edgeft.errors import ConfigError, close_matches


def section(cls, d: Any, where: str):
    """A dataclass section from a mapping: unknown keys with close matches, types checked per field."""
    if d is None:
        d = {}
    if not isinstance(d, dict):
        raise ConfigError(f"{where} must be a mapping of option: value, got {type(d).__name__}")
    known = {f.name: f for f in fields(cls)}
    for key in d:
        if key not in known:
            raise ConfigError(f"unknown field {where}.{key}{close_matches(str(key), known)}")
    values = {}
    for name, value in d.items():
        default = known[name].default
        if known[name].type in ("float", "float | None") and isinstance(value, (int, str)) and not isinstance(value, bool):
            try:
                value = float(value)
            except ValueError:
                raise ConfigError(f"{where}.{name} must be a number, got {value!r}") from None
        elif isinstance(default, bool) and not isinstance(value, bool):
            raise ConfigError(f"{where}.{name} must be true or false, got {value!r}")
        elif ((isinstance(default, int) and not isinstance(default, bool)) or known[name].type == "int | None") and \
                value is not None and (not isinstance(value, int) or isinstance(value, bool)):
            raise ConfigError(f"{where}.{name} must be an integer, got {value!r}")
        values[name] = value
    return cls(**values)
