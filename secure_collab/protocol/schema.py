"""Declarative bounds for decoded wire values: one ``Field`` per field, checked before anything uses it.

A field says what a value may be (type, integer range, length, allowed values, pattern, element and key
specs); ``Field.check`` raises ``ProtocolError`` naming the field path and what was wrong, quoting at most a
few characters of the offending value. The tables that use these live in ``messages.py``.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

INT64_MIN, INT64_MAX = -(1 << 63), (1 << 63) - 1
MAX_KEY = 64  # characters of any map key
_QUOTE = 40  # characters of an offending value quoted back in a reason


class ProtocolError(ValueError):
    """A message was refused; the text is the reason given to the sender (never a secret)."""


def clean_text(text: object, limit: int = 512) -> str:
    """A string safe to store and echo: control and format characters (newlines, escapes, bidi overrides)
    replaced by '?', at most ``limit`` characters (the rest summarised by its length)."""
    s = text if isinstance(text, str) else repr(text)
    head = "".join("?" if unicodedata.category(c)[0] == "C" else c for c in s[:limit])
    return head if len(s) <= limit else f"{head}... [{len(s) - limit} more characters]"


def _quote(value: Any) -> str:
    return clean_text(repr(value), _QUOTE)


@dataclass(frozen=True)
class Field:
    """What one decoded value may be. ``kind`` is one of: int, bool, str, bytes, float, list, map, any,
    later (checked by another table once the context is known)."""

    kind: str
    lo: int | None = None  # int: inclusive range
    hi: int | None = None
    max_len: int | None = None  # str / bytes / list: length; map: number of keys
    min_len: int = 0
    choices: frozenset[Any] | None = None
    pattern: re.Pattern[str] | None = None  # str: must fullmatch
    item: Field | None = None  # list: every element
    fields: Mapping[str, Field] | None = None  # map: known keys
    exact: bool = True  # map: every known key (but ``optional`` ones) required and no other key allowed
    optional: frozenset[str] = frozenset()
    extra: Field | None = None  # map with exact=False: spec of keys not in ``fields`` (None: refused)

    def check(self, value: Any, path: str) -> None:
        checker = _CHECKS[self.kind]
        checker(self, value, path)


def _int(f: Field, v: Any, path: str) -> None:
    if type(v) is not int:  # bool is an int subclass: refused
        raise ProtocolError(f"{path} must be an integer, got {type(v).__name__}")
    lo = INT64_MIN if f.lo is None else f.lo
    hi = INT64_MAX if f.hi is None else f.hi
    if not lo <= v <= hi:
        raise ProtocolError(f"{path} = {_quote(v)} is outside [{lo}, {hi}]")
    if f.choices is not None and v not in f.choices:
        raise ProtocolError(f"{path} = {v} is not one of {sorted(f.choices)}")


def _bool(f: Field, v: Any, path: str) -> None:
    if type(v) is not bool:
        raise ProtocolError(f"{path} must be a boolean, got {type(v).__name__}")


def _str(f: Field, v: Any, path: str) -> None:
    if type(v) is not str:
        raise ProtocolError(f"{path} must be a string, got {type(v).__name__}")
    _length(f, len(v), path)
    if f.choices is not None and v not in f.choices:
        raise ProtocolError(f"{path} = {_quote(v)} is not one of {sorted(f.choices)}")
    if f.pattern is not None and not f.pattern.fullmatch(v):
        raise ProtocolError(f"{path} = {_quote(v)} is not well-formed")


def _bytes(f: Field, v: Any, path: str) -> None:
    if type(v) is not bytes:
        raise ProtocolError(f"{path} must be bytes, got {type(v).__name__}")
    _length(f, len(v), path)


def _float(f: Field, v: Any, path: str) -> None:
    if type(v) is not float or not math.isfinite(v):
        raise ProtocolError(f"{path} must be a finite float, got {_quote(v)}")


def _list(f: Field, v: Any, path: str) -> None:
    if type(v) is not list:
        raise ProtocolError(f"{path} must be a list, got {type(v).__name__}")
    _length(f, len(v), path)
    assert f.item is not None, "a list field names its element spec"
    for i, x in enumerate(v):
        f.item.check(x, f"{path}[{i}]")


def _map(f: Field, v: Any, path: str) -> None:
    if type(v) is not dict:
        raise ProtocolError(f"{path} must be a map, got {type(v).__name__}")
    _length(f, len(v), path)
    known = f.fields or {}
    missing = sorted(set(known) - set(v) - f.optional) if f.exact else []
    if missing or (f.exact and not set(v) <= set(known)):
        extra = sorted(set(v) - set(known), key=str)
        raise ProtocolError(f"{path} keys differ: missing {missing}, unexpected {_quote(extra)}")
    for key, value in v.items():
        if type(key) is not str or len(key) > MAX_KEY:
            raise ProtocolError(f"{path} has a key that is not a string of at most {MAX_KEY} characters")
        spec = known.get(key, f.extra)
        if spec is None:
            raise ProtocolError(f"{path} has an unexpected key {_quote(key)}")
        spec.check(value, f"{path}.{clean_text(key, _QUOTE)}")


def _any(f: Field, v: Any, path: str) -> None:
    """A scalar or a short list of scalars, each within the generic bounds of ``f`` (no nesting)."""
    if type(v) is list:
        _length(f, len(v), path)
        for i, x in enumerate(v):
            _scalar(f, x, f"{path}[{i}]")
    else:
        _scalar(f, v, path)


def _scalar(f: Field, v: Any, path: str) -> None:
    if v is None or type(v) is bool:
        return
    if type(v) is int:
        _int(Field("int", lo=f.lo, hi=f.hi), v, path)
    elif type(v) is float:
        _float(f, v, path)
    elif type(v) in (str, bytes):
        _length(f, len(v), path)
    else:
        raise ProtocolError(f"{path} has type {type(v).__name__}, not a scalar")


def _length(f: Field, n: int, path: str) -> None:
    if n < f.min_len or (f.max_len is not None and n > f.max_len):
        raise ProtocolError(f"{path} has length {n}, allowed {f.min_len}..{f.max_len}")


def _later(f: Field, v: Any, path: str) -> None:
    """Checked by another table once the context is known (a body, once the message type is)."""


_CHECKS = {"later": _later, "int": _int, "bool": _bool, "str": _str, "bytes": _bytes, "float": _float, "list": _list,
           "map": _map, "any": _any}


# ---- constructors: one line per field in the tables ----------------------------------------------------
def Int(lo: int, hi: int) -> Field:  # noqa: N802 - reads as a type in the tables
    return Field("int", lo=lo, hi=hi)


def Bool() -> Field:  # noqa: N802
    return Field("bool")


def Str(max_len: int, pattern: str | None = None, min_len: int = 0) -> Field:  # noqa: N802
    return Field("str", max_len=max_len, min_len=min_len, pattern=re.compile(pattern) if pattern else None)


def OneOf(*choices: str) -> Field:  # noqa: N802
    return Field("str", max_len=max(len(c) for c in choices), choices=frozenset(choices))


def ListOf(item: Field, max_len: int, min_len: int = 0) -> Field:  # noqa: N802
    return Field("list", item=item, max_len=max_len, min_len=min_len)


def MapOf(fields: Mapping[str, Field], *, optional: tuple[str, ...] = (), extra: Field | None = None,  # noqa: N802
          max_keys: int | None = None) -> Field:
    """Exact keys (but ``optional`` ones) when ``extra`` is None; otherwise every known key is optional and
    any other key follows ``extra``."""
    return Field("map", fields=dict(fields), exact=extra is None, extra=extra, optional=frozenset(optional),
                 max_len=max_keys if max_keys is not None else len(fields))


def Scalar(max_len: int, lo: int = INT64_MIN, hi: int = INT64_MAX) -> Field:  # noqa: N802
    """Any scalar (int within [lo, hi], finite float, bool, None, str/bytes up to max_len) or a list of up
    to max_len of them: for fields of nested headers that this table does not name."""
    return Field("any", lo=lo, hi=hi, max_len=max_len)
