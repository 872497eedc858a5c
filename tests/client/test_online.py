"""Online extras against a real log server on loopback: fetching, consistency
proofs built from tiles, split-view evidence, transport errors, atomic state.

The server is the real aiohttp app on 127.0.0.1, run on an event loop in a
background thread so that the synchronous client (urllib) can talk to it
(support.livelog.LiveLog; the ``live`` fixture is in tests/client/conftest.py).
"""

from __future__ import annotations

import base64
import json
import os
import socket
import stat
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from support.entries import VENDOR_KEY, release
from support.livelog import LiveLog

from firmlog.client.bundle import ProofBundle
from firmlog.client.checkpoint import Checkpoint, open_checkpoint
from firmlog.client.entries import (
    Revocation,
    parse_entry,
    sign_entry,
)
from firmlog.client.errors import (
    HTTPStatusError,
    SplitViewError,
    StateFormatError,
    TransportError,
    UpdateRefused,
)
from firmlog.client.keys import Ed25519Signer
from firmlog.client.merkle import leaf_hash
from firmlog.client.note import split_note
from firmlog.client.online import (
    LogClient,
    check_consistency,
    check_not_revoked,
    fetch_bundle,
    load_state,
    refresh_checkpoint,
    save_state,
    write_atomic,
)
from firmlog.client.tiles import Tile
from firmlog.client.verify import DeviceState, PinnedVendorKeys, VerifiedUpdate, verify_update

REPO = Path(__file__).resolve().parents[2]
ORIGIN = "test.firmlog.example/log"


def release_entry(image: bytes, **kwargs: Any) -> bytes:
    """A release signed by the vendor's key (admitted with LiveLog.admit_vendor)."""
    return sign_entry(release(image=image, **kwargs), [VENDOR_KEY])


def note_of(bundle: bytes) -> bytes:
    return ProofBundle.parse(bundle).checkpoint


def size_of(note: bytes) -> int:
    return Checkpoint.parse(split_note(note)[0]).tree_size


# -- fetching ------------------------------------------------------------------------


def test_fetch_checkpoint_and_bundles_by_index_and_leaf_hash(live: LiveLog) -> None:
    image = b"firmware image" * 100
    live.submit_many(live.filler(0, 2))
    live.admit_vendor()
    entry = release_entry(image)
    submitted = live.submit(entry)
    client = live.client()

    note = client.checkpoint()
    assert open_checkpoint(note, live.log_key.verifier).checkpoint.tree_size == 4
    by_index = client.bundle(3)
    by_hash = client.bundle(leaf_hash(entry))
    by_hex = client.bundle(leaf_hash(entry).hex())
    assert by_index == by_hash == by_hex == submitted
    update = verify_update(
        image,
        by_hash,
        live.policy(),
        PinnedVendorKeys((VENDOR_KEY.verifier,)),
        DeviceState("router-9000"),
    )
    assert update.leaf_index == 3
    assert update.entry.raw == entry


def test_bundle_at_a_pinned_tree_size(live: LiveLog) -> None:
    entries = live.filler(0, 3)
    for e in entries:
        live.submit(e)
    live.submit_many(live.filler(3, 4))
    bundle = ProofBundle.parse(live.client().bundle(1, tree_size=3))
    assert size_of(bundle.checkpoint) == 3
    assert bundle.extra == entries[1]


def test_client_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="http"):
        LogClient("file:///etc/passwd")
    with pytest.raises(ValueError, match="timeout"):
        LogClient("http://127.0.0.1:1", timeout=0)
    client = LogClient("http://127.0.0.1:1/")
    assert client.base_url == "http://127.0.0.1:1"
    for bad in (-1, b"short", "not hex", True):
        with pytest.raises((ValueError, TypeError)):
            client.bundle(bad)


# -- transport errors ------------------------------------------------------------------


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def test_an_unreachable_log_is_a_transport_error() -> None:
    client = LogClient(f"http://127.0.0.1:{_closed_port()}", timeout=2)
    with pytest.raises(TransportError) as info:
        client.checkpoint()
    assert not isinstance(info.value, HTTPStatusError)
    assert "127.0.0.1" in str(info.value)


def test_a_log_that_never_answers_times_out() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        client = LogClient(f"http://127.0.0.1:{port}", timeout=0.3)
        started = time.monotonic()
        with pytest.raises(TransportError, match="timed out"):
            client.checkpoint()
        assert time.monotonic() - started < 5


