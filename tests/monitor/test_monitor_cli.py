"""``firmlog-monitor run`` as a real process against a real log on loopback."""

from __future__ import annotations

import asyncio
import hashlib
import json
import signal
import socket
import sys
from pathlib import Path
from typing import Any

from aiohttp import ClientSession
from support.harness import LogUnderTest
from support.monitor import grow

from firmlog.client.checkpoint import open_checkpoint
from firmlog.client.cosignature import parse_witness_verifier_key
from firmlog.monitor.datadir import init_data_dir


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def start(
    args: list[str], log_json: str = "--log-json"
) -> tuple[asyncio.subprocess.Process, list[str]]:
    """Start the monitor; return it and its stderr lines up to the one that says it
    listens (the event "listening" when it logs JSON, else "listening on ...")."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "firmlog.monitor.cli",
        "run",
        *args,
        log_json,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stderr is not None
    lines: list[str] = []
    async with asyncio.timeout(30):
        while not lines or not _listening(lines[-1], json_lines=log_json == "--log-json"):
            line = await proc.stderr.readline()
            assert line, f"the monitor exited: {lines}"
            lines.append(line.decode().rstrip("\n"))
    return proc, lines


def _listening(line: str, json_lines: bool) -> bool:
    if not json_lines:
        return line.startswith("listening on")
    return bool(json.loads(line)["event"] == "listening")


def events(lines: list[str], name: str) -> list[dict[str, Any]]:
    """The log events called ``name`` (every line must be JSON)."""
    return [e for e in map(json.loads, lines) if e["event"] == name]


async def stop(proc: asyncio.subprocess.Process) -> int:
    proc.send_signal(signal.SIGTERM)
    async with asyncio.timeout(30):
        assert proc.stderr is not None
        await proc.stderr.read()
        return await proc.wait()


async def test_run_creates_its_key_follows_and_restarts(
    log: LogUnderTest, session: ClientSession, tmp_path: Path
) -> None:
    await grow(log, session, 0, 2)
    data = tmp_path / "monitor"
    port = free_port()
    args = [
        "--data-dir",
        str(data),
        "--log-url",
        log.base,
        "--log-key",
        log.verifier.vkey,
        "--operator-key",
        log.operator.verifier.vkey,
        "--listen",
        f"127.0.0.1:{port}",
        "--name",
        "cli.test/witness",
        "--poll-interval",
        "0.1",
    ]
    proc, lines = await start(args)
    try:
        (created,) = events(lines, "monitor created")
        assert created["data_dir"] == str(data.resolve())
        (keys,) = events(lines, "keys")
        witness = parse_witness_verifier_key(keys["witness_key"])
        (listening,) = events(lines, "listening")
        assert listening["url"] == f"http://127.0.0.1:{port}"
        assert witness.name == "cli.test/witness"
        assert (data / "witness.key").stat().st_mode & 0o777 == 0o600
        health: dict[str, object] = {}

        async def poll() -> None:
            async with session.get(f"http://127.0.0.1:{port}/healthz") as resp:
                health.update(await resp.json())

        for _ in range(200):
            await poll()
            if health["checked_entries"] == 2:
                break
            await asyncio.sleep(0.05)
        assert health["checked_entries"] == 2, health
        assert health["status"] == "ok"
    finally:
        assert await stop(proc) == 0

    proc, lines = await start(args)
    try:
        assert not events(lines, "monitor created"), lines
        assert [e["witness_key"] for e in events(lines, "keys")] == [witness.vkey]
        path = hashlib.sha256(log.log_key.name.encode()).hexdigest()
        async with session.get(f"http://127.0.0.1:{port}/{path}/checkpoint") as resp:
            assert resp.status == 200
            note = await resp.read()
        assert open_checkpoint(note, log.verifier, [witness]).checkpoint.tree_size == 2
    finally:
        assert await stop(proc) == 0


async def test_run_refuses_bad_options(tmp_path: Path) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "firmlog.monitor.cli",
        "run",
        "--data-dir",
        str(tmp_path / "m"),
        "--log-url",
        "ftp://example",
        "--log-key",
        "not a key",
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 2
    assert err.decode().startswith("firmlog-monitor: --log-key: ")


async def test_run_on_a_terminal_says_what_it_listens_on_in_plain_lines(
    log: LogUnderTest, tmp_path: Path
) -> None:
    """Without JSON logging the banner is the lines a person reads, as it always was."""
    data, port = tmp_path / "monitor", free_port()
    args = ["--data-dir", str(data), "--log-url", log.base, "--log-key", log.verifier.vkey]
    args += ["--listen", f"127.0.0.1:{port}", "--name", "plain.test/witness"]
    proc, lines = await start(args, "--no-log-json")
    try:
        vkey = init_data_dir(data).signer.verifier.vkey  # the key it created
        assert lines[-4:] == [
            f"created a new monitor in {data.resolve()}",
            f"witness key:  {vkey}",
            f"watching      {log.log_key.name} at {log.base}",
            f"listening on  http://127.0.0.1:{port}",
        ], lines
    finally:
        assert await stop(proc) == 0


def test_max_backoff_must_be_positive(tmp_path: Path) -> None:
    """--max-backoff bounds the wait between polls of a failing log; zero is refused."""
    from firmlog.client.keys import generate_key
    from firmlog.monitor.cli import main

    vkey = generate_key("log.example/log").verifier.vkey
    argv = ["run", "--data-dir", str(tmp_path / "m"), "--log-url", "http://127.0.0.1:9"]
    argv += ["--log-key", vkey, "--max-backoff", "0"]
    assert main(argv) == 2
