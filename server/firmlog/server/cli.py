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
import sys
from pathlib import Path

from firmlog.server.app import make_app
from firmlog.server.config import load_config
from firmlog.server.datadir import init_data_dir
from firmlog.server.errors import ConfigError, StartupError
from firmlog.service.cli import (
    ListenError,
    add_logging_options,
    add_version_option,
    bind,
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
        "--witness-policy",
        help="tlog-policy file whose witness lines carry URLs: publish checkpoints "
        "only once cosigned by its quorum (also witness_policy in config.toml)",
    )
    add_logging_options(s)
    return p


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
        sockets = bind(config.listen_host, config.listen_port)
    except (ConfigError, ListenError, ValueError, OSError) as exc:
        return refuse(PROGRAM, str(exc))
    started = False

    def listening(_banner: str) -> None:
        """run_app calls this once the app has started and its sockets listen."""
        nonlocal started
        started = True
        if keys.created:
            print(f"created a new log in {args.data_dir.resolve()}", file=sys.stderr)
        print(f"log key:      {keys.log.verifier.vkey}", file=sys.stderr)
        print(f"operator key: {keys.operator.verifier.vkey}", file=sys.stderr)
        print(
            f"listening on  {url_of(config.listen_host, sockets[0])}", file=sys.stderr, flush=True
        )

    try:
        serve(
            app,
            config.http,
            name="log server",
            sock=sockets,
            on_listening=listening,
            shutdown_timeout=30,
        )
    except StartupError as exc:  # the config, the database or the log's identity
        if started:
            raise
        return refuse(PROGRAM, str(exc))
    except OSError as exc:
        if started:
            raise
        return refuse(
            PROGRAM, f"cannot start: {exc}; check the data dir, config.toml and --database"
        )
    finally:
        for sock in sockets:
            sock.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
