"""A TCP proxy on loopback that cuts what clients send into small segments.

Real networks and proxies deliver a request in as many pieces as they like: a
server that reads "what has arrived" instead of "the whole body" works on
loopback and fails in the field. :class:`SplitProxy` forwards every byte a
client sends to the target in segments of 1..50 bytes (or the sizes a test
gives, cycled) with a pause of a few milliseconds between them, each segment
its own TCP write with Nagle off, so the server sees the request cut at those
points. Answers flow back unchanged. ``split=False`` makes it a plain proxy,
which a test can stop to take the target away (a database going down).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
from collections.abc import Iterator, Sequence


class SplitProxy:
    def __init__(
        self,
        target_host: str,
        target_port: int,
        *,
        sizes: Sequence[int] = (),
        max_delay: float = 0.003,
        split: bool = True,
        seed: int = 0,
    ) -> None:
        """``sizes``: segment sizes, cycled for each connection (default random 1..50)."""
        if any(s < 1 for s in sizes):
            raise ValueError(f"segment sizes must be positive, got {list(sizes)}")
        self.target = (target_host, target_port)
        self.sizes = tuple(sizes)
        self.max_delay = max_delay
        self.split = split
        self._random = random.Random(seed)
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self.segments = 0  # how many segments were forwarded to the target

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)

    async def stop(self) -> None:
        """Stop listening and cut every open connection."""
        if self._server is not None:
            self._server.close()
            self._server = None
        for w in list(self._writers):
            w.transport.abort()
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def __aenter__(self) -> SplitProxy:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _accept(self, c_reader: asyncio.StreamReader, c_writer: asyncio.StreamWriter) -> None:
        try:
            t_reader, t_writer = await asyncio.open_connection(*self.target)
        except OSError:
            c_writer.transport.abort()
            return
        for w in (c_writer, t_writer):
            self._writers.add(w)
            sock = w.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        upstream = asyncio.ensure_future(self._pipe(c_reader, t_writer, cut=self.split))
        downstream = asyncio.ensure_future(self._pipe(t_reader, c_writer, cut=False))
        self._tasks.update((upstream, downstream))
        try:
            await asyncio.gather(upstream, downstream, return_exceptions=True)
        finally:
            for w in (c_writer, t_writer):
                self._writers.discard(w)
                w.transport.abort()
            self._tasks.discard(upstream)
            self._tasks.discard(downstream)

    def _segment_sizes(self) -> Iterator[int]:
        i = 0
        while True:
            if self.sizes:
                yield self.sizes[i % len(self.sizes)]
                i += 1
            else:
                yield self._random.randint(1, 50)

    async def _pipe(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, cut: bool
    ) -> None:
        sizes = self._segment_sizes()
        try:
            while data := await reader.read(65536):
                if not cut:
                    writer.write(data)
                    await writer.drain()
                    continue
                while data:
                    n = next(sizes)
                    segment, data = data[:n], data[n:]
                    writer.write(segment)
                    await writer.drain()
                    self.segments += 1
                    await asyncio.sleep(self._random.uniform(0, self.max_delay))
            if writer.can_write_eof():
                writer.write_eof()
        except (ConnectionError, OSError):
            pass
        finally:
            with contextlib.suppress(Exception):
                await writer.drain()
