"""Witnessing: the log publishes a checkpoint only once a quorum of witnesses
(real monitors) cosigned it; submitters get 503 meanwhile, a resubmission the
cosigned bundle. The published checkpoint is recorded in the database: a
restarted server and another server sharing the database serve it. Integration
never waits for the witnesses."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiohttp import ClientSession, web
from aiohttp.test_utils import TestServer
from support.harness import ORIGIN, BlackBoxLog, LogProcessUnderTest, LogUnderTest, make_log
from support.metrics import Samples
from support.monitor import WITNESS_NAME, MonitorUnderTest, checkpoint, eventually, free_port
from test_workers import log_records, pinned_sessions

from firmlog.client.bundle import ProofBundle
from firmlog.client.checkpoint import Checkpoint
from firmlog.client.errors import QuorumError
from firmlog.client.keys import generate_key
from firmlog.client.note import split_note
from firmlog.client.policy import Policy, parse_policy
from firmlog.monitor.datadir import init_data_dir


class HeldWitness:
    """A real HTTP hop in front of a witness that can hold its add-checkpoint
    requests until the test releases them (passed on, or answered 503)."""

    def __init__(self) -> None:
        self.target = ""  # the witness's base URL, once it runs
        self.sizes: list[int] = []  # the tree size of each request, in the order they came
        self.held = False
        self.waiting = 0  # requests held now
        self._release = asyncio.Event()
        self._fail = False
        app = web.Application()
        app.router.add_post("/add-checkpoint", self._add_checkpoint)
        self.server = TestServer(app, host="127.0.0.1", port=free_port())
        self._session: ClientSession | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.port}"

    async def start(self) -> None:
        self._session = ClientSession()
        await self.server.start_server()

    async def stop(self) -> None:
        self.release(fail=True)
        await self.server.close()
        if self._session is not None:
            await self._session.close()

    def hold(self) -> None:
        self.held, self._fail = True, False
        self._release = asyncio.Event()

    def release(self, *, fail: bool) -> None:
        self.held, self._fail = False, fail
        self._release.set()

    async def _add_checkpoint(self, request: web.Request) -> web.Response:
        body = await request.read()
        note = body.split(b"\n\n", 1)[1]  # after the old size and the proof
        self.sizes.append(int(note.split(b"\n")[1]))
        if self.held:
            self.waiting += 1
            try:
                await self._release.wait()
            finally:
                self.waiting -= 1
            if self._fail:
                return web.Response(status=503, text="held, then failed by the test\n")
        assert self._session is not None
        async with self._session.post(f"{self.target}/add-checkpoint", data=body) as resp:
            headers = {"Content-Type": resp.headers.get("Content-Type", "text/plain")}
            return web.Response(status=resp.status, body=await resp.read(), headers=headers)


@dataclass
class Witnessed:
    log: BlackBoxLog  # a LogUnderTest if served_by is "in-process"
    served_by: str  # support.harness.SERVED_BY
    monitors: list[MonitorUnderTest]
    device_policy: Policy  # what a device trusts: the log and 2 of the 3 witnesses
    policy_file: Path
    held: list[HeldWitness] = field(default_factory=list)  # in front of each monitor, if any
    logs: list[BlackBoxLog] = field(default_factory=list)  # every log server started

    def another_log(self, data_dir: Path) -> BlackBoxLog:
        """A log server with the same keys, database and witnesses, served the same
        way (not started)."""
        log = make_log(
            self.served_by,
            self.log.config.database_url,
            data_dir,
            self.log.log_key,
            self.log.operator,
            witness_policy=self.policy_file,
            witness_timeout=self.log.config.witness_timeout,
        )
        data_dir.mkdir(exist_ok=True)
        self.logs.append(log)
        return log


async def start_witnessed(
    served_by: str,
    database_url: str,
    tmp_path: Path,
    *,
    held: bool = False,
    witness_timeout: float = 1.5,
) -> Witnessed:
    log_key = generate_key(ORIGIN)
    ports = [free_port() for _ in range(3)]
    proxies = [HeldWitness() for _ in ports] if held else []
    lines = []
    for i, port in enumerate(ports):
        vkey = init_data_dir(tmp_path / f"monitor{i}", WITNESS_NAME).signer.verifier.vkey
        url = proxies[i].url if held else f"http://127.0.0.1:{port}"
        lines.append(f"witness w{i} {vkey} {url}")
    quorum = "group g 2 w0 w1 w2\nquorum g\n"
    policy_file = tmp_path / "witnesses.policy"
    policy_file.write_text("\n".join(lines) + "\n" + quorum)
    log = make_log(
        served_by,
        database_url,
        tmp_path / "log",
        log_key,
        witness_policy=policy_file,
        witness_timeout=witness_timeout,
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
    for proxy, m in zip(proxies, monitors, strict=False):
        proxy.target = m.base
        await proxy.start()
    device = parse_policy(
        f"log {log.verifier.vkey}\n"
        + "\n".join(line.rsplit(" ", 1)[0] for line in lines)
        + "\n"
        + quorum
    )
    return Witnessed(log, served_by, monitors, device, policy_file, proxies, [log])


async def stop_witnessed(w: Witnessed) -> None:
    for proxy in w.held:
        await proxy.stop()
    for m in w.monitors:
        await m.stop()
    for log in w.logs:
        await log.stop()


@pytest.fixture
async def witnessed(served_by: str, database_url: str, tmp_path: Path) -> AsyncIterator[Witnessed]:
    """A log served as ``served_by`` says, and its three witnesses (real monitors)."""
    w = await start_witnessed(served_by, database_url, tmp_path)
    try:
        yield w
    finally:
        await stop_witnessed(w)


@pytest.fixture
async def held_witnesses(database_url: str, tmp_path: Path) -> AsyncIterator[Witnessed]:
    """Witnesses behind :class:`HeldWitness` hops, and a witness timeout longer than
    any test waits: a submitter is never answered 503 for being slow here."""
    w = await start_witnessed("in-process", database_url, tmp_path, held=True, witness_timeout=60)
    try:
        yield w
    finally:
        await stop_witnessed(w)


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
    # The log retries cosigning with a backoff: a resubmission answered before that
    # retry succeeded is 503 again, with the same index; one after it, the bundle.
    answers: list[tuple[int, bytes]] = []

    async def cosigned() -> bool:
        answers.append(await w.log.submit(session, entry))
        status, body = answers[-1]
        assert status in (200, 503), body
        assert status == 200 or b"logged at index 1" in body, body
        return status == 200

    await poll("a resubmission answered with the cosigned bundle", cosigned)
    assert verify(w, answers[-1][1], entry).index == 1
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


def tree_size_of(note: bytes) -> int:
    return Checkpoint.parse(split_note(note)[0]).tree_size


async def get(session: ClientSession, url: str) -> tuple[int, bytes]:
    async with session.get(url) as resp:
        return resp.status, await resp.read()


async def cosigned_size(w: Witnessed, session: ClientSession, log: BlackBoxLog) -> int | None:
    """The tree size of ``log``'s /checkpoint, checked against the device policy; None if 404."""
    status, body = await get(session, f"{log.base}/checkpoint")
    if status == 404:
        return None
    assert status == 200, body
    return w.device_policy.verify_checkpoint(body).signed.checkpoint.tree_size


