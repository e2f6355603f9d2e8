"""Errors a user can fix (a bad file, configuration, model name, port): the CLI prints them in one line."""

from __future__ import annotations


class UserError(Exception):
    """A mistake the user can fix. ``secure-collab`` prints the message alone on stderr and exits with 2
    (``--debug`` adds the traceback); library callers catch it like any exception."""


class ConfigError(UserError, ValueError):
    """The configuration is invalid; the message names the field."""


class UnknownModelError(UserError, ValueError):
    """A model name that is neither a local directory, a built-in name nor (with downloads allowed) a hub id."""


class SessionMismatch(UserError, ValueError):
    """What a role holds (weights, dimensions, templates, state) does not fit the session configuration."""


class StaleStateError(UserError, ValueError):
    """State left by an earlier session with the same id but another configuration."""
