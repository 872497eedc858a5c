"""``firmlog-server``: run the log.

::

    firmlog-server serve [--data-dir DIR] [--listen HOST:PORT] [--database URL] [--origin NAME]
        [--operator-key VKEY ...] [--operator-key-out PATH] [--witness-policy FILE]
        [--publish-dir DIR]
        [--workers N] [--event-loop uvloop|asyncio]

The first start creates the data directory with a fresh log key and prints
the log's and the operator's verifier keys; the default database is SQLite in
the data directory. The server holds only the operator's *verifier* keys
(``--operator-key``, config.toml ``operator_keys``, DATA/operator.pub). With
none configured, the first start generates an operator signer key once, into
DATA/operator.key.MOVE-ME-OFFLINE (or ``--operator-key-out``), and says how to
move it off the server; no later start reads it (firmlog.server.datadir).

Start-up, in order: the data dir and config are read (and created), the
listening sockets are bound, the app starts (the storage opens, and the
sequencer checks that the database holds this log), the sockets listen, and
only then is "listening on" printed. A failure of any step prints one line,
``firmlog-server: <problem>; <what to do>``, and exits with status 2.
SIGINT and SIGTERM stop the server gracefully.

With ``--workers N`` (config.toml ``workers``; default one per core) the
sockets are bound once and N worker processes serve them, each starting the
app as above; "listening on" is printed once all of them listen, and a worker
that refuses to start makes the whole command refuse, in one line
(firmlog.server.workers). ``--workers 1`` serves in this one process.

Each process serves on uvloop where it is installed, else on asyncio's event
loop; ``--event-loop asyncio`` chooses asyncio's anyway.
"""

from __future__ import annotations

import argparse
import shlex
import socket
import sys
from collections.abc import Callable
from pathlib import Path

from aiohttp import web

from firmlog.server.app import make_app
from firmlog.server.config import (
    OPERATOR_KEY_FILE,
    OPERATOR_KEY_OFFLINE_FILE,
    ServerConfig,
    load_config,
)
from firmlog.server.datadir import OperatorKeys, init_data_dir, load_operator_keys
from firmlog.server.errors import ConfigError, StartupError
from firmlog.server.workers import Supervisor, WorkerRefused, WorkersRefused
from firmlog.service.cli import (
    Banner,
    ListenError,
    add_event_loop_option,
    add_logging_options,
    add_version_option,
    bind,
    check_event_loop,
    refuse,
    url_of,
)
from firmlog.service.http import serve
from firmlog.service.logs import configure_logging

PROGRAM = "firmlog-server"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROGRAM, description="The firmlog log server.")
    add_version_option(p, "firmlog-server")
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
        "--operator-key",
        action="append",
        default=[],
        metavar="VKEY",
        help="an operator verifier key trusted to admit vendors; repeatable (also "
        "operator_keys in config.toml and DATA/operator.pub; default: none)",
    )
    s.add_argument(
        "--operator-key-out",
        type=Path,
        metavar="PATH",
        help="where a first start with no operator key configured writes the new operator "
        "signer key (default DATA/operator.key.MOVE-ME-OFFLINE)",
    )
    s.add_argument(
        "--witness-policy",
        help="tlog-policy file whose witness lines carry URLs: publish checkpoints "
        "only once cosigned by its quorum (also witness_policy in config.toml)",
    )
    s.add_argument(
        "--publish-dir",
        metavar="DIR",
        help="after each published checkpoint, write it and its tiles and entry bundles "
        "into DIR (tlog-tiles layout) for a static web server or CDN (also publish_dir "
        "in config.toml)",
    )
    s.add_argument(
        "--workers",
        type=_worker_count,
        metavar="N",
        help="server processes sharing the listening port and the database (also workers "
        "in config.toml; default: one per core; 1: serve in this process)",
    )
    add_event_loop_option(s)
    add_logging_options(s)
    return p


def _worker_count(value: str) -> int:
    if not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"expected a number of processes >= 1, got {value!r}")
    return int(value)


def _serve(
    app: web.Application,
    config: ServerConfig,
    sockets: list[socket.socket],
    on_listening: Callable[[], None],
    event_loop: str | None,
) -> str | None:
    """Serve ``app`` until SIGTERM or SIGINT. The problem, in one line, if it does not
    start (the config, the database or the log's identity); errors once it started
    propagate."""
    started = False

    def listening(_banner: str) -> None:
        """run_app calls this once the app has started and its sockets listen."""
        nonlocal started
        started = True
        on_listening()

    try:
        serve(
            app,
            config.http,
            name="log server",
            sock=sockets,
            on_listening=listening,
            shutdown_timeout=30,
            event_loop=event_loop,
        )
    except StartupError as exc:
        if started:
            raise
        return str(exc)
    except OSError as exc:
        if started:
            raise
        return f"cannot start: {exc}; check the data dir, config.toml and --database"
    return None


