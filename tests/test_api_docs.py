"""The Python API's documentation runs: docs/api.md and the examples in secure_collab/api.py are doctests."""

from __future__ import annotations

import doctest
from pathlib import Path

import secure_collab.api

ROOT = Path(__file__).resolve().parents[1]
FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


def test_module_examples():
    result = doctest.testmod(secure_collab.api, optionflags=FLAGS)
    assert result.attempted >= 4 and result.failed == 0


def test_docs_api_page():
    result = doctest.testfile(str(ROOT / "docs" / "api.md"), module_relative=False, optionflags=FLAGS)
    assert result.attempted >= 20 and result.failed == 0
