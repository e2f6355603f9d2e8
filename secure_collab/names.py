"""The one pattern for every name that becomes part of a path or a wire field: session ids, party names and
roster entries (``party-<name>.key_secret``, ``<solver_state>/<session>/``, a message's session and sender).

A name is matched *whole* (``fullmatch``; ``re.match`` with ``$`` lets "a\\n" through). Lower-case ASCII
letters, digits, ``_`` and ``-``, starting with a letter or digit, so no name is ".", "..", hidden, absolute,
holds a separator of any system ("/", "\\"), a control character, a NUL byte or a Unicode look-alike.
"""

from __future__ import annotations

import re

MAX_NAME = 32
NAME_PATTERN = f"[a-z0-9][a-z0-9_-]{{0,{MAX_NAME - 1}}}"
NAME_RULE = f"1-{MAX_NAME} of a-z 0-9 _ -, starting with a letter or digit"
ROLE_NAMES = ("solver", "coordinator")  # names of roles, never a party's

_NAME = re.compile(NAME_PATTERN)


def is_name(value: object) -> bool:
    """Whether ``value`` is a string that matches the name pattern whole."""
    return isinstance(value, str) and _NAME.fullmatch(value) is not None


def shown(value: object) -> str:
    """A refused value for a one-line message: its repr (newlines escaped), cut to 40 characters."""
    text = value if isinstance(value, str) else str(type(value).__name__)
    return repr(text[:40]) + ("…" if len(text) > 40 else "")
