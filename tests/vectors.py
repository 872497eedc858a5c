"""The public test vectors, carried in tests/data/vectors (sources and licences
in its README), or $FIRMLOG_VECTORS.

A module of its own, so test files import it by a name no conftest shares.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
VECTORS = Path(os.environ.get("FIRMLOG_VECTORS", REPO / "tests" / "data" / "vectors"))


def load_vector(name: str) -> Any:
    """Load one JSON vector file by name (fails the test when missing)."""
    path = VECTORS / name
    if not path.is_file():
        pytest.fail(f"public test vector {path} not found (set FIRMLOG_VECTORS)")
    return json.loads(path.read_text(encoding="utf-8"))
