"""``firmlog-server serve`` start-up: it says "listening on" only once it is, and
every failure to start is one line on stderr, naming the problem and what to do,
with exit status 2 (firmlog.server.cli).

Each case runs the real command as a subprocess (it configures logging for its
whole process), with no FIRMLOG_* settings from the environment. A start that
succeeds is tested with ``--workers 1`` (the app in the command's process) and
``--workers 2`` (the banner once all workers listen, SIGTERM to all of them).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest

from firmlog.client.keys import Ed25519Signer, generate_key
from firmlog.client.merkle import leaf_hash
from firmlog.server.config import DB_FILE, SequencerConfig
from firmlog.server.datadir import CHECKPOINT_FILE, init_data_dir
from firmlog.server.reader import LogReader
from firmlog.server.sequencer import Sequencer
from firmlog.server.storage import open_storage

TIMEOUT_S = 60


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("FIRMLOG_")}


def _command(data_dir: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "firmlog.server.cli", "serve", "--data-dir", str(data_dir), *args]


def serve(data_dir: Path, *args: str, listen: str = "127.0.0.1:0") -> str:
    """Run serve, which must refuse to start; its one line on stderr."""
    result = subprocess.run(
        _command(data_dir, "--listen", listen, *args),
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        check=False,
        env=_env(),
    )
    assert result.returncode == 2, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got:\n{result.stderr}"
    line = lines[0]
    assert line.startswith("firmlog-server: "), line
    assert "; " in line, f"the line must say what to do after '; ': {line}"
    return line


def closed_port() -> int:
    """A loopback port nobody listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


WORKERS = pytest.mark.parametrize("workers", ["1", "2"])


@WORKERS
def test_it_listens_when_it_says_so_and_stops_on_sigterm(tmp_path: Path, workers: str) -> None:
    """Its stderr is not a terminal: it logs JSON, and says where it listens in the
    event "listening", after the event "keys"."""
    data = tmp_path / "data"
    proc = subprocess.Popen(
        _command(data, "--listen", "127.0.0.1:0", "--workers", workers),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
    )
    try:
        assert proc.stderr is not None
        seen = []
        for line in proc.stderr:
            seen.append(json.loads(line))  # every line, the banner too
            if seen[-1]["event"] == "listening":
                break
        else:
            raise AssertionError(f"serve exited without listening:\n{seen}")
        url = seen[-1]["url"]
        assert not url.endswith(":0"), url  # the port it is bound to
        (keys,) = [e for e in seen if e["event"] == "keys"]
        assert keys["log_key"] == (data / "log.pub").read_text().strip()
        assert len(keys["operator_keys"]) == 1
        assert [e["data_dir"] for e in seen if e["event"] == "log created"] == [str(data.resolve())]
        (move,) = [e for e in seen if e["event"] == "operator signer key on this server"]
        assert move["level"] == "warning"
        assert move["message"].startswith("MOVE THE OPERATOR KEY OFFLINE: a new operator signer")

        async def health() -> int:
            async with aiohttp.ClientSession() as s, s.get(f"{url}/healthz") as resp:
                return resp.status

        assert asyncio.run(health()) == 200  # at once: it listened before saying so
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=TIMEOUT_S) == 0
    finally:
        proc.kill()
        proc.wait()


@WORKERS
def test_on_a_terminal_it_says_so_in_plain_lines(tmp_path: Path, workers: str) -> None:
    """Without JSON logging the banner is the lines a person reads, as it always was."""
    data = tmp_path / "data"
    proc = subprocess.Popen(
        _command(data, "--listen", "127.0.0.1:0", "--no-log-json", "--workers", workers),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
    )
    try:
        assert proc.stderr is not None
        seen: list[str] = []
        for line in proc.stderr:
            seen.append(line.rstrip("\n"))
            if line.startswith("listening on"):
                break
        else:
            raise AssertionError(f"serve exited without listening:\n{seen}")
        operator = (data / "operator.pub").read_text().split()
        assert seen[-5:-1] == [
            f"created a new log in {data.resolve()}",
            f"log key:      {(data / 'log.pub').read_text().strip()}",
            *(f"operator key: {vkey}" for vkey in operator),
            seen[-2],
        ], seen
        assert seen[-2].startswith("MOVE THE OPERATOR KEY OFFLINE: a new operator signer key")
        assert re.fullmatch(r"listening on  http://127\.0\.0\.1:[1-9][0-9]*", seen[-1]), seen
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=TIMEOUT_S) == 0
    finally:
        proc.kill()
        proc.wait()


def test_a_port_in_use(tmp_path: Path) -> None:
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        line = serve(tmp_path / "data", listen=f"127.0.0.1:{port}")
    assert f"cannot listen on 127.0.0.1:{port}: the address is already in use; stop" in line