def test_http_errors_carry_the_servers_message(live: LiveLog) -> None:
    client = live.client()
    missing = "ab" * 32
    with pytest.raises(HTTPStatusError) as info:
        client.bundle(missing)
    assert info.value.status == 404
    assert f"no entry with id or leaf hash {missing}" in info.value.message
    assert "HTTP 404" in str(info.value)

    with pytest.raises(HTTPStatusError) as info:
        client.submit(b"not an entry")
    assert 400 <= info.value.status < 500
    assert "signed note" in info.value.message

    unsigned = sign_entry(release(image=b"x"), [VENDOR_KEY])  # the operator did not sign
    with pytest.raises(HTTPStatusError) as info:
        client.submit(unsigned)
    assert info.value.status == 403


# -- consistency from tiles ------------------------------------------------------------------


class RecordingFetch:
    """A tile fetch function that remembers the paths it asked for."""

    def __init__(self, client: LogClient) -> None:
        self.client = client
        self.paths: list[str] = []

    def __call__(self, tiles: Sequence[Tile]) -> list[bytes]:
        self.paths += [t.path for t in tiles]
        return self.client.tiles(tiles)


def test_consistency_proof_is_built_from_tiles(live: LiveLog) -> None:
    live.submit_many(live.filler(0, 3))
    old = live.client().checkpoint()
    assert size_of(old) == 3
    live.submit_many(live.filler(3, 300))  # crosses a tile boundary
    new = live.client().checkpoint()
    assert size_of(new) == 303

    fetch = RecordingFetch(live.client())
    proof = check_consistency(old, new, fetch)
    assert fetch.paths  # from tiles...
    assert all(p.startswith("tile/") for p in fetch.paths)  # ...and nothing else
    # It is the proof the server would have given (which the client never asks for).
    with urllib.request.urlopen(f"{live.url}/v1/proof/consistency?old=3&new=303") as resp:
        served = [base64.b64decode(h) for h in json.load(resp)["hashes"]]
    assert list(proof) == served
    # Either order, and equal checkpoints.
    assert check_consistency(new, old, fetch) == proof
    assert check_consistency(new, new, fetch) == ()


def test_refresh_checkpoint_moves_forward_only(live: LiveLog) -> None:
    client, policy = live.client(), live.policy()
    live.submit_many(live.filler(0, 2))
    first = refresh_checkpoint(client, policy, None)
    assert size_of(first) == 2
    live.submit_many(live.filler(2, 5))
    second = refresh_checkpoint(client, policy, first)
    assert size_of(second) == 7
    assert refresh_checkpoint(client, policy, second) == second


def test_refresh_checkpoint_keeps_a_newer_stored_checkpoint(tmp_path: Path) -> None:
    # A stale replica: same log key and entries, behind the device.
    log_key = Ed25519Signer.from_seed(ORIGIN, b"\x41" * 32)
    operator = Ed25519Signer.from_seed("operator.example", b"\x42" * 32)
    with (
        LiveLog(tmp_path / "a", log_key, operator) as ahead,
        LiveLog(tmp_path / "b", log_key, operator) as behind,
    ):
        entries = ahead.filler(0, 6)
        for e in entries:
            ahead.submit(e)
        for e in entries[:4]:
            behind.submit(e)
        stored = ahead.client().checkpoint()
        # The proof from 4 to 6 needs tiles at 6, which only the log that is ahead has.
        with pytest.raises(TransportError, match="older than the stored one"):
            refresh_checkpoint(behind.client(), behind.policy(), stored)
        assert refresh_checkpoint(ahead.client(), ahead.policy(), stored) == stored


def test_fetch_bundle_checks_consistency_with_the_stored_checkpoint(live: LiveLog) -> None:
    image = b"image v2" * 50
    live.submit_many(live.filler(0, 3))
    live.admit_vendor()
    stored = live.client().checkpoint()
    entry = release_entry(image, version="2.0.0", security_version=2)
    live.submit(entry)
    live.submit_many(live.filler(4, 3))
    fetch = RecordingFetch(live.client())
    client = live.client()
    client.tiles = fetch  # type: ignore[method-assign]
    bundle = fetch_bundle(client, leaf_hash(entry), live.policy(), stored)
    assert ProofBundle.parse(bundle).extra == entry
    assert fetch.paths  # the consistency proof came from tiles
    update = verify_update(
        image,
        bundle,
        live.policy(),
        PinnedVendorKeys((VENDOR_KEY.verifier,)),
        DeviceState("router-9000", 1, stored),
    )
    assert update.tree_size == 8


# -- split views ----------------------------------------------------------------------------


