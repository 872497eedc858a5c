"""Re-verify a whole log over HTTP, the way an independent auditor would.

Fetches the checkpoint, every hash tile and every entry bundle, and checks
that level-0 tiles hold the leaf hashes of the entries, that every higher
tile holds the roots of the 256-hash groups below it, and that the tiles
produce the checkpoint's root. Used after every operation in the server tests.
"""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import ClientSession

from firmlog.client.checkpoint import Checkpoint, open_checkpoint
from firmlog.client.keys import Ed25519Verifier
from firmlog.client.merkle import leaf_hash, root_hash, tree_hash
from firmlog.client.tiles import (
    ENTRY_LEVEL,
    TILE_WIDTH,
    Tile,
    TileHashReader,
    decode_entry_bundle,
    tiles_for_size,
)


@dataclass(frozen=True)
class VerifiedLog:
    checkpoint: Checkpoint
    note: bytes
    entries: list[bytes]


async def fetch(session: ClientSession, base: str, path: str) -> bytes:
    async with session.get(f"{base}/{path.lstrip('/')}") as resp:
        body = await resp.read()
        assert resp.status == 200, f"GET {path}: {resp.status} {body[:300]!r}"
        return body


async def verify_whole_log(base: str, log_key: Ed25519Verifier) -> VerifiedLog:
    async with ClientSession() as session:
        note = await fetch(session, base, "/checkpoint")
        cp = open_checkpoint(note, log_key).checkpoint
        size = cp.tree_size
        tiles: dict[Tile, bytes] = {}
        for tile in tiles_for_size(size):
            data = await fetch(session, base, tile.path)
            assert len(data) == tile.width * 32, f"{tile.path}: {len(data)} bytes"
            tiles[tile] = data
        entries: list[bytes] = []
        for n in range((size + TILE_WIDTH - 1) // TILE_WIDTH):
            width = min(TILE_WIDTH, size - n * TILE_WIDTH)
            bundle = Tile(ENTRY_LEVEL, n, width)
            entries += decode_entry_bundle(await fetch(session, base, bundle.path), width)
    assert len(entries) == size

    def hashes(tile: Tile) -> list[bytes]:
        data = tiles[tile]
        return [data[i : i + 32] for i in range(0, len(data), 32)]

    by_key = {(t.level, t.index): t for t in tiles}
    for tile in tiles:
        got = hashes(tile)
        if tile.level == 0:
            start = tile.index * TILE_WIDTH
            want = [leaf_hash(e) for e in entries[start : start + tile.width]]
        else:
            want = []
            for k in range(tile.width):
                child_index = tile.index * TILE_WIDTH + k
                child = by_key[(tile.level - 1, child_index)]
                assert child.width == TILE_WIDTH, f"{child.path} should be full"
                want.append(root_hash(hashes(child)))
        assert got == want, f"{tile.path} does not match the level below"

    reader = TileHashReader(size, lambda ts: [tiles[t] for t in ts])
    assert tree_hash(size, reader) == cp.root_hash, "tiles do not produce the checkpoint root"
    assert root_hash([leaf_hash(e) for e in entries]) == cp.root_hash
    return VerifiedLog(checkpoint=cp, note=note, entries=entries)
