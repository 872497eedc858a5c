"""structlog set-up for a service's entry point (never called by library code).

JSON lines when stderr is not a terminal, readable console output when it
is. Keys and firmware bodies are never logged.
"""

from __future__ import annotations

import logging
import sys

import structlog

__all__ = ["LEVELS", "configure_logging", "info_enabled"]

LEVELS = ("debug", "info", "warning", "error")

_info_enabled = True  # as structlog logs everything until it is configured


def info_enabled() -> bool:
    """Whether info lines are logged: a caller on a hot path skips building one that
    the configured level would drop."""
    return _info_enabled


def configure_logging(level: str = "info", json: bool | None = None) -> bool:
    """Configure structlog for the whole process; whether it logs JSON lines."""
    global _info_enabled  # noqa: PLW0603  # the process's one logging configuration
    as_json = (not sys.stderr.isatty()) if json is None else json
    numeric = logging.getLevelNamesMapping()[level.upper()]
    _info_enabled = numeric <= logging.INFO
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer() if as_json else structlog.dev.ConsoleRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        # One write per line: worker processes sharing stderr never mix their lines.
        logger_factory=structlog.WriteLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    # aiohttp's own access log duplicates the services' one line per request.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    return as_json
