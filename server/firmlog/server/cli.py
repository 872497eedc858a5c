"""``firmlog-server``: run the log.

::

    firmlog-server serve [--data-dir DIR] [--listen HOST:PORT] [--database URL] [--origin NAME]

The first start creates the data directory with fresh log and operator keys
and prints their verifier keys; the default database is SQLite in the data
directory.

Start-up, in order: the data dir and config are read (and created), the
listening sockets are bound, the app starts (the storage opens, and the
sequencer checks that the database holds this log), the sockets listen, and
only then is "listening on" printed. A failure of any step prints one line,
``firmlog-server: <problem>; <what to do>``, and exits with status 2.
SIGINT and SIGTERM stop the server gracefully.
"""

from __future__ import annotations

import argparse
import errno
import socket
import sys
from pathlib import Path

from firmlog.server.app import make_app
from firmlog.server.config import load_config
from firmlog.server.connection import serve
from firmlog.server.datadir import init_data_dir
from firmlog.server.errors import ConfigError, StartupError
from firmlog.server.logs import configure_logging

EXIT_REFUSED = 2


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="firmlog-server", description="The firmlog log server.")
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("serve", help="run the log server")
    s.add_argument(
        "--data-dir",
        type=Path,
        default=Path("firmlog-data"),
        help="keys, config.toml and the SQLite database (default ./firmlog-data)",
    )
    s.add_argument("--listen", help="HOST:PORT to listen on (default 127.0.0.1:8080)")
    s.add_argument(
        "--database", help="sqlite:///PATH or postgresql://... (default: SQLite in the data dir)"
    )
    s.add_argument("--origin", help="the log's origin on first start (default <hostname>/firmlog)")
    s.add_argument(
        "--witness-policy",
        help="tlog-policy file whose witness lines carry URLs: publish checkpoints "
        "only once cosigned by its quorum (also witness_policy in config.toml)",
    )
    s.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    s.add_argument(
        "--log-json",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="JSON log lines (default: when stderr is not a terminal)",
    )
    return p


def _refuse(problem: str) -> int:
    print(f"firmlog-server: {problem}", file=sys.stderr, flush=True)
    return EXIT_REFUSED


def _bind_problem(where: str, exc: OSError) -> str:
    if exc.errno == errno.EADDRINUSE:
        return (
            f"cannot listen on {where}: the address is already in use; stop the program that "
            "listens there (another firmlog-server?) or choose another --listen"
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


def _bind(host: str, port: int) -> list[socket.socket]:
    """Sockets bound to every address of ``host:port``, not listening yet.

    Raises ConfigError, saying what to do, if one cannot be bound.
    """
    where = f"{host}:{port}"
    try:
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ConfigError(
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
        raise ConfigError(_bind_problem(where, exc)) from exc
    return sockets


def _url(host: str, sock: socket.socket) -> str:
    port = sock.getsockname()[1]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    configure_logging(args.log_level, args.log_json)
    try:
        keys = init_data_dir(args.data_dir, args.origin)
        config = load_config(
            args.data_dir,
            listen=args.listen,
            database=args.database,
            witness_policy=args.witness_policy,
            default_origin=keys.log.name,
        )
        if config.origin != keys.log.name:
            raise ConfigError(
                f"config.toml origin {config.origin!r} does not match the log key name "
                f"{keys.log.name!r} in {args.data_dir}"
            )
        app = make_app(config, keys.log, keys.operator)
        sockets = _bind(config.listen_host, config.listen_port)
    except (ConfigError, ValueError, OSError) as exc:
        return _refuse(str(exc))
    started = False

    def listening(_banner: str) -> None:
        """run_app calls this once the app has started and its sockets listen."""
        nonlocal started
        started = True
        if keys.created:
            print(f"created a new log in {args.data_dir.resolve()}", file=sys.stderr)
        print(f"log key:      {keys.log.verifier.vkey}", file=sys.stderr)
        print(f"operator key: {keys.operator.verifier.vkey}", file=sys.stderr)
        print(f"listening on  {_url(config.listen_host, sockets[0])}", file=sys.stderr, flush=True)

    try:
        serve(app, config.http, sock=sockets, on_listening=listening, shutdown_timeout=30)
    except StartupError as exc:  # the config, the database or the log's identity
        if started:
            raise
        return _refuse(str(exc))
    except OSError as exc:
        if started:
            raise
        return _refuse(f"cannot start: {exc}; check the data dir, config.toml and --database")
    finally:
        for sock in sockets:
            sock.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
