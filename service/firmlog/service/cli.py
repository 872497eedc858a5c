"""What the services' command lines share: the common options, listening, refusing.

A service that must not start prints one line, ``<program>: <problem>; <what to
do>``, and exits with :data:`EXIT_REFUSED`.
"""

from __future__ import annotations

import argparse
import errno
import os
import socket
import sys
from importlib.metadata import PackageNotFoundError, version

import structlog

from firmlog.service.http import EVENT_LOOPS, EventLoopUnavailable, event_loop_factory
from firmlog.service.logs import LEVELS

__all__ = [
    "EVENT_LOOP_ENV",
    "EXIT_REFUSED",
    "Banner",
    "ListenError",
    "add_event_loop_option",
    "add_logging_options",
    "add_version_option",
    "bind",
    "check_event_loop",
    "parse_listen",
    "refuse",
    "url_of",
]

EXIT_REFUSED = 2
EVENT_LOOP_ENV = "FIRMLOG_EVENT_LOOP"


class ListenError(ValueError):
    """The service cannot listen where it was told to; the message says what to do."""


class Banner:
    """What a service says once it listens (its keys, its address): plain lines on
    stderr for a person at a terminal, or, when it logs JSON, log events, so that
    its stderr stays one JSON object a line."""

    def __init__(self, as_json: bool, logger: str) -> None:
        self.as_json = as_json
        self._log = structlog.get_logger(logger)

    def say(self, line: str, event: str, *, warning: bool = False, **fields: object) -> None:
        """``line`` (or lines) on stderr, or the log event ``event`` with ``fields``."""
        if not self.as_json:
            print(line, file=sys.stderr, flush=True)
        elif warning:
            self._log.warning(event, **fields)
        else:
            self._log.info(event, **fields)


def refuse(program: str, problem: str) -> int:
    """Print why ``program`` does not start; the exit status to return."""
    print(f"{program}: {problem}", file=sys.stderr, flush=True)
    return EXIT_REFUSED


def add_version_option(parser: argparse.ArgumentParser, distribution: str) -> None:
    """``--version``: the program name and the installed version of ``distribution``."""
    try:
        installed = version(distribution)
    except PackageNotFoundError:  # run from a source tree that was never installed
        installed = "unknown"
    parser.add_argument("--version", action="version", version=f"%(prog)s {installed}")


def add_logging_options(parser: argparse.ArgumentParser) -> None:
    """``--log-level`` and ``--log-json``, for :func:`firmlog.service.logs.configure_logging`."""
    parser.add_argument(
        "--log-level", default="info", choices=LEVELS, help="the least level logged (default info)"
    )
    parser.add_argument(
        "--log-json",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="JSON log lines (default: when stderr is not a terminal)",
    )


def add_event_loop_option(parser: argparse.ArgumentParser) -> None:
    """``--event-loop uvloop|asyncio`` (default ``$FIRMLOG_EVENT_LOOP``), for
    :func:`firmlog.service.http.serve`; check the choice with :func:`check_event_loop`
    before starting."""
    parser.add_argument(
        "--event-loop",
        choices=EVENT_LOOPS,
        default=os.environ.get(EVENT_LOOP_ENV) or None,
        help=f"the event loop to serve on (default: ${EVENT_LOOP_ENV}, else uvloop where it is "
        "installed, else asyncio)",
    )


def check_event_loop(event_loop: str | None) -> None:
    """EventLoopUnavailable, saying what to do, if the ``--event-loop`` chosen cannot be
    had here."""
    try:
        event_loop_factory(event_loop)
    except EventLoopUnavailable as exc:
        raise EventLoopUnavailable(f"--event-loop {event_loop}: {exc}") from None


def parse_listen(value: str, option: str = "--listen") -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:PORT`` for IPv6) as a host and a port."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ListenError(f"{option} must be HOST:PORT, got {value!r}")
    return host.strip("[]"), int(port)


def _bind_problem(where: str, exc: OSError) -> str:
    if exc.errno == errno.EADDRINUSE:
        return (
            f"cannot listen on {where}: the address is already in use; stop the program that "
            "listens there or choose another --listen"
        )
    if exc.errno == errno.EACCES:
        return (
            f"cannot listen on {where}: permission denied (ports below 1024 need privileges); "
            "choose another --listen"
        )
    if exc.errno == errno.EADDRNOTAVAIL:
        return (
            f"cannot listen on {where}: the address is not one of this machine's; "
            "choose another --listen"
        )
    return f"cannot listen on {where}: {exc.strerror or exc}; choose another --listen"


def bind(host: str, port: int) -> list[socket.socket]:
    """Sockets bound to every address of ``host:port``, not listening yet.

    Raises ListenError, saying what to do, if one cannot be bound. Binding
    before the service starts lets it refuse at once, in one line.
    """
    where = f"{host}:{port}"
    try:
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ListenError(
            f"cannot listen on {where}: {exc.strerror}; set --listen to an address of this machine"
        ) from exc
    sockets: list[socket.socket] = []
    try:
        for family, kind, proto, _, address in {info[4]: info for info in found}.values():
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as aiohttp would
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
    except OSError as exc:
        for sock in sockets:
            sock.close()
        raise ListenError(_bind_problem(where, exc)) from exc
    return sockets


def url_of(host: str, sock: socket.socket) -> str:
    """The URL of a bound socket (its port, which may have been chosen by the system)."""
    port = sock.getsockname()[1]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