@pytest.fixture
def two_views(tmp_path: Path) -> Iterator[tuple[LiveLog, LiveLog]]:
    """Two independent logs with the same log key: one log, two views."""
    log_key = Ed25519Signer.from_seed(ORIGIN, b"\x51" * 32)
    operator = Ed25519Signer.from_seed("operator.example", b"\x52" * 32)
    with (
        LiveLog(tmp_path / "a", log_key, operator) as a,
        LiveLog(tmp_path / "b", log_key, operator) as b,
    ):
        yield a, b


def test_split_view_larger_tree_is_detected_with_evidence(
    two_views: tuple[LiveLog, LiveLog],
) -> None:
    a, b = two_views
    shared = a.filler(0, 2)
    for e in shared:
        a.submit(e)
        b.submit(e)
    a.submit_many(a.filler(100, 1))  # A: 3 entries
    b.submit_many(b.filler(200, 3))  # B: 5 entries, diverging at index 2
    seen_a = a.client().checkpoint()
    shown_b = b.client().checkpoint()
    assert (size_of(seen_a), size_of(shown_b)) == (3, 5)

    with pytest.raises(SplitViewError) as info:
        refresh_checkpoint(b.client(), b.policy(), seen_a)
    evidence = info.value
    assert evidence.old_note == seen_a  # byte for byte
    assert evidence.new_note == shown_b
    assert evidence.proof  # the proof that was tried
    assert "split view" in str(evidence)
    # Both notes really are signed by the one log key.
    for note in (evidence.old_note, evidence.new_note):
        open_checkpoint(note, a.log_key.verifier)


def test_split_view_same_size_is_detected_with_evidence(
    two_views: tuple[LiveLog, LiveLog],
) -> None:
    a, b = two_views
    a.submit_many(a.filler(0, 3))
    b.submit_many(b.filler(10, 3))
    seen_a, shown_b = a.client().checkpoint(), b.client().checkpoint()
    with pytest.raises(SplitViewError) as info:
        refresh_checkpoint(b.client(), b.policy(), seen_a)
    assert (info.value.old_note, info.value.new_note) == (seen_a, shown_b)
    assert info.value.proof == ()


def test_split_view_stops_an_update(two_views: tuple[LiveLog, LiveLog]) -> None:
    a, b = two_views
    image = b"an image only B's view has" * 10
    a.submit_many(a.filler(0, 4))
    seen_a = a.client().checkpoint()
    entry = release_entry(image)
    b.submit_many(b.filler(50, 3))
    b.admit_vendor()
    b.submit(entry)  # B: 5 entries, none of them A's
    with pytest.raises(SplitViewError) as info:
        fetch_bundle(b.client(), leaf_hash(entry), b.policy(), seen_a)
    assert info.value.old_note == seen_a
    assert info.value.new_note == ProofBundle.parse(b.client().bundle(4)).checkpoint
    # Offline alone the device would install it: seeing the split takes a
    # consistency proof from the log's tiles, which is why fetch_bundle checks.
    bundle = b.client().bundle(leaf_hash(entry))
    update = verify_update(
        image,
        bundle,
        b.policy(),
        PinnedVendorKeys((VENDOR_KEY.verifier,)),
        DeviceState("router-9000", 0, seen_a),
    )
    assert update.tree_size == 5


# -- local state --------------------------------------------------------------------------------


def test_state_is_saved_atomically_and_privately(tmp_path: Path, live: LiveLog) -> None:
    live.submit_many(live.filler(0, 2))
    note = live.client().checkpoint()
    (tmp_path / "device").mkdir()
    path = tmp_path / "device" / "state.json"
    state = DeviceState("router-9000", 3, note, "B")
    save_state(path, state)
    assert load_state(path) == state
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_state(path).checkpoint == note  # byte for byte
    assert [p.name for p in path.parent.iterdir()] == ["state.json"]  # no temporary left


def test_a_failed_write_leaves_the_old_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "state.json"
    save_state(path, DeviceState("p", 1))
    fsyncs: list[int] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        fsyncs.append(fd)
        real_fsync(fd)

    def crash(src: object, dst: object) -> None:
        raise OSError("disk on fire")

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk on fire"):
        save_state(path, DeviceState("p", 2))
    assert load_state(path).installed_security_version == 1
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]
    assert fsyncs  # the data was flushed before the rename was attempted


def test_write_atomic_replaces_content(tmp_path: Path) -> None:
    path = tmp_path / "f"
    write_atomic(path, b"one")
    write_atomic(path, b"two")
    assert path.read_bytes() == b"two"