async def poll(what: str, check: object, timeout: float = 15.0) -> None:
    """Await ``check()`` (a coroutine function returning bool) until it holds."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not await check():  # type: ignore[operator]
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting until {what}")
        await asyncio.sleep(0.02)


async def test_the_published_checkpoint_is_shared_and_survives_a_restart(
    witnessed: Witnessed, session: ClientSession, tmp_path: Path
) -> None:
    w = witnessed
    other = w.another_log(tmp_path / "other")  # a second server on the same database
    await other.start()
    assert await cosigned_size(w, session, other) in (None, 0)  # the empty tree at most
    for i in range(2):
        status, body = await w.log.submit(session, w.log.entry(i))
        assert status == 200, body

    async def other_serves_it() -> bool:
        return await cosigned_size(w, session, other) == 2

    await poll("the other server serves the cosigned checkpoint of size 2", other_serves_it)
    status, body = await get(session, f"{other.base}/v1/bundle/1")
    assert status == 200, body
    verify(w, body, w.log.entry(1))

    # Restarted with no witness reachable: it serves what it published, at once.
    for m in w.monitors:
        await m.stop()
    await w.log.stop()
    restarted = w.another_log(w.log.config.data_dir)
    await restarted.start()
    assert await cosigned_size(w, session, restarted) == 2
    status, body = await get(session, f"{restarted.base}/v1/bundle/0?tree_size=2")
    assert status == 200, body
    verify(w, body, w.log.entry(0))


async def test_a_restarted_log_has_its_uncosigned_tree_cosigned(
    witnessed: Witnessed, session: ClientSession
) -> None:
    w = witnessed
    status, body = await w.log.submit(session, w.log.entry(0))
    assert status == 200, body
    ports = [m.server.port for m in w.monitors if m.server is not None]
    for m in w.monitors[1:]:
        await m.stop()
    async with session.post(f"{w.log.base}/v1/entries", data=w.log.entry(1)) as resp:
        assert resp.status == 503
        assert resp.headers["Retry-After"] == "1"
        error = (await resp.json())["error"]
    assert (
        "logged at index 1; its checkpoint is not cosigned by a quorum of witnesses yet, retry"
        in error
    )
    # The tree of size 2 is in the database but was never cosigned; nor is it served.
    status, body = await get(session, f"{w.log.base}/v1/bundle/1?tree_size=2")
    assert status == 404, body
    assert await cosigned_size(w, session, w.log) == 1

    await w.log.stop()
    w.monitors[1].port = ports[1]
    await w.monitors[1].start()
    restarted = w.another_log(w.log.config.data_dir)
    await restarted.start()  # nobody submits anything: the restart alone gets it cosigned

    async def published() -> bool:
        return await cosigned_size(w, session, restarted) == 2

    await poll("the restarted log publishes the tree of size 2", published)


async def test_integration_does_not_wait_for_the_witnesses(
    held_witnesses: Witnessed, session: ClientSession
) -> None:
    w = held_witnesses
    log = w.log
    assert isinstance(log, LogUnderTest)  # its metrics are read in this process
    status, body = await log.submit(session, log.entry(0))
    assert status == 200, body
    for proxy in w.held:
        proxy.hold()
    first = asyncio.create_task(log.submit(session, log.entry(1)))
    await eventually(
        lambda: log.sample("firmlog_tree_size") == 2 and sum(p.waiting for p in w.held) >= 2,
        timeout=10,
        what="entry 1 integrated and its checkpoint at the witnesses",
    )
    # The witnesses hold the checkpoint of size 2: the next batch is integrated anyway.
    second = asyncio.create_task(log.submit(session, log.entry(2)))
    await eventually(
        lambda: log.sample("firmlog_tree_size") == 3,
        timeout=10,
        what="entry 2 integrated while the witnesses hold the previous checkpoint",
    )
    # Nothing unpublished is served: not at /checkpoint, not in a bundle.
    assert await cosigned_size(w, session, log) == 1
    for url in ("/v1/bundle/1", "/v1/bundle/1?tree_size=2", "/v1/bundle/2?tree_size=3"):
        status, body = await get(session, log.base + url)
        assert status == 404, (url, body)
    assert not first.done()
    assert not second.done()

    before = await metrics(session, log)
    assert before["firmlog_unpublished_entries"] == 2
    # The witnesses refuse the checkpoint of size 2. The newer one, of size 3, is
    # cosigned next, and answers the submitters of both batches.
    for proxy in w.held:
        proxy.release(fail=True)
    (status1, bundle1), (status2, bundle2) = await asyncio.wait_for(
        asyncio.gather(first, second), timeout=20
    )
    assert status1 == 200, bundle1
    assert status2 == 200, bundle2
    for i, bundle in ((1, bundle1), (2, bundle2)):
        parsed = verify(w, bundle, log.entry(i))
        assert tree_size_of(parsed.checkpoint) == 3
    assert await cosigned_size(w, session, log) == 3

    after = await metrics(session, log)
    assert after["firmlog_published_tree_size"] == 3
    assert after["firmlog_unpublished_entries"] == 0
    # One publication (size 3): the refused checkpoint of size 2 was superseded.
    published = "firmlog_checkpoints_published_total"
    assert after[published] == before[published] + 1
    # At least one round failed, refused by every witness: once the newer checkpoint
    # superseded the held one, its request may have been held and refused too.
    failed = 'firmlog_cosigning_seconds_count{outcome="failed"}'
    assert after[failed] >= before.get(failed, 0) + 1
    for name in ("w0", "w1", "w2"):
        refused = f'firmlog_witness_requests_total{{witness="{name}",outcome="refused"}}'
        assert after[refused] >= before.get(refused, 0) + 1
        assert after[f'firmlog_witness_request_seconds_count{{witness="{name}"}}'] > 0
    assert after["firmlog_published_checkpoint_age_seconds"] >= 0


async def test_with_workers_one_of_them_talks_to_the_witnesses(
    database_url: str, tmp_path: Path
) -> None:
    # Both workers integrate batches; only the cosigner (worker 0) has trees cosigned,
    # one round at a time, so each witness is asked for ever larger trees, as by one
    # server. The other worker's submitters get the cosigned bundles all the same.
    w = await start_witnessed("2-workers", database_url, tmp_path, held=True, witness_timeout=60)
    try:
        log = w.log
        assert isinstance(log, LogProcessUnderTest)
        async with pinned_sessions(log.base, 2) as pinned:

            async def submit_all(k: int, session: ClientSession) -> None:
                for i in range(6):
                    entry = log.entry(100 * k + i)
                    status, body = await log.submit(session, entry)
                    assert status == 200, body
                    verify(w, body, entry)

            await asyncio.gather(*(submit_all(k, s) for k, s in enumerate(pinned)))
            cp = await checkpoint(pinned[0], log.base)
            assert w.device_policy.verify_checkpoint(cp).signed.checkpoint.tree_size == 12
        records = log_records(log.process)
        integrated_by = {r.get("worker") for r in records if r.get("event") == "integrated"}
        assert integrated_by == {0, 1}, f"batches integrated by workers {integrated_by}"
        cosigned_by = {r.get("worker") for r in records if r.get("event") == "checkpoint cosigned"}
        assert cosigned_by == {0}, f"checkpoints were cosigned by workers {cosigned_by}"
        for proxy in w.held:
            assert proxy.sizes, "a witness was never asked"
            assert proxy.sizes == sorted(proxy.sizes), f"asked out of order: {proxy.sizes}"
    finally:
        await stop_witnessed(w)


async def metrics(session: ClientSession, log: BlackBoxLog) -> Samples:
    """The samples of the log's /metrics, by name with labels (in any order)."""
    status, text = await get(session, f"{log.base}/metrics")
    assert status == 200
    return Samples(text.decode())
