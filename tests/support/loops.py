"""The event loops a service runs on, for tests that must pass on each of them.

``firmlog.service.http.serve`` runs on uvloop where it is installed and on
asyncio's own loop otherwise (or when told ``--event-loop asyncio``), so a
test of the hardened connections runs once on each: a module marked
``pytest.mark.every_event_loop`` is run by pytest-asyncio once per loop of
:data:`LOOP_FACTORIES` (the hook is in tests/conftest.py), its servers on the
test's loop. uvloop missing where it has wheels fails those tests, never
skips them.
"""

from __future__ import annotations

import asyncio
import platform
import sys
from collections.abc import Callable

EVERY_EVENT_LOOP = "every_event_loop"


def _uvloop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError as exc:
        raise RuntimeError(
            "uvloop is a dependency of the server and the monitor on CPython/"
            f"{sys.platform}, and is not installed: run ./scripts/test (uv sync)"
        ) from exc
    return uvloop.new_event_loop()


def uvloop_expected() -> bool:
    """Whether the services' dependencies install uvloop here (their PEP 508 marker)."""
    return sys.platform != "win32" and platform.python_implementation() == "CPython"


LOOP_FACTORIES: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
    "asyncio": asyncio.new_event_loop
}
if uvloop_expected():
    LOOP_FACTORIES["uvloop"] = _uvloop


def running_loop_name() -> str:
    """``uvloop`` or ``asyncio``: the loop this coroutine runs on."""
    return (
        "uvloop"
        if type(asyncio.get_running_loop()).__module__.startswith("uvloop")
        else ("asyncio")
    )
