"""``firmlog-server``: run the log.

::

    firmlog-server serve [--data-dir DIR] [--listen HOST:PORT] [--database URL] [--origin NAME]

The first start creates the data directory with fresh log and operator keys
and prints their verifier keys; the default database is SQLite in the data
directory.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from firmlog.server.app import make_app
from firmlog.server.config import ConfigError, load_config
from firmlog.server.connection import serve
from firmlog.server.datadir import init_data_dir
from firmlog.server.logs import configure_logging


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
    s.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    s.add_argument(
        "--log-json",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="JSON log lines (default: when stderr is not a terminal)",
    )
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
            default_origin=keys.log.name,
        )
        if config.origin != keys.log.name:
            raise ConfigError(
                f"config.toml origin {config.origin!r} does not match the log key name "
                f"{keys.log.name!r} in {args.data_dir}"
            )
        app = make_app(config, keys.log, keys.operator)
    except (ConfigError, ValueError, OSError) as exc:
        print(f"firmlog-server: {exc}", file=sys.stderr)
        return 2
    if keys.created:
        print(f"created a new log in {args.data_dir.resolve()}", file=sys.stderr)
    print(f"log key:      {keys.log.verifier.vkey}", file=sys.stderr)
    print(f"operator key: {keys.operator.verifier.vkey}", file=sys.stderr)
    print(f"listening on  http://{config.listen}", file=sys.stderr, flush=True)
    serve(app, config.http, host=config.listen_host, port=config.listen_port, shutdown_timeout=30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