def _move_offline(path: Path) -> str:
    where = shlex.quote(str(path.resolve()))
    return f"scp -p {where} OFFLINE-HOST:operator.key && shred -u {where}"


def _warn_private_operator_keys(banner: Banner, data_dir: Path, operators: OperatorKeys) -> None:
    """Tell the operator to move an operator signer key off this server.

    The banner comes once, at the start that created (or migrated) the key;
    while a signer key is still in the data dir, every start repeats one line.
    The files are looked at, never read. As log events (warnings), each has the
    line as its ``message`` and the key's ``path``."""
    event = "operator signer key on this server"
    if operators.generated is not None:
        line = (
            f"MOVE THE OPERATOR KEY OFFLINE: a new operator signer key is in "
            f"{operators.generated}; it admits vendors (firmlog vendor admit --operator-key), "
            "this server never reads it again and only needs operator.pub. "
            f"Move it off this server: {_move_offline(operators.generated)}"
        )
        banner.say(line, event, warning=True, message=line, path=str(operators.generated))
    if operators.migrated is not None:
        line = (
            f"MOVE THE OPERATOR KEY OFFLINE: operator.pub was derived from {operators.migrated}, "
            "which this server no longer reads; the operator's signer key does not belong on "
            f"the server. Move it off: {_move_offline(operators.migrated)}"
        )
        banner.say(line, event, warning=True, message=line, path=str(operators.migrated))
    for name in (OPERATOR_KEY_OFFLINE_FILE, OPERATOR_KEY_FILE):
        path = data_dir / name
        if path in (operators.generated, operators.migrated) or not path.exists():
            continue
        line = (
            f"warning: {path} is an operator signer key still on this server (not read); "
            f"move it off: {_move_offline(path)}"
        )
        banner.say(line, event, warning=True, message=line, path=str(path))


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    banner = Banner(configure_logging(args.log_level, args.log_json), "firmlog.server")
    try:
        check_event_loop(args.event_loop)
        keys = init_data_dir(args.data_dir, args.origin)
        config = load_config(
            args.data_dir,
            listen=args.listen,
            database=args.database,
            witness_policy=args.witness_policy,
            publish_dir=args.publish_dir,
            operator_keys=args.operator_key,
            workers=args.workers,
            default_origin=keys.log.name,
        )
        if config.origin != keys.log.name:
            raise ConfigError(
                f"config.toml origin {config.origin!r} does not match the log key name "
                f"{keys.log.name!r} in {args.data_dir}"
            )
        operators = load_operator_keys(
            args.data_dir,
            config.operator_verifiers,
            f"{keys.log.name}/operator",
            args.operator_key_out,
        )
        app = make_app(config, keys.log, operators.verifiers)
        sockets = bind(config.listen_host, config.listen_port)
    except (ConfigError, ListenError, ValueError, OSError) as exc:
        return refuse(PROGRAM, str(exc))

    def listening() -> None:
        """Once the app has started and its sockets listen (in every worker)."""
        data_dir = str(args.data_dir.resolve())
        if keys.created:
            banner.say(f"created a new log in {data_dir}", "log created", data_dir=data_dir)
        log_key, vkeys = keys.log.verifier.vkey, [k.vkey for k in operators.verifiers]
        lines = [f"log key:      {log_key}", *(f"operator key: {v}" for v in vkeys)]
        banner.say("\n".join(lines), "keys", log_key=log_key, operator_keys=vkeys)
        _warn_private_operator_keys(banner, args.data_dir, operators)
        url = url_of(config.listen_host, sockets[0])
        banner.say(f"listening on  {url}", "listening", url=url)

    def worker(ready: Callable[[], None]) -> None:
        """One worker process: a fresh app, started after the fork."""
        worker_app = make_app(config, keys.log, operators.verifiers, host=supervisor.host)
        problem = _serve(worker_app, config, sockets, ready, args.event_loop)
        if problem is not None:
            raise WorkerRefused(problem)

    try:
        if config.worker_count == 1:
            problem = _serve(app, config, sockets, listening, args.event_loop)
            return 0 if problem is None else refuse(PROGRAM, problem)
        supervisor = Supervisor(config.worker_count, worker, on_ready=listening)
        return supervisor.run()
    except WorkersRefused as exc:
        return refuse(PROGRAM, str(exc))
    finally:
        for sock in sockets:
            sock.close()


if __name__ == "__main__":
    sys.exit(main())
