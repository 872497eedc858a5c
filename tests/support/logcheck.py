"""Re-verify a whole log over HTTP, the way an independent auditor would.

Fetches the checkpoint, every hash tile and every entry bundle, and checks
them with the client's own rules (firmlog.client.tiles): every tile with
``verify_tile`` (a level-0 tile against the leaf hashes of its entries, a
higher tile against the roots of the full tiles below it) and the tiles
against the checkpoint's root with ``verify_tree_root``. Given the log as
verified before (``previous``), the new checkpoint must also extend it: a
``CheckpointTracker`` started at the old checkpoint proves that from the
fetched tiles. Used after every operation in the server tests.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from aiohttp import ClientSession

from firmlog.client.checkpoint import Checkpoint, open_checkpoint
from firmlog.client.keys import Ed25519Verifier
from firmlog.client.merkle import leaf_hash, root_hash
from firmlog.client.tiles import (
    ENTRY_LEVEL,
    TILE_WIDTH,
    Tile,
    TileHashReader,
    decode_entry_bundle,
    tile_root,
    tiles_for_size,
    verify_tile,
    verify_tree_root,
)
from firmlog.client.trust import CheckpointNote, CheckpointTracker


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


async def verify_whole_log(
    base: str, log_key: Ed25519Verifier, *, previous: VerifiedLog | None = None
) -> VerifiedLog:
    """The log at ``base`` verified from scratch; with ``previous``, also proven
    to extend the log as it was then (SplitViewError otherwise)."""
    trusted = None if previous is None else CheckpointNote(previous.note, previous.checkpoint)
    tracker = CheckpointTracker.for_log_key(log_key, trusted)
    async with ClientSession() as session:
        note = await fetch(session, base, "/checkpoint")
        cp = open_checkpoint(note, log_key).checkpoint
        size = cp.tree_size
        tiles: dict[Tile, bytes] = {}
        for tile in tiles_for_size(size):
            tiles[tile] = await fetch(session, base, tile.path)
        entries: list[bytes] = []
        for n in range((size + TILE_WIDTH - 1) // TILE_WIDTH):
            width = min(TILE_WIDTH, size - n * TILE_WIDTH)
            bundle = Tile(ENTRY_LEVEL, n, width)
            entries += decode_entry_bundle(await fetch(session, base, bundle.path), width)
    assert len(entries) == size

    def served(wanted: Sequence[Tile]) -> list[bytes]:
        return [tiles[t] for t in wanted]

    if previous is not None:
        assert size >= previous.checkpoint.tree_size, (
            f"the log went back from tree size {previous.checkpoint.tree_size} to {size}"
        )
    tracker.update(note, served)  # consistent with previous, proven from the tiles

    for tile, data in tiles.items():
        if tile.level == 0:
            start = tile.index * TILE_WIDTH
            below = entries[start : start + tile.width]
        else:
            below = []
            for k in range(tile.width):
                child = Tile(tile.level - 1, tile.index * TILE_WIDTH + k)
                assert child in tiles, f"{child.path} should be full"
                below.append(tile_root(tiles[child]))
        verify_tile(tile, data, below)

    verify_tree_root(cp, TileHashReader(size, served))
    assert root_hash([leaf_hash(e) for e in entries]) == cp.root_hash
    return VerifiedLog(checkpoint=cp, note=note, entries=entries)
