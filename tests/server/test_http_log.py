"""GET /v1/log: who the log is, on SQLite and on PostgreSQL."""

from __future__ import annotations

import socket
from pathlib import Path

from aiohttp import ClientSession
from support.harness import BlackBoxLog, make_log

from firmlog.client.cosignature import generate_witness_key
from firmlog.client.policy import parse_policy


async def test_log_info_names_the_origin_and_keys(
    http_log: BlackBoxLog, session: ClientSession
) -> None:
    log = http_log
    async with session.get(f"{log.base}/v1/log") as resp:
        assert resp.status == 200
        assert resp.content_type == "application/json"
        got = await resp.json()
    assert got == {
        "origin": log.log_key.name,
        "log_key": log.log_key.verifier.vkey,
        "operator_keys": [log.operator.verifier.vkey],
        "witness_policy": None,
    }


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


async def test_log_info_carries_the_witness_policy_text(
    served_by: str, database_url: str, tmp_path: Path, session: ClientSession
) -> None:
    witness = generate_witness_key("w1.witness.example")
    text = (
        "# the witnesses of this log\n"
        f"witness W1 {witness.verifier.vkey} http://127.0.0.1:{_closed_port()}\n"
        "quorum W1\n"
    )
    policy = tmp_path / "witness.policy"
    policy.write_text(text)
    log = make_log(
        served_by, database_url, tmp_path / "log", witness_policy=policy, witness_timeout=0.5
    )
    (tmp_path / "log").mkdir()
    await log.start()
    try:
        async with session.get(f"{log.base}/v1/log") as resp:
            assert resp.status == 200
            got = await resp.json()
    finally:
        await log.stop()
    assert got["origin"] == log.log_key.name
    assert got["log_key"] == log.log_key.verifier.vkey
    assert got["witness_policy"] == text
    assert [w.name for w in parse_policy(got["witness_policy"]).witnesses] == ["W1"]
