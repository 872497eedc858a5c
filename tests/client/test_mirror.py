"""Mirroring a log into a tlog-tiles directory: a real log server, the tessera
vector log served statically, resumption, and every kind of bad data."""

from __future__ import annotations

import asyncio
import json
import shutil
import threading
from collections.abc import Sequence
from pathlib import Path

import pytest
from aiohttp import web
from support.livelog import LiveLog
from vectors import VECTORS

from firmlog.client.checkpoint import open_checkpoint
from firmlog.client.errors import (
    ConsistencyProofError,
    SignatureError,
    SplitViewError,
    TileMismatchError,
    TransportError,
)
from firmlog.client.keys import Ed25519Signer, parse_verifier_key
from firmlog.client.merkle import leaf_hash, root_hash, tree_hash
from firmlog.client.mirror import MirrorResult, mirror_log
from firmlog.client.online import LogClient
from firmlog.client.tiles import Tile, TileHashReader, decode_entry_bundle, encode_entry_bundle

TESSERA_DIR = VECTORS / "tessera-testdata-log"
TESSERA = json.loads((VECTORS / "tessera-testdata-log.json").read_text())
ORIGIN = "test.firmlog.example/log"


class StaticServer:
    """Serve a directory over HTTP on 127.0.0.1 (aiohttp, in a background thread)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_static("/", self.directory)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = self.runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"

    def __enter__(self) -> StaticServer:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(timeout=30)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.runner is not None:
            asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(timeout=30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=30)
        self.loop.close()


class CountingClient(LogClient):
    """A LogClient that records every path it GETs and can fail after ``fail_after``."""

    def __init__(self, base_url: str, fail_after: int | None = None) -> None:
        super().__init__(base_url, timeout=10)
        self.paths: list[str] = []
        self.fail_after = fail_after

    def get(self, path: str) -> bytes:
        if self.fail_after is not None and len(self.paths) >= self.fail_after:
            raise TransportError(f"injected failure before GET {path}")
        self.paths.append(path)
        return super().get(path)


def check_directory(directory: Path, vkey: str) -> list[bytes]:
    """Independently re-verify a mirror from its files; return the entries."""
    note = (directory / "checkpoint").read_bytes()
    cp = open_checkpoint(note, parse_verifier_key(vkey)).checkpoint
    entries: list[bytes] = []
    for n in range((cp.tree_size + 255) // 256):
        width = min(256, cp.tree_size - 256 * n)
        name = f"{n:03d}" if width == 256 else f"{n:03d}.p/{width}"
        entries += decode_entry_bundle((directory / "tile" / "entries" / name).read_bytes(), width)
    assert root_hash([leaf_hash(e) for e in entries]) == cp.root_hash

    def fetch(tiles: Sequence[Tile]) -> list[bytes]:
        return [(directory / t.path).read_bytes() for t in tiles]

    assert tree_hash(cp.tree_size, TileHashReader(cp.tree_size, fetch)) == cp.root_hash
    return entries


def mirror(client: LogClient, vkey: str, directory: Path) -> MirrorResult:
    progress: list[tuple[int, int]] = []
    result = mirror_log(
        client, parse_verifier_key(vkey), directory, progress=lambda d, t: progress.append((d, t))
    )
    if progress:
        assert progress[-1][0] == progress[-1][1]
    return result


# -- a real log ---------------------------------------------------------------------------------


def test_mirror_a_growing_log_fetching_only_what_is_new(live: LiveLog, tmp_path: Path) -> None:
    vkey = live.log_key.verifier.vkey
    out = tmp_path / "mirror"
    first = live.filler(0, 300)
    live.submit_many(first)

    client = CountingClient(live.url)
    result = mirror(client, vkey, out)
    assert result.checkpoint.tree_size == 300
    assert result.previous_size == 0
    assert sorted(client.paths) == sorted(
        [
            "checkpoint",
            "tile/0/000",
            "tile/entries/000",
            "tile/0/001.p/44",
            "tile/entries/001.p/44",
            "tile/1/000.p/1",
        ]
    )
    assert set(check_directory(out, vkey)) == set(first)

    live.submit_many(live.filler(300, 250))  # 550: tile 0/001 is full now
    client = CountingClient(live.url)
    result = mirror(client, vkey, out)
    assert (result.previous_size, result.checkpoint.tree_size) == (300, 550)
    assert "tile/0/000" not in client.paths  # a full tile already verified
    assert "tile/entries/000" not in client.paths
    assert sorted(client.paths) == sorted(
        [
            "checkpoint",
            "tile/0/001",
            "tile/entries/001",
            "tile/0/002.p/38",
            "tile/entries/002.p/38",
            "tile/1/000.p/2",
        ]
    )
    assert len(check_directory(out, vkey)) == 550
    # The old partial tiles stay: they are immutable, and still valid paths.
    assert (out / "tile/0/001.p/44").is_file()

    client = CountingClient(live.url)
    result = mirror(client, vkey, out)
    assert client.paths == ["checkpoint"]
    assert (result.fetched, result.previous_size) == (0, 550)


def test_an_interrupted_mirror_resumes(live: LiveLog, tmp_path: Path) -> None:
    vkey = live.log_key.verifier.vkey
    out = tmp_path / "mirror"
    live.submit_many(live.filler(0, 600))
    # Fail after the checkpoint and the first level-0 tile with its bundle.
    with pytest.raises(TransportError, match="injected"):
        mirror_log(
            CountingClient(live.url, fail_after=3), parse_verifier_key(vkey), out, parallel=1
        )
    assert not (out / "checkpoint").exists()  # nothing is vouched for yet
    assert (out / "tile/0/000").is_file()

    client = CountingClient(live.url)
    result = mirror(client, vkey, out)
    assert result.checkpoint.tree_size == 600
    assert result.reused >= 2  # what the first run left was verified, not fetched again
    assert "tile/0/000" not in client.paths
    assert len(check_directory(out, vkey)) == 600


def test_a_mirror_can_be_served_statically_and_mirrored(live: LiveLog, tmp_path: Path) -> None:
    vkey = live.log_key.verifier.vkey
    live.submit_many(live.filler(0, 20))
    mirror(live.client(), vkey, tmp_path / "one")
    with StaticServer(tmp_path / "one") as static:
        result = mirror(LogClient(static.url), vkey, tmp_path / "two")
    assert result.checkpoint.tree_size == 20
    for path in ("checkpoint", "tile/0/000.p/20", "tile/entries/000.p/20"):
        assert (tmp_path / "one" / path).read_bytes() == (tmp_path / "two" / path).read_bytes()


def test_a_partial_tile_that_is_gone_is_read_from_the_full_tile(
    live: LiveLog, tmp_path: Path
) -> None:
    vkey = live.log_key.verifier.vkey
    out = tmp_path / "mirror"
    live.submit_many(live.filler(0, 10))
    old = mirror(live.client(), vkey, out).checkpoint
    live.submit_many(live.filler(10, 250))
    mirror(live.client(), vkey, out)
    (out / "tile/0/000.p/10").unlink()  # a log may delete partial tiles once full
    with StaticServer(out) as static:
        reader = TileHashReader(10, LogClient(static.url).tiles)
        assert tree_hash(10, reader) == old.root_hash


def test_split_view_is_caught_by_the_mirror(tmp_path: Path) -> None:
    log_key = Ed25519Signer.from_seed(ORIGIN, b"\x61" * 32)
    operator = Ed25519Signer.from_seed("operator.example", b"\x62" * 32)
    out = tmp_path / "mirror"
    vkey = log_key.verifier.vkey
    with (
        LiveLog(tmp_path / "a", log_key, operator) as a,
        LiveLog(tmp_path / "b", log_key, operator) as b,
    ):
        a.submit_many(a.filler(0, 5))
        b.submit_many(b.filler(100, 8))
        mirror(a.client(), vkey, out)
        before = (out / "checkpoint").read_bytes()
        with pytest.raises(SplitViewError) as info:
            mirror(b.client(), vkey, out)
        assert info.value.old_note == before
        assert info.value.new_note == b.client().checkpoint()
        assert (out / "checkpoint").read_bytes() == before  # nothing vouched for changed

        # Same size, different root.
        b2 = tmp_path / "mirror-b"
        mirror(b.client(), vkey, b2)
        a.submit_many(a.filler(200, 3))
        with pytest.raises(SplitViewError, match="both of tree size 8"):
            mirror(a.client(), vkey, b2)


def test_a_log_that_went_back_is_refused(tmp_path: Path) -> None:
    log_key = Ed25519Signer.from_seed(ORIGIN, b"\x71" * 32)
    operator = Ed25519Signer.from_seed("operator.example", b"\x72" * 32)
    out = tmp_path / "mirror"
    with (
        LiveLog(tmp_path / "a", log_key, operator) as ahead,
        LiveLog(tmp_path / "b", log_key, operator) as behind,
    ):
        entries = ahead.filler(0, 4)
        for e in entries:
            ahead.submit(e)
        behind.submit(entries[0])
        mirror(ahead.client(), log_key.verifier.vkey, out)
        with pytest.raises(ConsistencyProofError, match="older than the mirrored one"):
            mirror(behind.client(), log_key.verifier.vkey, out)


def test_the_wrong_log_key_is_refused(live: LiveLog, tmp_path: Path) -> None:
    live.submit_many(live.filler(0, 2))
    other = Ed25519Signer.from_seed(ORIGIN, b"\x09" * 32).verifier.vkey
    with pytest.raises(SignatureError):
        mirror(live.client(), other, tmp_path / "m")
    assert not (tmp_path / "m" / "checkpoint").exists()


# -- the tessera vector log --------------------------------------------------------------------


def test_mirror_the_tessera_vector_log(tmp_path: Path) -> None:
    out = tmp_path / "mirror"
    with StaticServer(TESSERA_DIR) as static:
        result = mirror(LogClient(static.url), TESSERA["vkey"], out)
    assert result.checkpoint.origin == TESSERA["origin"]
    assert result.checkpoint.tree_size == 15
    entries = check_directory(out, TESSERA["vkey"])
    assert entries == [e.encode() for e in TESSERA["entries_in_order"]]
    for path in ("checkpoint", "tile/0/000.p/15", "tile/entries/000.p/15"):
        assert (out / path).read_bytes() == (TESSERA_DIR / path).read_bytes()


def tampered_copy(tmp_path: Path, path: str, offset: int) -> Path:
    copy = tmp_path / "tampered"
    shutil.copytree(TESSERA_DIR, copy)
    target = copy / path
    target.chmod(0o644)
    data = bytearray(target.read_bytes())
    data[offset] ^= 1
    target.write_bytes(bytes(data))
    return copy


@pytest.mark.parametrize(
    ("path", "offset", "message"),
    [
        ("tile/0/000.p/15", 40, "hash 1 is"),  # a level-0 hash
        ("tile/entries/000.p/15", 7, "leaf hash of entry 1"),  # an entry's byte
        ("checkpoint", 30, "invalid signature"),  # the root hash in the signed note
    ],
)
def test_tampered_vector_logs_are_refused(
    tmp_path: Path, path: str, offset: int, message: str
) -> None:
    served = tampered_copy(tmp_path, path, offset)
    out = tmp_path / "mirror"
    with StaticServer(served) as static, pytest.raises((TileMismatchError, SignatureError)) as info:
        mirror(LogClient(static.url), TESSERA["vkey"], out)
    assert message in str(info.value)
    assert not (out / "checkpoint").exists()


def test_tiles_that_do_not_produce_the_root_are_refused(tmp_path: Path) -> None:
    # An entry bundle and a level-0 tile that agree with each other, not with
    # the signed checkpoint.
    copy = tmp_path / "rewritten"
    shutil.copytree(TESSERA_DIR, copy)
    entries = decode_entry_bundle((TESSERA_DIR / "tile/entries/000.p/15").read_bytes(), 15)
    entries[1] = b"TWO"
    for path, data in (
        ("tile/entries/000.p/15", encode_entry_bundle(entries)),
        ("tile/0/000.p/15", b"".join(leaf_hash(e) for e in entries)),
    ):
        (copy / path).chmod(0o644)
        (copy / path).write_bytes(data)
    out = tmp_path / "mirror"
    with StaticServer(copy) as static, pytest.raises(TileMismatchError, match="produce root"):
        mirror(LogClient(static.url), TESSERA["vkey"], out)
    assert not (out / "checkpoint").exists()
