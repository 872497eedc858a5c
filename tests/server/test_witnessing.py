"""Witnessing: the log publishes a checkpoint only once a quorum of witnesses
(real monitors) cosigned it; submitters get 503 meanwhile, a resubmission the
cosigned bundle."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiohttp import ClientSession
from support.harness import ORIGIN, LogUnderTest
from support.monitor import WITNESS_NAME, MonitorUnderTest, checkpoint, free_port

from firmlog.client.bundle import ProofBundle
from firmlog.client.errors import QuorumError
from firmlog.client.keys import generate_key
from firmlog.client.policy import Policy, parse_policy
from firmlog.monitor.datadir import init_data_dir


@dataclass
class Witnessed:
    log: LogUnderTest
    monitors: list[MonitorUnderTest]
    device_policy: Policy  # what a device trusts: the log and 2 of the 3 witnesses


@pytest.fixture
async def witnessed(database_url: str, tmp_path: Path) -> AsyncIterator[Witnessed]:
    log_key = generate_key(ORIGIN)
    ports = [free_port() for _ in range(3)]
    lines = []
    for i, port in enumerate(ports):
        vkey = init_data_dir(tmp_path / f"monitor{i}", WITNESS_NAME).signer.verifier.vkey
        lines.append(f"witness w{i} {vkey} http://127.0.0.1:{port}")
    quorum = "group g 2 w0 w1 w2\nquorum g\n"
    policy_file = tmp_path / "witnesses.policy"
    policy_file.write_text("\n".join(lines) + "\n" + quorum)
    log = LogUnderTest(
        database_url, tmp_path / "log", log_key, witness_policy=policy_file, witness_timeout=1.5
    )
    log.config.data_dir.mkdir()
    await log.start()
    monitors = [
        MonitorUnderTest(
            tmp_path / f"monitor{i}", log.base, log.verifier, [log.operator.verifier], port=port
        )
        for i, port in enumerate(ports)
    ]
    for m in monitors:
        await m.start()
    device = parse_policy(
        f"log {log.verifier.vkey}\n"
        + "\n".join(line.rsplit(" ", 1)[0] for line in lines)
        + "\n"
        + quorum
    )
    try:
        yield Witnessed(log, monitors, device)
    finally:
        for m in monitors:
            await m.stop()
        await log.stop()


def verify(w: Witnessed, bundle: bytes, entry: bytes) -> ProofBundle:
    parsed = w.log.check_bundle(bundle, entry)
    verified = w.device_policy.verify_checkpoint(parsed.checkpoint)
    assert len(verified.witnesses) >= 2
    return parsed


async def test_every_bundle_and_checkpoint_is_cosigned_by_the_quorum(
    witnessed: Witnessed, session: ClientSession
) -> None:
    w = witnessed
    for i in range(3):
        entry = w.log.entry(i)
        status, body = await w.log.submit(session, entry)
        assert status == 200, body
        assert verify(w, body, entry).index == i
    cp = await checkpoint(session, w.log.base)
    assert w.device_policy.verify_checkpoint(cp).signed.checkpoint.tree_size == 3
    # Without cosignatures a device refuses the checkpoint: the quorum is what counts.
    only_log = cp.split(b"\n\n")[0] + b"\n\n" + cp.split(b"\n\n")[1].split(b"\n")[0] + b"\n"
    with pytest.raises(QuorumError):
        w.device_policy.verify_checkpoint(only_log)


async def test_without_quorum_503_then_resubmission_gets_the_cosigned_bundle(
    witnessed: Witnessed, session: ClientSession
) -> None:
    w = witnessed
    first = w.log.entry(0)
    status, body = await w.log.submit(session, first)
    assert status == 200, body
    ports = [m.server.port for m in w.monitors[1:] if m.server is not None]
    for m in w.monitors[1:]:
        await m.stop()
    entry = w.log.entry(1)
    status, body = await w.log.submit(session, entry)
    assert status == 503, body
    assert b"logged at index 1" in body
    # Not published: /checkpoint still shows the cosigned tree of size 1.
    cp = await checkpoint(session, w.log.base)
    assert w.device_policy.verify_checkpoint(cp).signed.checkpoint.tree_size == 1

    # One witness back (on its port, with its state): the quorum is met again.
    w.monitors[1].port = ports[0]
    await w.monitors[1].start()
    status, body = await w.log.submit(session, entry)
    assert status == 200, body
    assert verify(w, body, entry).index == 1
    cp = await checkpoint(session, w.log.base)
    assert w.device_policy.verify_checkpoint(cp).signed.checkpoint.tree_size == 2


async def test_a_witness_behind_is_caught_up(witnessed: Witnessed, session: ClientSession) -> None:
    w = witnessed
    # Witness 2 misses two checkpoints; the others meet the quorum.
    port = w.monitors[2].server.port if w.monitors[2].server is not None else None
    await w.monitors[2].stop()
    for i in range(2):
        status, body = await w.log.submit(session, w.log.entry(i))
        assert status == 200, body
    w.monitors[2].port = port
    await w.monitors[2].start()
    # Now witness 0 is away: witness 2 must cosign, from the size it knows (409 then proof).
    await w.monitors[0].stop()
    entry = w.log.entry(2)
    status, body = await w.log.submit(session, entry)
    assert status == 200, body
    parsed = verify(w, body, entry)
    verified = w.device_policy.verify_checkpoint(parsed.checkpoint)
    assert set(verified.witnesses) == {"w1", "w2"}


def test_config_reads_and_checks_the_witness_policy(tmp_path: Path) -> None:
    from firmlog.server.config import load_config
    from firmlog.server.errors import ConfigError

    (tmp_path / "config.toml").write_text('witness_policy = "nope.policy"\n')
    with pytest.raises(ConfigError, match="witness_policy"):
        load_config(tmp_path, default_origin=ORIGIN)
    vkey = init_data_dir(tmp_path / "w", WITNESS_NAME).signer.verifier.vkey
    policy = tmp_path / "ok.policy"
    policy.write_text(f"witness w {vkey} http://127.0.0.1:9\nquorum w\n")
    (tmp_path / "config.toml").write_text(f'witness_policy = "{policy}"\nwitness_timeout = 2\n')
    cfg = load_config(tmp_path, default_origin=ORIGIN)
    assert cfg.witness_policy == str(policy)
    assert cfg.witness_timeout == 2.0