def test_a_data_dir_that_cannot_be_created(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("a regular file\n")
    line = serve(tmp_path / "file" / "data")
    assert f"cannot create the data dir {tmp_path / 'file' / 'data'} (Not a directory)" in line
    assert "; choose another --data-dir" in line


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a directory whatever its mode says")
def test_an_unwritable_data_dir(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    init_data_dir(data_dir, "log.example/fw")
    data_dir.chmod(0o500)
    try:
        line = serve(data_dir)
    finally:
        data_dir.chmod(0o700)
    assert f"the data dir {data_dir} is not writable (Permission denied); make it" in line


def test_postgres_refuses_the_connection(tmp_path: Path) -> None:
    url = f"postgresql://postgres@127.0.0.1:{closed_port()}/firmlog"
    line = serve(tmp_path / "data", "--database", url)
    assert f"cannot connect to PostgreSQL ({url}): " in line
    assert "; start PostgreSQL there, or fix the host and port" in line


def test_a_malformed_database_url_and_no_password_shown(tmp_path: Path) -> None:
    line = serve(tmp_path / "data", "--database", "postgresql://u:s3cret@127.0.0.1:port/db")
    assert "the database URL postgresql://u:***@127.0.0.1:port/db is malformed: " in line
    assert "; write it as postgresql://USER[:PASSWORD]@HOST[:PORT]/DATABASE" in line
    assert "s3cret" not in line


@pytest.mark.postgres
@pytest.mark.parametrize(
    ("user", "database", "problem"),
    [
        ("nosuchrole", "postgres", 'refused the login ({url}): role "nosuchrole" does not exist'),
        ("postgres", "nosuchdb", 'no such database ({url}): database "nosuchdb" does not exist'),
    ],
)
async def test_postgres_refuses_the_login_or_has_no_such_database(
    tmp_path: Path, pg_database: str, user: str, database: str, problem: str
) -> None:
    server = pg_database.split("@", 1)[1].split("/", 1)[0]
    url = f"postgresql://{user}@{server}/{database}"
    line = await asyncio.to_thread(serve, tmp_path / "data", "--database", url)
    assert problem.format(url=url) in line


async def grow(url: str, key: Ed25519Signer, data_dir: Path, count: int) -> None:
    """Make ``key``'s log in ``url`` hold ``count`` entries, as a server on ``data_dir``."""
    data_dir.mkdir(parents=True, exist_ok=True)
    storage = open_storage(url)
    await storage.open()
    try:
        sequencer = Sequencer(
            storage,
            LogReader(storage),
            key,
            SequencerConfig(),
            checkpoint_file=data_dir / CHECKPOINT_FILE,
        )
        await sequencer.initialize()
        task = asyncio.create_task(sequencer.run())
        for i in range(count):
            await sequencer.submit(f"entry {i}".encode(), leaf_hash(f"entry {i}".encode()))
        await sequencer.stop()
        await task
    finally:
        await storage.close()


async def latest_checkpoint(url: str) -> bytes | None:
    storage = open_storage(url)
    await storage.open()
    try:
        return await storage.latest_checkpoint()
    finally:
        await storage.close()


async def test_a_database_that_holds_another_log(
    tmp_path: Path, backend: str, pg_factory: Callable[[], Awaitable[str]]
) -> None:
    url = f"sqlite:///{tmp_path / 'other.db'}" if backend == "sqlite" else await pg_factory()
    await grow(url, generate_key("other.example/log"), tmp_path / "other", 3)
    before = await latest_checkpoint(url)
    line = await asyncio.to_thread(
        serve, tmp_path / "data", "--database", url, "--origin", "mine.example/log"
    )
    assert "the database holds the log 'other.example/log' (key other.example/log+" in line
    assert "not this server's log 'mine.example/log' (key mine.example/log+" in line
    assert await latest_checkpoint(url) == before


async def test_a_lost_database(
    tmp_path: Path, backend: str, pg_factory: Callable[[], Awaitable[str]]
) -> None:
    """The data dir's key signed size 5; the SQLite file is deleted, or the server is
    pointed at an empty PostgreSQL database: it must not start a new tree."""
    data_dir = tmp_path / "data"
    keys = init_data_dir(data_dir, "lost.example/log")
    sqlite_url = f"sqlite:///{(data_dir / DB_FILE).resolve()}"
    url = sqlite_url if backend == "sqlite" else await pg_factory()
    await grow(url, keys.log, data_dir, 5)
    signed = (data_dir / CHECKPOINT_FILE).read_bytes()
    args: tuple[str, ...] = ()
    if backend == "sqlite":
        for f in data_dir.glob(f"{DB_FILE}*"):
            f.unlink()
    else:
        url = await pg_factory()
        args = ("--database", url)
    line = await asyncio.to_thread(serve, data_dir, *args)
    assert "this data dir's log key signed tree size 5 (root " in line
    assert "but the database holds 0 entries: the database was lost or replaced; restore" in line
    assert await latest_checkpoint(url) is None  # nothing was signed
    assert (data_dir / CHECKPOINT_FILE).read_bytes() == signed