def test_a_corrupt_state_file_is_a_format_error(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    path.write_text('{"product": 7}')
    with pytest.raises(StateFormatError, match=str(path)):
        load_state(path)


# -- the example update agent ----------------------------------------------------------------


def test_example_update_agent_installs_a_verified_image(live: LiveLog, tmp_path: Path) -> None:
    image = b"agent firmware" * 64
    live.submit_many(live.filler(0, 2))
    live.admit_vendor()
    stored = live.client().checkpoint()
    entry = release_entry(image, version="3.0.0", security_version=3)
    live.submit(entry)
    live.submit_many(live.filler(3, 2))

    files = {
        "policy": live.policy().to_text().encode(),
        "release.note": entry,
        "image.bin": image,
    }
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    state_path = tmp_path / "state.json"
    save_state(state_path, DeviceState("router-9000", 2, stored))
    target = tmp_path / "installed.bin"

    def agent(image_path: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                sys.executable,
                str(REPO / "examples" / "update_agent.py"),
                "--log",
                live.url,
                "--policy",
                str(tmp_path / "policy"),
                "--vendor-key",
                VENDOR_KEY.verifier.vkey,
                "--release",
                str(tmp_path / "release.note"),
                "--image",
                str(image_path),
                "--state",
                str(state_path),
                "--install-to",
                str(target),
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    tampered = tmp_path / "tampered.bin"
    tampered.write_bytes(image[:-1] + b"!")
    bad = agent(tampered)
    assert bad.returncode == 1, bad.stderr
    assert "image-digest" in bad.stderr
    assert not target.exists()
    assert load_state(state_path).installed_security_version == 2

    good = agent(tmp_path / "image.bin")
    assert good.returncode == 0, good.stderr
    assert target.read_bytes() == image
    after = load_state(state_path)
    assert after.installed_security_version == 3
    assert after.checkpoint is not None
    assert size_of(after.checkpoint) == 6

    # the vendor revokes the release: the agent refuses to install it again
    target.unlink()
    revocation = Revocation("acme.example", parse_entry(entry).identity.hex(), "boot loop on rev-c")
    live.submit(sign_entry(revocation, [VENDOR_KEY]))
    revoked = agent(tmp_path / "image.bin")
    assert revoked.returncode == 1, revoked.stderr
    assert "'revocation'" in revoked.stderr
    assert "boot loop on rev-c" in revoked.stderr
    assert not target.exists()


# -- revocations ----------------------------------------------------------------------------------


def _verified(live: LiveLog, image: bytes, entry: bytes) -> VerifiedUpdate:
    return verify_update(
        image,
        live.client().bundle(leaf_hash(entry)),
        live.policy(),
        PinnedVendorKeys((VENDOR_KEY.verifier,), vendor="acme.example"),
        DeviceState("router-9000", 0),
    )


def test_a_release_the_vendor_revoked_is_refused(live: LiveLog) -> None:
    image = b"revocable firmware" * 8
    live.admit_vendor()
    entry = release_entry(image)
    live.submit(entry)
    update = _verified(live, image, entry)
    keys = PinnedVendorKeys((VENDOR_KEY.verifier,), vendor="acme.example")
    check_not_revoked(live.client(), update, keys)  # not revoked yet
    revocation = Revocation(
        "acme.example", parse_entry(entry).identity.hex(), "bricks rev-b", "ADV-7"
    )
    index = ProofBundle.parse(live.submit(sign_entry(revocation, [VENDOR_KEY]))).index
    with pytest.raises(UpdateRefused) as info:
        check_not_revoked(live.client(), update, keys)
    assert info.value.step == "revocation"
    assert f"log index {index}: bricks rev-b; advisory: ADV-7" in info.value.detail


def test_a_revocation_without_the_pinned_keys_does_not_count(
    live: LiveLog, caplog: pytest.LogCaptureFixture
) -> None:
    image = b"firmware kept" * 8
    live.admit_vendor()
    entry = release_entry(image)
    live.submit(entry)
    live.submit(
        sign_entry(
            Revocation("acme.example", parse_entry(entry).identity.hex(), "bad"), [VENDOR_KEY]
        )
    )
    update = _verified(live, image, entry)
    other = Ed25519Signer.from_seed("acme.example/release", b"\x32" * 32)  # not the logged one
    with caplog.at_level("WARNING", logger="firmlog.client.online"):
        check_not_revoked(live.client(), update, PinnedVendorKeys((other.verifier,)))
    assert "ignoring a revocation" in caplog.text
