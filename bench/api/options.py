"""Options from a suite file or the command line checked against the dataclass they
configure (a method's ``Config``, a preset's ``Budget``): unknown names and wrong types are
one error naming the owner, the option, the expected type and the value, before anything
runs (a string where a number belongs used to fail inside training, once per unit)."""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from typing import Any

from bench.api.errors import BenchError


def _type_name(hint) -> str:
    if hint is type(None):
        return "null"
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(hint))
    if origin is not None:
        return {list: "a list", tuple: "a list", dict: "a mapping"}.get(origin, str(origin))
    return {
        int: "an integer",
        float: "a number",
        str: "a string",
        bool: "true or false",
        list: "a list",
        tuple: "a list",
        dict: "a mapping",
    }.get(hint, getattr(hint, "__name__", str(hint)))


def fits(value, hint) -> bool:
    """Whether a YAML/JSON value can be an option of type `hint` (containers shallowly)."""
    if hint is Any or hint is typing.Any:
        return True
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(fits(value, a) for a in typing.get_args(hint))
    if hint is type(None) or value is None:
        return hint is type(None) and value is None
    base = origin or hint
    if base is bool:
        return isinstance(value, bool)
    if base is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if base is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if base in (list, tuple):
        return isinstance(value, (list, tuple))
    if base is dict:
        return isinstance(value, dict)
    return not isinstance(base, type) or isinstance(value, base)


def check_options(cls: type, values: dict[str, Any], owner: str) -> None:
    """Every key of `values` a field of the dataclass `cls`, of its declared type."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    for key, value in values.items():
        if key not in fields:
            close = difflib.get_close_matches(key, fields, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise BenchError(f"{owner}: unknown option {key!r}{hint} (options: {sorted(fields)})")
        if not fits(value, hints[key]):
            raise BenchError(
                f"{owner}: option {key!r} must be {_type_name(hints[key])}, not {value!r} ({type(value).__name__})"
            )
