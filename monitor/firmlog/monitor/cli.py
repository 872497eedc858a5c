"""``firmlog-monitor``: follow a log, witness it, keep evidence.

::

    firmlog-monitor run --data-dir DIR --log-url URL --log-key VKEY [--listen HOST:PORT]
        [--peer URL ...] [--operator-key VKEY ...] [--name NAME] [--poll-interval SECONDS]
        [--gossip-interval SECONDS]
        [--watch-vendor VENDOR --announced FILE ...] [--alert-command CMD]
        [--event-loop uvloop|asyncio]

The first start creates DIR with the monitor's witness key (cosignature/v1)
and prints its verifier key. A failure to start prints one line,
``firmlog-monitor: <problem>``, and exits with status 2. SIGINT and SIGTERM
stop the monitor gracefully. It serves on uvloop where it is installed, else on
asyncio's event loop (``--event-loop`` chooses).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from firmlog.client.errors import KeyFormatError
from firmlog.client.keys import Ed25519Verifier, parse_verifier_key
from firmlog.monitor.app import make_app
from firmlog.monitor.config import ConfigError, MonitorConfig
from firmlog.monitor.datadir import init_data_dir
from firmlog.service.cli import (
    Banner,
    ListenError,
    add_event_loop_option,
    add_logging_options,
    add_version_option,
    bind,
    check_event_loop,
    parse_listen,
    refuse,
    url_of,
)
from firmlog.service.http import EventLoopUnavailable, serve
from firmlog.service.logs import configure_logging

PROGRAM = "firmlog-monitor"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROGRAM, description="Follow a firmlog log, witness it, catch split views."
    )
    add_version_option(p, "firmlog-monitor")
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="run the monitor")
    r.add_argument("--data-dir", type=Path, required=True, help="witness key and state")
    r.add_argument("--log-url", required=True, help="the log's base URL")
    r.add_argument("--log-key", required=True, help="the log's verifier key (name = origin)")
    r.add_argument(
        "--operator-key",
        action="append",
        default=[],
        help="a log operator's verifier key, trusted by the ledger replay to admit vendors",
    )
    r.add_argument("--listen", default="127.0.0.1:8081", help="HOST:PORT (default 127.0.0.1:8081)")
    r.add_argument("--peer", action="append", default=[], help="a peer monitor's URL")
    r.add_argument("--name", help="the witness key's name on first start")
    r.add_argument(
        "--poll-interval",
        type=float,
        default=5.0,
        metavar="SECONDS",
        help="seconds between polls of the log (default %(default)s)",
    )
    r.add_argument(
        "--max-backoff",
        type=float,
        default=300.0,
        metavar="SECONDS",
        help="the longest wait between polls of a log that fails, doubling from the poll "
        "interval (default %(default)s)",
    )
    r.add_argument(
        "--gossip-interval",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="seconds between exchanges of checkpoints with the peers (default %(default)s)",
    )
    r.add_argument(
        "--watch-vendor",
        action="append",
        default=[],
        help="alert on releases of this vendor whose digest is not in its --announced file",
    )
    r.add_argument(
        "--announced",
        action="append",
        default=[],
        type=Path,
        help="the image digests the matching --watch-vendor announced, one hex SHA-256 a line",
    )
    r.add_argument("--alert-command", help="shell command run for each alert, JSON on stdin")
    add_event_loop_option(r)
    add_logging_options(r)
    return p


def _key(value: str, option: str) -> Ed25519Verifier:
    try:
        return parse_verifier_key(value)
    except KeyFormatError as exc:
        raise ConfigError(f"{option}: {exc}") from exc


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    banner = Banner(configure_logging(args.log_level, args.log_json), "firmlog.monitor")
    try:
        check_event_loop(args.event_loop)
        host, port = parse_listen(args.listen)
        if len(args.watch_vendor) != len(args.announced):
            raise ConfigError("give each --watch-vendor VENDOR one --announced FILE")
        config = MonitorConfig(
            data_dir=args.data_dir,
            log_url=args.log_url,
            log_key=_key(args.log_key, "--log-key"),
            operator_keys=tuple(_key(k, "--operator-key") for k in args.operator_key),
            listen_host=host,
            listen_port=port,
            peers=tuple(args.peer),
            poll_interval=args.poll_interval,
            max_backoff=args.max_backoff,
            gossip_interval=args.gossip_interval,
            watch_vendors=tuple(zip(args.watch_vendor, args.announced, strict=True)),
            alert_command=args.alert_command,
        ).validate()
        key = init_data_dir(args.data_dir, args.name)
        app = make_app(config, key.signer)
        sockets = bind(host, port)
    except (ConfigError, ListenError, EventLoopUnavailable) as exc:
        return refuse(PROGRAM, str(exc))
    started = False

    def listening(_line: str) -> None:
        """Called once the app has started and its sockets listen."""
        nonlocal started
        started = True
        data_dir = str(args.data_dir.resolve())
        if key.created:
            banner.say(f"created a new monitor in {data_dir}", "monitor created", data_dir=data_dir)
        vkey = key.signer.verifier.vkey
        banner.say(f"witness key:  {vkey}", "keys", witness_key=vkey)
        banner.say(
            f"watching      {config.origin} at {config.log_url}",
            "watching",
            origin=config.origin,
            log_url=config.log_url,
        )
        url = url_of(host, sockets[0])
        banner.say(f"listening on  {url}", "listening", url=url)

    try:
        serve(
            app,
            config.http,
            name="monitor",
            sock=sockets,
            on_listening=listening,
            event_loop=args.event_loop,
        )
    except ConfigError as exc:
        if started:
            raise
        return refuse(PROGRAM, str(exc))
    except OSError as exc:
        if started:
            raise
        return refuse(PROGRAM, f"cannot start: {exc}; check --listen and --data-dir")
    finally:
        for sock in sockets:
            sock.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
