"""``firmlog-monitor run`` as a real process against a real log on loopback."""

from __future__ import annotations

import asyncio
import hashlib
import signal
import socket
import sys
from pathlib import Path

from aiohttp import ClientSession
from support.harness import LogUnderTest
from support.monitor import grow

from firmlog.client.checkpoint import open_checkpoint
from firmlog.client.cosignature import parse_witness_verifier_key


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def start(args: list[str]) -> tuple[asyncio.subprocess.Process, list[str]]:
    """Start the monitor; return it and its stderr lines up to "listening on"."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "firmlog.monitor.cli",
        "run",
        *args,
        "--log-json",
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stderr is not None
    lines: list[str] = []
    async with asyncio.timeout(30):
        while not lines or not lines[-1].startswith("listening on"):
            line = await proc.stderr.readline()
            assert line, f"the monitor exited: {lines}"
            lines.append(line.decode().rstrip("\n"))
    return proc, lines


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
        assert any(line.startswith("created a new monitor in") for line in lines), lines
        (vkey_line,) = [line for line in lines if line.startswith("witness key:")]
        witness = parse_witness_verifier_key(vkey_line.split()[-1])
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
        assert not any(line.startswith("created") for line in lines), lines
        assert f"witness key:  {witness.vkey}" in lines
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
