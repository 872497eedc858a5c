"""Reading a log over HTTP (c2sp.org/tlog-tiles) with aiohttp: timeouts and size caps.

Every request has one deadline (``timeout`` seconds, connect to last byte) and
a cap on the body. Failures raise the client's
:class:`~firmlog.client.errors.TransportError` (network, deadline, oversized
body) or :class:`~firmlog.client.errors.HTTPStatusError` (an error status):
"retry later", never "the log is wrong".

:meth:`LogFetcher.sync_tiles` bridges to the client's synchronous
:data:`~firmlog.client.tiles.TileFetcher` for code that runs in a worker
thread (the tracker's consistency proof): it schedules the fetch on the
event loop and waits for it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import aiohttp

from firmlog.client.errors import HTTPStatusError, TransportError
from firmlog.client.merkle import HASH_SIZE
from firmlog.client.tiles import ENTRY_LEVEL, TILE_WIDTH, Tile, TileFetcher, decode_entry_bundle

__all__ = ["LogFetcher"]

USER_AGENT = "firmlog-monitor/0.1"
MAX_ERROR_BODY = 4096


class LogFetcher:
    """GETs from the log at ``base_url`` through one aiohttp session."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        base_url: str,
        *,
        timeout: float,
        max_checkpoint_size: int,
        max_bundle_size: int,
    ) -> None:
        self.session = session
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.max_checkpoint_size = max_checkpoint_size
        self.max_bundle_size = max_bundle_size
        self.requests = 0

    async def get(self, path: str, limit: int) -> bytes:
        url = f"{self.base_url}/{path.lstrip('/')}"
        self.requests += 1
        try:
            async with asyncio.timeout(self.timeout):
                async with self.session.get(
                    url, headers={"User-Agent": USER_AGENT}, allow_redirects=False
                ) as resp:
                    if resp.status != 200:
                        text = (await resp.content.read(MAX_ERROR_BODY)).decode("utf-8", "replace")
                        raise HTTPStatusError(url, resp.status, text.strip()[:200])
                    if resp.content_length is not None and resp.content_length > limit:
                        raise TransportError(
                            f"{url}: answer is {resp.content_length} bytes, at most {limit} "
                            "expected"
                        )
                    data = await resp.content.read(limit + 1)
                    while len(data) <= limit:
                        more = await resp.content.read(limit + 1 - len(data))
                        if not more:
                            break
                        data += more
                    if len(data) > limit:
                        raise TransportError(f"{url}: answer is larger than {limit} bytes")
                    return data
        except TimeoutError as exc:
            raise TransportError(f"{url}: no complete answer within {self.timeout} s") from exc
        except aiohttp.ClientError as exc:
            raise TransportError(f"{url}: {type(exc).__name__}: {exc}") from exc

    async def checkpoint(self) -> bytes:
        return await self.get("checkpoint", self.max_checkpoint_size)

    async def tile(self, tile: Tile) -> bytes:
        """A hash tile's bytes at ``tile.width``; a partial tile the log no longer
        serves (it grew full) is read from the full tile and cut."""
        try:
            return await self.get(tile.path, tile.width * HASH_SIZE)
        except HTTPStatusError as exc:
            if exc.status != 404 or tile.is_full:
                raise
        full = await self.get(Tile(tile.level, tile.index).path, TILE_WIDTH * HASH_SIZE)
        return full[: tile.width * HASH_SIZE]

    async def tiles(self, tiles: Sequence[Tile]) -> list[bytes]:
        return list(await asyncio.gather(*(self.tile(t) for t in tiles)))

    async def entries(self, index: int, width: int) -> list[bytes]:
        """The ``width`` first entries of entry bundle ``index``, strictly decoded."""
        bundle = Tile(ENTRY_LEVEL, index, width)
        try:
            data = await self.get(bundle.path, self.max_bundle_size)
            return decode_entry_bundle(data, width)
        except HTTPStatusError as exc:
            if exc.status != 404 or bundle.is_full:
                raise
        data = await self.get(Tile(ENTRY_LEVEL, index).path, self.max_bundle_size)
        return decode_entry_bundle(data, TILE_WIDTH)[:width]

    def sync_tiles(self, loop: asyncio.AbstractEventLoop) -> TileFetcher:
        """A synchronous tile fetch for a worker thread (never call it on the loop)."""

        def fetch(tiles: Sequence[Tile]) -> Sequence[bytes]:
            future = asyncio.run_coroutine_threadsafe(self.tiles(tiles), loop)
            return future.result(self.timeout * 2 + 1)

        return fetch
