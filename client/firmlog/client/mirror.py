"""Mirror a log into a directory in the c2sp.org/tlog-tiles layout, verifying everything.

::

    DIR/checkpoint                          the newest checkpoint mirrored (written last)
    DIR/tile/<L>/<N>[.p/<W>]                hash tiles
    DIR/tile/entries/<N>[.p/<W>]            entry bundles

so that DIR can itself be served by any static web server. Nothing is
trusted that was not checked: the checkpoint's signature by the log key;
every level-0 tile against the leaf hashes (RFC 6962) of the entries in its
entry bundle and every higher tile against the roots of the 256-hash tiles
below it (:func:`~firmlog.client.tiles.verify_tile`); the checkpoint's root
against the tiles (:func:`~firmlog.client.tiles.verify_tree_root`); and
consistency (RFC 9162 2.1.4, proof built here from the verified tiles) with
the checkpoint mirrored before, by a
:class:`~firmlog.client.trust.CheckpointTracker` started at it. This module
only fetches, stores and resumes. The checkpoint file is replaced only after
all of that, so a later
run trusts exactly the full tiles the mirrored checkpoint covers and fetches
only what is new; full tiles an interrupted run left behind are re-verified,
not downloaded again. Every file is written atomically.

Entries are not interpreted: any tlog-tiles log can be mirrored.

:func:`verify_mirror` checks a mirror again from its own files alone (no
network): the checkpoint's signature, every entry bundle against its level-0
tile, every tile against the tiles below it, and the checkpoint's root
against the tiles; it lists every file that is missing or wrong.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from firmlog.client.checkpoint import Checkpoint, open_checkpoint
from firmlog.client.errors import (
    ConsistencyProofError,
    FormatError,
    HTTPStatusError,
    SignatureError,
    TileMismatchError,
)
from firmlog.client.keys import Verifier
from firmlog.client.merkle import HASH_SIZE
from firmlog.client.online import LogClient, write_atomic
from firmlog.client.tiles import (
    ENTRY_LEVEL,
    TILE_HEIGHT,
    TILE_WIDTH,
    Tile,
    TileHashReader,
    decode_entry_bundle,
    encode_entry_bundle,
    tile_root,
    verify_tile,
    verify_tree_root,
)
from firmlog.client.trust import CheckpointNote, CheckpointTracker

__all__ = [
    "CHECKPOINT_FILE",
    "MirrorCheck",
    "MirrorProblem",
    "MirrorResult",
    "Progress",
    "mirror_log",
    "verify_mirror",
]

log = logging.getLogger("firmlog.client.mirror")

CHECKPOINT_FILE = "checkpoint"
_FULL_TILE_SIZE = TILE_WIDTH * HASH_SIZE
_WINDOW = 32  # tiles fetched concurrently, and held in memory, at a time

Progress = Callable[[int, int], None]  # (tiles done, tiles to do)
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class MirrorResult:
    checkpoint: Checkpoint  # what DIR/checkpoint now holds
    previous_size: int  # tree size mirrored before this run (0: none)
    fetched: int  # tiles and entry bundles downloaded
    reused: int  # full tiles and bundles of an interrupted run, verified again


class _Mirror:
    def __init__(
        self,
        client: LogClient,
        directory: Path,
        progress: Progress | None,
        parallel: int,
    ) -> None:
        self.client = client
        self.dir = directory
        self.progress = progress
        self.parallel = parallel
        self.fetched = 0
        self.reused = 0
        self.done = 0
        self.total = 0
        self.roots: dict[tuple[int, int], bytes] = {}  # full tiles checked in this run
        self.partial: dict[tuple[int, int], bytes] = {}  # partial tiles at the new size

    # -- files --------------------------------------------------------------

    def path(self, tile: Tile) -> Path:
        return self.dir / tile.path

    def read(self, tile: Tile, size: int | None = None) -> bytes | None:
        """The file of ``tile`` if it exists with the right size."""
        try:
            data = self.path(tile).read_bytes()
        except FileNotFoundError:
            return None
        return data if size is None or len(data) == size else None

    def write(self, tile: Tile, data: bytes) -> None:
        path = self.path(tile)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, data)

    def tick(self) -> None:
        self.done += 1
        if self.progress is not None:
            self.progress(self.done, self.total)

    # -- fetching ---------------------------------------------------------------

    def fetch_hash_tile(self, tile: Tile) -> bytes:
        data = self.client.tile(tile)  # falls back to the full tile when needed
        want = tile.width * HASH_SIZE
        if len(data) < want:
            raise TileMismatchError(
                f"{tile.path} from the log is {len(data)} bytes, expected {want}"
            )
        return data[:want]

    def fetch_entries(self, tile: Tile) -> list[bytes]:
        try:
            data = self.client.get(tile.path)
        except HTTPStatusError as exc:
            if exc.status != 404 or tile.is_full:
                raise
            full = decode_entry_bundle(self.client.get(Tile(ENTRY_LEVEL, tile.index).path))
            if len(full) < tile.width:
                raise TileMismatchError(
                    f"{Tile(ENTRY_LEVEL, tile.index).path} holds {len(full)} entries, "
                    f"expected at least {tile.width}"
                ) from None
            return full[: tile.width]
        return decode_entry_bundle(data, tile.width)

    def windows(self, tiles: list[Tile], fetch: Callable[[Tile], T]) -> Iterator[T]:
        """``fetch(tile)`` for every tile, in order, ``_WINDOW`` at a time in threads."""
        with ThreadPoolExecutor(max_workers=self.parallel) as pool:
            for start in range(0, len(tiles), _WINDOW):
                yield from pool.map(fetch, tiles[start : start + _WINDOW])

    # -- one level at a time ----------------------------------------------------

    def level0(self, tiles: list[Tile]) -> None:

        def get(tile: Tile) -> tuple[list[bytes], bytes, bool]:
            bundle = Tile(ENTRY_LEVEL, tile.index, tile.width)
            full = tile.is_full
            stored_entries = self.read(bundle) if full else None
            stored_tile = self.read(tile, _FULL_TILE_SIZE) if full else None
            if stored_entries is not None and stored_tile is not None:
                try:
                    return decode_entry_bundle(stored_entries, TILE_WIDTH), stored_tile, True
                except ValueError:
                    pass  # a torn or foreign file: fetch it again
            return self.fetch_entries(bundle), self.fetch_hash_tile(tile), False

        for tile, got in zip(tiles, self.windows(tiles, get), strict=True):
            entries, data, reused = got
            try:
                verify_tile(tile, data, entries)
            except TileMismatchError:
                if not reused:
                    raise
                # Left by an interrupted run, and wrong: fetch it again.
                entries, data, reused = (
                    self.fetch_entries(Tile(ENTRY_LEVEL, tile.index)),
                    self.fetch_hash_tile(tile),
                    False,
                )
                verify_tile(tile, data, entries)
            self.keep(tile, data)
            if reused:
                self.reused += 2
            else:
                self.fetched += 2
                self.write(Tile(ENTRY_LEVEL, tile.index, tile.width), encode_entry_bundle(entries))
                self.write(tile, data)
            self.tick()

    def level(self, level: int, tiles: list[Tile]) -> None:

        def get(tile: Tile) -> tuple[bytes, bool]:
            if tile.is_full:
                stored = self.read(tile, _FULL_TILE_SIZE)
                if stored is not None:
                    return stored, True
            return self.fetch_hash_tile(tile), False

        for tile, got in zip(tiles, self.windows(tiles, get), strict=True):
            data, reused = got
            below = [
                self.child_root(level - 1, tile.index * TILE_WIDTH + k) for k in range(tile.width)
            ]
            try:
                verify_tile(tile, data, below)
            except TileMismatchError:
                if not reused:
                    raise
                data, reused = self.fetch_hash_tile(tile), False
                verify_tile(tile, data, below)
            self.keep(tile, data)
            if reused:
                self.reused += 1
            else:
                self.fetched += 1
                self.write(tile, data)
            self.tick()

    def keep(self, tile: Tile, data: bytes) -> None:
        key = (tile.level, tile.index)
        if tile.is_full:
            self.roots[key] = tile_root(data)
        else:
            self.partial[key] = data

    def child_root(self, level: int, index: int) -> bytes:
        """The root of the full tile (level, index): checked in this run or trusted."""
        root = self.roots.get((level, index))
        if root is None:
            tile = Tile(level, index)
            data = self.read(tile, _FULL_TILE_SIZE)
            if data is None:
                raise TileMismatchError(f"{tile.path} is missing from the mirror")
            root = self.roots[(level, index)] = tile_root(data)
        return root

    def local_tiles(self, tiles: Sequence[Tile]) -> list[bytes]:
        """Fetch function over the mirror for proofs at the new size."""
        out = []
        for tile in tiles:
            data = self.partial.get((tile.level, tile.index)) if not tile.is_full else None
            if data is None:
                data = self.read(tile, _FULL_TILE_SIZE if tile.is_full else None)
            if data is None:
                raise TileMismatchError(f"{tile.path} is missing from the mirror")
            out.append(data)
        return out


def _file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return -1


def _level_tiles(level: int, size: int) -> list[Tile]:
    """Every tile of ``level`` in a tree of ``size``, full and partial."""
    count = size >> (TILE_HEIGHT * level)
    return [
        Tile(level, i, min(TILE_WIDTH, count - i * TILE_WIDTH))
        for i in range((count + TILE_WIDTH - 1) // TILE_WIDTH)
    ]


def _to_check(directory: Path, level: int, size: int, trusted_size: int) -> list[Tile]:
    """Tiles of ``level`` at ``size`` except the full ones ``trusted_size`` covers
    that are present (with their entry bundles, at level 0)."""
    trusted_full = (trusted_size >> (TILE_HEIGHT * level)) // TILE_WIDTH
    out = []
    for tile in _level_tiles(level, size):
        if tile.index < trusted_full and _file_size(directory / tile.path) == _FULL_TILE_SIZE:
            bundle = Tile(ENTRY_LEVEL, tile.index)
            if level > 0 or (directory / bundle.path).is_file():
                continue
        out.append(tile)
    return out


def mirror_log(
    client: LogClient,
    log_key: Verifier,
    directory: str | os.PathLike[str],
    *,
    progress: Progress | None = None,
    parallel: int = 4,
) -> MirrorResult:
    """Bring ``directory`` up to the log's latest checkpoint, verifying everything.

    ``log_key`` must have signed the log's checkpoint (and the one mirrored
    before). ``progress(done, total)`` is called after each tile. Raises
    SignatureError/NoteFormatError/CheckpointFormatError (checkpoint),
    TileMismatchError (tiles or entries that do not hash up), SplitViewError
    (the log's checkpoint is not consistent with the one mirrored before;
    ``old_note`` and ``new_note`` hold both, ``proof`` the proof tried),
    ConsistencyProofError (the log went back to a smaller tree),
    TransportError, OSError. On any error the mirrored checkpoint is left as
    it was.
    """
    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    note = client.checkpoint()
    new = open_checkpoint(note, log_key).checkpoint
    mirrored: CheckpointNote | None = None
    previous_note: bytes | None = None
    with contextlib.suppress(FileNotFoundError):
        previous_note = (root / CHECKPOINT_FILE).read_bytes()
    if previous_note is not None:
        mirrored = CheckpointNote(previous_note, open_checkpoint(previous_note, log_key).checkpoint)
    tracker = CheckpointTracker.for_log_key(log_key, mirrored)
    previous_size = 0 if mirrored is None else mirrored.checkpoint.tree_size
    m = _Mirror(client, root, progress, max(1, parallel))
    if mirrored is not None:
        if new.tree_size < previous_size:
            raise ConsistencyProofError(
                f"the log serves a checkpoint of tree size {new.tree_size}, older than the "
                f"mirrored one ({previous_size}): it went back, or this is a stale replica; "
                "nothing changed"
            )
        if new.tree_size == previous_size:
            tracker.update(note, m.local_tiles)  # the same tree, or a split view
            log.info("mirror of %s is up to date at tree size %d", new.origin, new.tree_size)
            return MirrorResult(new, previous_size, 0, 0)

    # Full tiles the mirrored checkpoint covers were verified by the run that
    # wrote it; everything else is checked now, level by level, bottom up.
    work: list[list[Tile]] = []
    level = 0
    while new.tree_size >> (TILE_HEIGHT * level):
        work.append(_to_check(root, level, new.tree_size, previous_size))
        level += 1
    m.total = sum(len(tiles) for tiles in work)
    started = time.monotonic()
    for level, tiles in enumerate(work):
        if level == 0:
            m.level0(tiles)
        else:
            m.level(level, tiles)

    verify_tree_root(new, TileHashReader(new.tree_size, m.local_tiles))
    # Consistency with the mirrored checkpoint, proven from the verified tiles.
    tracker.update(note, m.local_tiles)
    write_atomic(root / CHECKPOINT_FILE, note)
    log.info(
        "mirrored %s from tree size %d to %d: %d files fetched, %d reused, %.1f s",
        new.origin,
        previous_size,
        new.tree_size,
        m.fetched,
        m.reused,
        time.monotonic() - started,
    )
    return MirrorResult(new, previous_size, m.fetched, m.reused)


# -- checking a mirror again ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MirrorProblem:
    path: str  # relative to the mirror: "checkpoint", "tile/0/000", ...
    problem: str  # what is wrong with it


@dataclass(frozen=True, slots=True)
class MirrorCheck:
    """What :func:`verify_mirror` found: nothing is wrong only if ``problems`` is empty."""

    checkpoint: Checkpoint | None  # what DIR/checkpoint holds, if it parses
    tiles: int  # hash tiles that verified
    entry_bundles: int  # entry bundles that verified against their level-0 tile
    problems: tuple[MirrorProblem, ...]


def verify_mirror(directory: str | os.PathLike[str], log_key: Verifier) -> MirrorCheck:
    """Check every file of a mirror written by :func:`mirror_log`, from the files alone.

    The checkpoint must be signed by ``log_key``; each entry bundle must hash
    to its level-0 tile and each tile to the roots of the tiles below it
    (:func:`~firmlog.client.tiles.verify_tile`); the tiles must produce the
    checkpoint's root (:func:`~firmlog.client.tiles.verify_tree_root`). Every
    problem is listed, not only the first; a tile above a bad one is reported
    as unchecked. Raises OSError only for a directory that cannot be read.
    """
    root = Path(directory)
    problems: list[MirrorProblem] = []
    try:
        note = (root / CHECKPOINT_FILE).read_bytes()
    except FileNotFoundError:
        missing = MirrorProblem(CHECKPOINT_FILE, "missing: not a mirror, or its first run failed")
        return MirrorCheck(None, 0, 0, (missing,))
    try:
        checkpoint = open_checkpoint(note, log_key).checkpoint
    except SignatureError as exc:
        problems.append(MirrorProblem(CHECKPOINT_FILE, str(exc)))
        checkpoint = CheckpointNote.parse(note).checkpoint  # parsed: check the tiles still
    except FormatError as exc:
        return MirrorCheck(None, 0, 0, (MirrorProblem(CHECKPOINT_FILE, str(exc)),))

    def read(tile: Tile) -> bytes | None:
        try:
            return (root / tile.path).read_bytes()
        except FileNotFoundError:
            problems.append(MirrorProblem(tile.path, "missing"))
            return None

    size = checkpoint.tree_size
    roots: dict[tuple[int, int], bytes] = {}  # full tiles that verified
    tiles = bundles = 0
    tile_problems = False
    level = 0
    while size >> (TILE_HEIGHT * level):
        for tile in _level_tiles(level, size):
            data = read(tile)
            below: list[bytes] | None = None
            if level == 0:
                bundle = Tile(ENTRY_LEVEL, tile.index, tile.width)
                raw = read(bundle)
                if raw is not None:
                    try:
                        below = decode_entry_bundle(raw, tile.width)
                    except FormatError as exc:
                        problems.append(MirrorProblem(bundle.path, str(exc)))
            else:
                children = [
                    roots.get((level - 1, tile.index * TILE_WIDTH + k)) for k in range(tile.width)
                ]
                if all(c is not None for c in children):
                    below = [c for c in children if c is not None]
                elif data is not None:
                    problems.append(
                        MirrorProblem(tile.path, "not checked: a tile below it is missing or wrong")
                    )
            if data is None or below is None:
                tile_problems = True
                continue
            try:
                verify_tile(tile, data, below)
            except TileMismatchError as exc:
                problems.append(MirrorProblem(tile.path, str(exc)))
                tile_problems = True
                continue
            tiles += 1
            bundles += level == 0
            if tile.is_full:
                roots[(level, tile.index)] = tile_root(data)
        level += 1

    if not tile_problems:

        def local(wanted: Sequence[Tile]) -> list[bytes]:
            return [(root / t.path).read_bytes() for t in wanted]

        try:
            verify_tree_root(checkpoint, TileHashReader(size, local))
        except TileMismatchError as exc:
            problems.append(MirrorProblem(CHECKPOINT_FILE, str(exc)))
    return MirrorCheck(checkpoint, tiles, bundles, tuple(problems))
