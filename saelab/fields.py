"""Type checks of values read from files (cfg.json, TOML sweeps) against the dataclass they build, so that a
wrong type is a one-line error naming the file and the field before anything is computed or written."""

import dataclasses
import types
import typing
from typing import Any, Literal, Union


def check_field_types(cls: type, values: dict[str, Any], where: str) -> None:
    """Raise ValueError naming `where` and the field when a value in `values` does not have the type the
    dataclass `cls` declares for it (int: an integer, not a bool or 2.5; float: any real number; str; bool;
    Literal; X | None; tuple and list: a list; dict: a table). Unknown fields are left to the dataclass."""
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        if field.name in values and not _matches(values[field.name], hints[field.name]):
            value = values[field.name]
            raise ValueError(f"{where}: {field.name} must be {_describe(hints[field.name])}, "
                             f"got {value!r} ({type(value).__name__})")


def _matches(value: Any, hint: Any) -> bool:
    origin = typing.get_origin(hint)
    if origin in (Union, types.UnionType):
        return any(_matches(value, arm) for arm in typing.get_args(hint))
    if origin is Literal:
        return value in typing.get_args(hint)
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if origin in (tuple, list) or hint in (tuple, list):
        return isinstance(value, (list, tuple))
    if origin is dict or hint is dict:
        return isinstance(value, dict)
    return True  # a type these files never hold: the dataclass checks it


def _describe(hint: Any) -> str:
    origin = typing.get_origin(hint)
    if origin in (Union, types.UnionType):
        return " or ".join(_describe(arm) for arm in typing.get_args(hint))
    if origin is Literal:
        return "one of " + ", ".join(repr(v) for v in typing.get_args(hint))
    names = {
        int: "an integer",
        float: "a number",
        str: "a string",
        bool: "true or false",
        type(None): "absent",
    }
    if hint in names:
        return names[hint]
    return "a list" if origin in (tuple, list) or hint in (tuple, list) else "a table"
