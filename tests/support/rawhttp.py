"""Raw HTTP/1.1 over loopback: requests written in pieces, answers read to the end.

For the tests of what a service does with requests that arrive slowly, split,
malformed or too large, which aiohttp's client would never send.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from dataclasses import dataclass


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]  # lowercase names
    body: bytes
    raw: bytes

    def json(self) -> dict[str, object]:
        doc = json.loads(self.body)
        assert isinstance(doc, dict)
        return doc


def parse_answer(raw: bytes) -> Answer:
    head, sep, body = raw.partition(b"\r\n\r\n")
    assert sep, f"no complete HTTP answer: {raw[:300]!r}"
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if "content-length" in headers:
        body = body[: int(headers["content-length"])]
    return Answer(int(lines[0].split()[1]), headers, body, raw)


async def connect(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return reader, writer


async def read_to_end(reader: asyncio.StreamReader, timeout: float = 30) -> bytes:
    """What the server sent until it closed. A server that closes with bytes of ours
    still unread resets the connection: what it answered before that is kept."""
    data = b""
    with contextlib.suppress(ConnectionResetError):
        async with asyncio.timeout(timeout):
            while chunk := await reader.read(65536):
                data += chunk
    return data


async def exchange(port: int, *parts: bytes, pause: float = 0.05) -> Answer:
    """Send ``parts`` as separate TCP writes ``pause`` s apart, read the answer to EOF."""
    reader, writer = await connect(port)
    try:
        with contextlib.suppress(ConnectionError):
            for i, part in enumerate(parts):
                if i:
                    await asyncio.sleep(pause)
                writer.write(part)
                await writer.drain()
        raw = await read_to_end(reader)
    finally:
        writer.close()
    return parse_answer(raw)


def post_head(path: str, *, length: int | None = None, extra: str = "") -> bytes:
    framing = f"Content-Length: {length}" if length is not None else "Transfer-Encoding: chunked"
    return (
        f"POST {path} HTTP/1.1\r\nHost: log\r\nConnection: close\r\n{framing}\r\n{extra}\r\n"
    ).encode()


def chunked(data: bytes, size: int) -> bytes:
    out = b"".join(
        b"%x\r\n%s\r\n" % (len(data[i : i + size]), data[i : i + size])
        for i in range(0, len(data), size)
    )
    return out + b"0\r\n\r\n"


async def trickle(
    port: int, data: bytes, *, interval: float = 0.1, head: bytes = b""
) -> tuple[bytes, int]:
    """Send ``head`` at once, then ``data`` a byte every ``interval`` s until the server
    answers or closes; return its answer and how many bytes of ``data`` were sent."""
    reader, writer = await connect(port)
    sent = 0

    async def feed() -> None:
        nonlocal sent
        writer.write(head)
        await writer.drain()
        for byte in data:
            writer.write(bytes([byte]))
            await writer.drain()
            sent += 1
            await asyncio.sleep(interval)

    feeder = asyncio.create_task(feed())
    try:
        answer = await read_to_end(reader, len(data) * interval + 30)
    finally:
        feeder.cancel()
        with contextlib.suppress(asyncio.CancelledError, ConnectionError):
            await feeder
        writer.close()
    return answer, sent
