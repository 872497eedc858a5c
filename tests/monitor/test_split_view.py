"""Split views: one log key, two databases (two trees); evidence, and no more cosigning."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from aiohttp import ClientSession
from support.harness import LogUnderTest
from support.monitor import NOWHERE, MonitorUnderTest, checkpoint, consistency, eventually, grow

from firmlog.client.checkpoint import open_checkpoint
from firmlog.client.cli import main
from firmlog.client.evidence import DIFFERENT_SIZES, SAME_SIZE
from firmlog.client.keys import generate_key
from firmlog.client.merkle import verify_consistency
from firmlog.client.trust import CheckpointNote


async def evidence(session: ClientSession, base: str) -> list[dict[str, Any]]:
    async with session.get(f"{base}/v1/evidence") as resp:
        assert resp.status == 200
        found: list[dict[str, Any]] = await resp.json()
        return found


async def test_same_size_other_root_is_evidence_and_ends_cosigning(
    log: LogUnderTest, fork: LogUnderTest, session: ClientSession, tmp_path: Path
) -> None:
    await grow(log, session, 0, 2)
    await grow(fork, session, 100, 2)
    honest, forked = await checkpoint(session, log.base), await checkpoint(session, fork.base)
    witness = MonitorUnderTest(tmp_path / "monitor", NOWHERE, log.verifier)
    await witness.start()
    try:
        assert (await witness.add_checkpoint(session, 0, [], honest))[0] == 200
        status, ctype, body = await witness.add_checkpoint(session, 2, [], forked)
        assert (status, ctype, body) == (409, "text/x.tlog.size", b"2\n")

        found = await evidence(session, witness.base)
        assert len(found) == 1
        item = found[0]
        assert item["kind"] == SAME_SIZE
        assert [base64.b64decode(n) for n in item["notes"]] == [honest, forked]  # byte for byte
        assert item["proof"] == []

        # Cosigning has stopped, even for the honest tree.
        await grow(log, session, 2, 2)
        cp4 = await checkpoint(session, log.base)
        proof = await consistency(session, log.base, 2, 4)
        status, _, body = await witness.add_checkpoint(session, 2, proof, cp4)
        assert status == 403, body
        async with session.get(f"{witness.base}/healthz") as resp:
            assert (await resp.json())["status"] == "split-view"
        async with session.get(f"{witness.base}/metrics") as resp:
            assert "firmlog_monitor_split_views_total 1" in await resp.text()
    finally:
        await witness.stop()

    # It remembers across a restart.
    again = MonitorUnderTest(tmp_path / "monitor", NOWHERE, log.verifier)
    await again.start()
    try:
        assert again.watched.split_view
        assert (await witness_status(again, session, cp4, proof)) == 403
        assert len(await evidence(session, again.base)) == 1
    finally:
        await again.stop()


async def test_a_proof_from_another_root_at_the_cosigned_size_is_evidence(
    log: LogUnderTest, fork: LogUnderTest, session: ClientSession, tmp_path: Path
) -> None:
    """A witness at size 3 sent the fork's larger checkpoint with the fork's own
    consistency proof from 3: the proof leads to the fork's root from another root
    at size 3 than the one cosigned. 422, as tlog-witness says, and evidence kept."""
    await grow(log, session, 0, 3)
    await grow(fork, session, 0, 1)  # the same first entry, then others
    await grow(fork, session, 100, 4)
    honest, forked = await checkpoint(session, log.base), await checkpoint(session, fork.base)
    witness = MonitorUnderTest(tmp_path / "monitor", NOWHERE, log.verifier)
    await witness.start()
    try:
        assert (await witness.add_checkpoint(session, 0, [], honest))[0] == 200
        proof = await consistency(session, fork.base, 3, 5)
        # A proof that leads nowhere proves nothing: 422, nothing kept.
        garbage = [bytes(32)] * len(proof)
        assert (await witness.add_checkpoint(session, 3, garbage, forked))[0] == 422
        assert await evidence(session, witness.base) == []
        status, _, body = await witness.add_checkpoint(session, 3, proof, forked)
        assert status == 422, body
        (item,) = await evidence(session, witness.base)
        assert item["kind"] == DIFFERENT_SIZES
        assert [base64.b64decode(n) for n in item["notes"]] == [honest, forked]
        (tmp_path / "ev.json").write_text(json.dumps(item))
        assert (
            main(["evidence", "verify", str(tmp_path / "ev.json"), "--log-key", log.verifier.vkey])
            == 0
        )
        assert (await witness.add_checkpoint(session, 3, proof, forked))[0] == 403
    finally:
        await witness.stop()


async def witness_status(
    monitor: MonitorUnderTest, session: ClientSession, note: bytes, proof: list[bytes]
) -> int:
    return (await monitor.add_checkpoint(session, 2, proof, note))[0]


async def test_a_larger_tree_that_does_not_extend_the_trusted_one_is_evidence(
    log: LogUnderTest, fork: LogUnderTest, session: ClientSession, tmp_path: Path
) -> None:
    await grow(log, session, 0, 2)
    await grow(fork, session, 0, 1)  # the same first entry, then another second one
    await grow(fork, session, 100, 2)
    data = tmp_path / "monitor"
    monitor = MonitorUnderTest(data, log.base, log.verifier, [log.operator.verifier])
    await monitor.start()
    try:
        await eventually(lambda: monitor.watched.progress.next_index == 2, what="2 entries")
        trusted = monitor.watched.trusted
        assert trusted is not None
    finally:
        await monitor.stop()

    # The same monitor, now shown the forked tree (a log that answers differently).
    shown = MonitorUnderTest(data, fork.base, log.verifier, [log.operator.verifier])
    await shown.start()
    try:
        await eventually(lambda: shown.watched.split_view, what="a split view")
        found = await evidence(session, shown.base)
        assert len(found) == 1
        item = found[0]
        assert item["kind"] == DIFFERENT_SIZES
        old, new = (base64.b64decode(n) for n in item["notes"])
        assert old == trusted.note
        assert new == await checkpoint(session, fork.base)
        # What anyone can check offline: both notes are the log's, and the larger tree's
        # root at size 2 (proven by the proof) is not the root the log signed for size 2.
        small = open_checkpoint(old, log.verifier).checkpoint
        large = open_checkpoint(new, log.verifier).checkpoint
        root = base64.b64decode(item["smaller_root"])
        proof = [base64.b64decode(h) for h in item["proof"]]
        verify_consistency(small.tree_size, large.tree_size, root, large.root_hash, proof)
        assert root != small.root_hash
        # Still trusting (and serving) only what it verified before.
        assert shown.watched.trusted == trusted
        cosigned = shown.watched.cosigned_note
        assert cosigned is not None
        assert CheckpointNote.parse(cosigned).checkpoint == trusted.checkpoint
    finally:
        await shown.stop()


def verify_cli(tmp_path: Path, item: object, log_key: str) -> int:
    path = tmp_path / "evidence.json"
    path.write_text(json.dumps(item))
    return main(["evidence", "verify", str(path), "--log-key", log_key])


async def test_evidence_verifies_offline(
    log: LogUnderTest, fork: LogUnderTest, session: ClientSession, tmp_path: Path
) -> None:
    await grow(log, session, 0, 5)
    await grow(fork, session, 0, 1)  # the same first entry, then others
    await grow(fork, session, 100, 4)
    forked = await checkpoint(session, fork.base)
    honest = await checkpoint(session, log.base)
    witness = MonitorUnderTest(tmp_path / "witness", NOWHERE, log.verifier)
    await witness.start()
    try:
        assert (await witness.add_checkpoint(session, 0, [], honest))[0] == 200
        assert (await witness.add_checkpoint(session, 5, [], forked))[0] == 409
        (item,) = await evidence(session, witness.base)
    finally:
        await witness.stop()
    vkey = log.verifier.vkey
    assert item["kind"] == SAME_SIZE
    assert verify_cli(tmp_path, item, vkey) == 0
    assert verify_cli(tmp_path, {**item, "notes": [item["notes"][0]] * 2}, vkey) == 1
    other = generate_key(log.log_key.name).verifier.vkey
    assert verify_cli(tmp_path, item, other) == 1  # not the log's signatures
    assert verify_cli(tmp_path, {"kind": "same-size"}, vkey) == 2

    follower = MonitorUnderTest(tmp_path / "follower", log.base, log.verifier)
    await follower.start()
    try:
        await eventually(lambda: follower.watched.tree_size == 5, what="size 5")
    finally:
        await follower.stop()
    await grow(fork, session, 200, 1)  # size 6, not an extension of the log's size 5
    shown = MonitorUnderTest(tmp_path / "follower", fork.base, log.verifier)
    await shown.start()
    try:
        await eventually(lambda: shown.watched.split_view, what="a split view")
        (item,) = await evidence(session, shown.base)
    finally:
        await shown.stop()
    assert item["kind"] == DIFFERENT_SIZES
    assert verify_cli(tmp_path, item, vkey) == 0
    # The log's own root at the smaller size in place of the fork's: consistent, no proof.
    small = open_checkpoint(base64.b64decode(item["notes"][0]), log.verifier).checkpoint
    honest_root = base64.b64encode(small.root_hash).decode()
    assert verify_cli(tmp_path, {**item, "smaller_root": honest_root}, vkey) == 1
    assert verify_cli(tmp_path, {**item, "proof": item["proof"][:-1]}, vkey) == 1

    # The same check from the installed command, in its own process.
    path = tmp_path / "evidence.json"
    path.write_text(json.dumps(item))
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "firmlog.client.cli",
            "evidence",
            "verify",
            str(path),
            "--log-key",
            vkey,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("split view proven: ")
