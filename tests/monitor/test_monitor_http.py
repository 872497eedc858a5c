"""The monitor's connections as the internet reaches them: requests that arrive
slowly, in pieces or too large get the answer they would get whole, or a clear
refusal, and change nothing."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import ClientSession
from support.harness import LogUnderTest
from support.monitor import NOWHERE, MonitorUnderTest, checkpoint, grow
from support.rawhttp import exchange, post_head, trickle

from firmlog.service.http import HTTPConfig

pytestmark = pytest.mark.every_event_loop  # support.loops: asyncio's and uvloop

IMPATIENT = HTTPConfig(header_timeout=0.5, body_timeout=0.5, idle_timeout=1.0)
LIMIT = 4096


@pytest.fixture
async def witness(tmp_path: Path, log: LogUnderTest) -> AsyncIterator[MonitorUnderTest]:
    """A witness with short deadlines and a small body limit (it follows nothing)."""
    monitor = MonitorUnderTest(
        tmp_path / "monitor",
        NOWHERE,
        log.verifier,
        [log.operator.verifier],
        http=IMPATIENT,
        max_request_size=LIMIT,
    )
    await monitor.start()
    try:
        yield monitor
    finally:
        await monitor.stop()


def port_of(monitor: MonitorUnderTest) -> int:
    assert monitor.server is not None
    port = monitor.server.port
    assert port is not None
    return port


def add_checkpoint_body(old: int, proof: list[bytes], note: bytes) -> bytes:
    return (
        f"old {old}\n".encode()
        + b"".join(base64.b64encode(h) + b"\n" for h in proof)
        + b"\n"
        + note
    )


async def test_an_add_checkpoint_in_pieces_is_cosigned_as_if_sent_whole(
    log: LogUnderTest, witness: MonitorUnderTest, session: ClientSession
) -> None:
    await grow(log, session, 0, 2)
    body = add_checkpoint_body(0, [], await checkpoint(session, log.base))
    pieces = [body[i : i + 7] for i in range(0, len(body), 7)]
    answer = await exchange(
        port_of(witness), post_head("/add-checkpoint", length=len(body)), *pieces, pause=0.01
    )
    assert answer.status == 200, answer.body
    assert answer.body.startswith("— monitor.test/witness ".encode())
    assert witness.watched.tree_size == 2


async def test_a_request_head_sent_a_byte_at_a_time_gets_408(witness: MonitorUnderTest) -> None:
    request = post_head("/add-checkpoint", length=10) + b"old 0\n\nxxx"
    answer, sent = await trickle(port_of(witness), request)
    assert sent < len(request), "the monitor waited for the whole trickled head"
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert b"HeaderTimeout" in answer


async def test_an_add_checkpoint_body_sent_a_byte_at_a_time_gets_408(
    log: LogUnderTest, witness: MonitorUnderTest, session: ClientSession
) -> None:
    await grow(log, session, 0, 1)
    body = add_checkpoint_body(0, [], await checkpoint(session, log.base))
    head = post_head("/add-checkpoint", length=len(body))
    answer, sent = await trickle(port_of(witness), body, head=head)
    assert sent < len(body), "the monitor waited for the whole trickled body"
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert b"did not arrive within 0.5 s" in answer
    assert witness.watched.tree_size == 0  # nothing cosigned, nothing stored


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
async def test_a_body_over_the_limit_gets_413_however_it_is_framed(
    witness: MonitorUnderTest, framing: str
) -> None:
    body = b"old 0\n\n" + b"x" * LIMIT
    if framing == "content-length":
        parts = [post_head("/add-checkpoint", length=len(body)), body]
    else:
        chunks = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in (body[:2000], body[2000:]))
        parts = [post_head("/add-checkpoint"), chunks + b"0\r\n\r\n"]
    answer = await exchange(port_of(witness), *parts)
    assert answer.status == 413, answer.body
    assert f"the limit is {LIMIT}".encode() in answer.body
    assert witness.watched.tree_size == 0


async def test_gossip_is_read_whole_too(witness: MonitorUnderTest) -> None:
    body = b"x" * (LIMIT + 1)
    answer = await exchange(port_of(witness), post_head("/v1/gossip", length=len(body)), body)
    assert answer.status == 413, answer.body
