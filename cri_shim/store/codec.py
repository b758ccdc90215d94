"""One JSON form for the runtime's dataclass records, derived from their field types.

Records, CNI cache entries and their parts are dataclasses; JsonRecord gives each to_dict and
from_dict from the fields' annotations, so a field added to a record is stored and read back
without a second list of names to keep in step. What it knows:
- nested dataclasses, `X | None`, lists, `tuple[X, ...]` and fixed tuples, `dict[str, X]`;
- protobuf messages, stored as base64 of their deterministic serialization (a record keeps the
  request's config whole);
- keys are the field names, or their camelCase when the class says JSON_CAMEL (the on-disk form
  of sandbox records and CNI cache entries), or a field's own `metadata={"json": key}`.
Reading ignores keys no field has (a newer writer's), takes a field's default when its key is
absent, and raises KeyError for a missing field that has none: the store reports such a file as
unreadable, as it does a torn one.
"""

from __future__ import annotations

import base64
import dataclasses
import functools
import types
import typing
from typing import Any, ClassVar, TypeVar

from google.protobuf.message import Message

T = TypeVar("T", bound="JsonRecord")


class JsonRecord:
    """Mixin for dataclasses stored as JSON: to_dict and from_dict from the field types."""

    JSON_CAMEL: ClassVar[bool] = False

    def to_dict(self) -> dict[str, Any]:
        return {key: encode(getattr(self, name)) for name, key, _ in _fields(type(self))}

    @classmethod
    def outdated(cls, data: dict[str, Any]) -> bool:
        """Whether data is of an earlier form that from_dict upgrades (the store writes it back)."""
        return False

    @classmethod
    def from_dict(cls: type[T], data: dict[str, Any]) -> T:
        values = {}
        for name, key, hint in _fields(cls):
            if key in data:
                values[name] = _decode(hint, data[key])
        return cls(**values)


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.capitalize() for part in rest)


@functools.cache
def _fields(cls: type) -> tuple[tuple[str, str, Any], ...]:
    """(attribute, JSON key, resolved type) of each field of a dataclass."""
    hints = typing.get_type_hints(cls)
    camel = getattr(cls, "JSON_CAMEL", False)
    return tuple(
        (f.name, f.metadata.get("json", _camel(f.name) if camel else f.name), hints[f.name])
        for f in dataclasses.fields(cls)
    )


def encode(value: Any) -> Any:
    """A value as its JSON form (what to_dict gives for a field holding it)."""
    if isinstance(value, JsonRecord):
        return value.to_dict()
    if isinstance(value, Message):
        return base64.b64encode(value.SerializeToString(deterministic=True)).decode()
    if isinstance(value, (list, tuple)):
        return [encode(v) for v in value]
    if isinstance(value, dict):
        return {k: encode(v) for k, v in value.items()}
    return value


def _decode(hint: Any, value: Any) -> Any:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _decode(inner, value)
    if origin is list:
        return [_decode(args[0], v) for v in value]
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_decode(args[0], v) for v in value)
        return tuple(_decode(a, v) for a, v in zip(args, value, strict=True))
    if origin is dict:
        return {k: _decode(args[1], v) for k, v in value.items()}
    if isinstance(hint, type) and issubclass(hint, JsonRecord):
        return hint.from_dict(value)
    if isinstance(hint, type) and issubclass(hint, Message):
        return hint.FromString(base64.b64decode(value))
    return value
