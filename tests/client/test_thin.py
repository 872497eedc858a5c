"""firmlog-client stays thin: cryptography only, no asyncio, no server code.

A device installs only firmlog-client (DESIGN.md section 1); these checks run
in a fresh interpreter so that nothing the test runner imported can hide a
dependency.
"""

from __future__ import annotations

import pkgutil
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import firmlog.client

REPO = Path(__file__).resolve().parents[2]
FORBIDDEN = ("aiohttp", "asyncpg", "asyncio", "structlog", "firmlog.server", "firmlog.monitor")


def client_modules() -> list[str]:
    return sorted(
        f"firmlog.client.{m.name}"
        for m in pkgutil.iter_modules(firmlog.client.__path__)
        if not m.name.startswith("_")
    )


def test_every_client_module_is_checked() -> None:
    modules = client_modules()
    for name in ("cli", "online", "mirror", "verify", "policy", "tiles", "merkle"):
        assert f"firmlog.client.{name}" in modules


def test_client_modules_load_no_async_or_server_code() -> None:
    modules = ["firmlog.client", *client_modules()]
    script = (
        "import importlib, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        f"bad = sorted(m for m in sys.modules if m.split('.')[0] in {FORBIDDEN!r}\n"
        f"             or any(m == f or m.startswith(f + '.') for f in {FORBIDDEN!r}))\n"
        "assert not bad, bad\n"
        "print(len(sys.modules))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr


def test_the_cli_runs_without_async_code() -> None:
    # Running a command (not just importing) keeps the promise too.
    script = (
        "import sys, runpy\n"
        "sys.argv = ['firmlog', '--help']\n"
        "try:\n"
        "    runpy.run_module('firmlog.client.cli', run_name='__main__')\n"
        "except SystemExit:\n"
        "    pass\n"
        "assert 'asyncio' not in sys.modules and 'aiohttp' not in sys.modules\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr


def test_declared_dependencies_are_exactly_cryptography() -> None:
    project = tomllib.loads((REPO / "client" / "pyproject.toml").read_text())["project"]
    # A PEP 508 requirement starts with the name, up to extras, a version or a marker.
    names = {
        re.split(r"[\s\[<>=!~;@(]", dep, maxsplit=1)[0].lower() for dep in project["dependencies"]
    }
    assert names == {"cryptography"}
    assert not project.get("optional-dependencies")
    assert project["scripts"] == {"firmlog": "firmlog.client.cli:main"}


def test_no_client_source_imports_server_or_monitor() -> None:
    pattern = re.compile(
        r"^\s*(from|import)\s+(firmlog\.(server|monitor)|aiohttp|asyncpg|asyncio)\b", re.M
    )
    for path in sorted((REPO / "client" / "firmlog" / "client").glob("*.py")):
        assert not pattern.search(path.read_text()), path.name
