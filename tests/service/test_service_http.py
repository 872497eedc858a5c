"""firmlog.service.http on each event loop the services run on (asyncio's and uvloop).

The connection handling every service shares, on a small app of its own (no
storage): a request head has ``header_timeout`` from its first byte, however
its bytes are cut into segments and whichever order the loop delivers a new
connection's first bytes and its request task in; a pipelined head's clock
starts when the response before it is finished; an idle connection is closed
quietly; a body is read whole within its deadline (read_whole); malformed
requests get JSON. Then serve() itself, in a process, on each loop, and the
choice of loop.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from support.harness import ServiceTestServer
from support.loops import LOOP_FACTORIES, running_loop_name, uvloop_expected
from support.rawhttp import connect, exchange, parse_answer, read_to_end, trickle

from firmlog.service.http import (
    EVENT_LOOPS,
    BodyIncomplete,
    BodyTimeout,
    BodyTooLarge,
    EventLoopUnavailable,
    HTTPConfig,
    default_event_loop,
    event_loop_factory,
    read_whole,
)

pytestmark = pytest.mark.every_event_loop

HEAD_S = 0.5
SHORT = HTTPConfig(header_timeout=HEAD_S, body_timeout=0.5, idle_timeout=1.5)
LIMIT = 1000
SLOW_S = 0.3


async def hello(request: web.Request) -> web.Response:
    return web.Response(text="hello")


async def slow(request: web.Request) -> web.Response:
    await asyncio.sleep(SLOW_S)
    return web.Response(text="slow")


async def loop_name(request: web.Request) -> web.Response:
    return web.Response(text=running_loop_name())


async def echo(request: web.Request) -> web.Response:
    try:
        body = await read_whole(request, LIMIT, SHORT.body_timeout, "body")
    except BodyTooLarge as exc:
        return web.json_response({"error": str(exc), "kind": "BodyTooLarge"}, status=413)
    except BodyTimeout as exc:
        response = web.json_response({"error": str(exc), "kind": "BodyTimeout"}, status=408)
        response.force_close()
        return response
    except BodyIncomplete as exc:
        return web.json_response({"error": str(exc), "kind": "BodyIncomplete"}, status=400)
    return web.Response(body=body)


@pytest.fixture
async def port() -> AsyncIterator[int]:
    """A service on the test's event loop, with short deadlines."""
    app = web.Application()
    app.router.add_get("/hello", hello)
    app.router.add_get("/slow", slow)
    app.router.add_get("/loop", loop_name)
    app.router.add_post("/echo", echo)
    server = ServiceTestServer(app, SHORT, "test service")
    await server.start_server()
    try:
        assert server.port is not None
        yield server.port
    finally:
        await server.close()


def test_both_loops_are_tested_here() -> None:
    assert set(LOOP_FACTORIES) == ({"asyncio", "uvloop"} if uvloop_expected() else {"asyncio"})


async def test_the_service_runs_on_the_loop_of_the_test(
    port: int, request: pytest.FixtureRequest
) -> None:
    want = "uvloop" if "[uvloop" in request.node.name else "asyncio"
    assert running_loop_name() == want
    answer = await exchange(port, b"GET /loop HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    assert answer.body.decode() == want


# -- the head deadline -----------------------------------------------------------------


async def test_a_head_trickled_a_byte_at_a_time_gets_408_within_the_deadline(port: int) -> None:
    head = b"GET /hello HTTP/1.1\r\nHost: t\r\nUser-Agent: slowloris\r\nX-Pad: 0123456789\r\n\r\n"
    started = time.monotonic()
    raw, sent = await trickle(port, head, interval=0.05)
    elapsed = time.monotonic() - started
    answer = parse_answer(raw)
    assert answer.status == 408
    assert answer.json()["kind"] == "HeaderTimeout"
    assert answer.headers["connection"] == "close"
    assert sent < len(head)
    assert HEAD_S <= elapsed < HEAD_S + 1.0, elapsed


async def test_a_head_whose_first_segment_is_its_only_one_gets_408(port: int) -> None:
    """The first bytes of a connection may reach the protocol before its request task
    runs (uvloop delivers them so): the deadline is armed all the same."""
    reader, writer = await connect(port)
    try:
        started = time.monotonic()
        writer.write(b"GET /hello HTTP/1.1\r\nHost: t\r\n")  # and nothing more
        raw = await read_to_end(reader, 10)
        elapsed = time.monotonic() - started
    finally:
        writer.close()
    assert parse_answer(raw).status == 408
    assert HEAD_S <= elapsed < HEAD_S + 1.0, elapsed


async def test_a_head_already_waiting_when_the_connection_is_accepted_gets_408(
    port: int,
) -> None:
    """The connection is made and its partial head sent before the server's loop runs
    again: the loop accepts it with the bytes already there (uvloop then delivers them
    before the connection's request task has started)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"GET /hello HTTP/1.1\r\nHost: t\r\n")  # without yielding to the loop
        started = time.monotonic()
        raw = await asyncio.to_thread(s.recv, 4096)
        elapsed = time.monotonic() - started
    assert parse_answer(raw).status == 408
    assert HEAD_S - 0.05 <= elapsed < HEAD_S + 1.0, elapsed


async def test_a_head_that_completes_in_time_is_answered(port: int) -> None:
    head = b"GET /hello HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
    third = len(head) // 3
    parts = (head[:third], head[third : 2 * third], head[2 * third :])
    answer = await exchange(port, *parts, pause=HEAD_S / 4)
    assert (answer.status, answer.body) == (200, b"hello")


async def test_each_head_on_a_kept_alive_connection_has_its_own_deadline(port: int) -> None:
    """Requests that each come within the deadline, on one connection for longer than
    it: none is cut off, and a late head after them still is."""
    reader, writer = await connect(port)
    try:
        for _ in range(4):
            writer.write(b"GET /hello HTTP/1.1\r\nHost: t\r\n")
            await asyncio.sleep(HEAD_S / 2)
            writer.write(b"\r\n")
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            assert head.startswith(b"HTTP/1.1 200 "), head
            assert await reader.readexactly(5) == b"hello"
        started = time.monotonic()
        writer.write(b"GET /hello HTTP/1.1\r\n")
        raw = await read_to_end(reader, 10)
        elapsed = time.monotonic() - started
    finally:
        writer.close()
    assert parse_answer(raw).status == 408
    assert HEAD_S <= elapsed < HEAD_S + 1.0, elapsed


async def test_a_pipelined_head_has_its_deadline_from_the_end_of_the_response(
    port: int,
) -> None:
    """A head sent while the request before it is answered: its clock starts when that
    response is finished, not while the server was busy with the one before."""
    reader, writer = await connect(port)
    try:
        started = time.monotonic()
        writer.write(b"GET /slow HTTP/1.1\r\nHost: t\r\n\r\n")
        await asyncio.sleep(SLOW_S / 3)
        writer.write(b"GET /hello HTTP/1.1\r\n")  # and no more
        raw = await read_to_end(reader, 10)
        elapsed = time.monotonic() - started
    finally:
        writer.close()
    first, _, rest = raw.partition(b"slow")
    assert first.startswith(b"HTTP/1.1 200 "), raw[:300]
    second = parse_answer(rest)
    assert second.status == 408
    assert second.json()["kind"] == "HeaderTimeout"
    assert SLOW_S + HEAD_S - 0.05 <= elapsed < SLOW_S + HEAD_S + 1.0, elapsed


async def test_a_pipelined_head_completed_in_time_is_answered(port: int) -> None:
    reader, writer = await connect(port)
    try:
        writer.write(b"GET /slow HTTP/1.1\r\nHost: t\r\n\r\nGET /hello HTTP/1.1\r\n")
        await asyncio.sleep(SLOW_S + HEAD_S / 2)  # past the slow response, within the deadline
        writer.write(b"Host: t\r\nConnection: close\r\n\r\n")
        raw = await read_to_end(reader, 10)
    finally:
        writer.close()
    assert raw.count(b"HTTP/1.1 200 ") == 2, raw
    assert raw.endswith(b"hello")


async def test_an_idle_connection_is_closed_quietly(port: int) -> None:
    """Nothing sent, or nothing after a whole request: closed after idle_timeout, with
    no 408 (no head was under way)."""
    reader, writer = await connect(port)
    try:
        started = time.monotonic()
        assert await read_to_end(reader, 10) == b""
        assert time.monotonic() - started >= SHORT.idle_timeout - 0.1
    finally:
        writer.close()
    reader, writer = await connect(port)
    try:
        writer.write(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nabc")
        raw = await read_to_end(reader, 10)
    finally:
        writer.close()
    assert raw.startswith(b"HTTP/1.1 200 ")
    assert raw.endswith(b"abc"), raw  # then closed when idle: no 408 after it
    assert b"408" not in raw


# -- bodies -----------------------------------------------------------------------------


async def test_a_body_in_pieces_is_read_whole(port: int) -> None:
    body = bytes(range(256)) * 3
    head = f"POST /echo HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Length: {len(body)}"
    parts = [head.encode() + b"\r\n\r\n", body[:100], body[100:500], body[500:]]
    answer = await exchange(port, *parts, pause=0.02)
    assert (answer.status, answer.body) == (200, body)
    answer = await exchange(port, b"".join(parts))  # and whole, with its head
    assert (answer.status, answer.body) == (200, body)


@pytest.mark.parametrize("pieces", [1, 3])
async def test_a_body_over_the_limit_is_refused(port: int, pieces: int) -> None:
    body = b"x" * (LIMIT + 1)
    head = (
        b"POST /echo HTTP/1.1\r\nHost: t\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    chunks = [body[i::pieces] for i in range(pieces)]
    framed = [b"%x\r\n%s\r\n" % (len(c), c) for c in chunks]
    answer = await exchange(port, head + framed[0], *framed[1:], b"0\r\n\r\n", pause=0.02)
    assert answer.status == 413, answer.raw[:300]
    assert answer.json()["error"] == f"body is more than {LIMIT} bytes: the limit is {LIMIT}"
    answer = await exchange(
        port, b"POST /echo HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Length: 1001\r\n\r\n"
    )
    assert answer.status == 413
    assert answer.json()["error"] == f"body is 1001 bytes: the limit is {LIMIT}"


async def test_a_body_that_does_not_come_gets_408(port: int) -> None:
    head = b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\n"
    started = time.monotonic()
    raw, sent = await trickle(port, b"0123456789", interval=0.2, head=head)
    elapsed = time.monotonic() - started
    answer = parse_answer(raw)
    assert answer.status == 408
    assert answer.json()["kind"] == "BodyTimeout"
    assert sent < 10
    assert SHORT.body_timeout <= elapsed < SHORT.body_timeout + 1.0, elapsed


# -- malformed requests -------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        b"GET /hello HTTP/1.1\r\nHost: t\r\nBad Header\r\n\r\n",
        b"<script> / HTTP/1.1\r\n\r\n",
        b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: t\r\n\r\n",
    ],
    ids=["header", "method", "long-line"],
)
async def test_a_malformed_request_is_answered_in_json(port: int, text: bytes) -> None:
    answer = await exchange(port, text)
    assert answer.status == 400, answer.raw[:300]
    assert answer.headers["content-type"].startswith("application/json")
    assert set(answer.json()) == {"error", "kind"}
    assert b"script" not in answer.raw


# -- serve() and the choice of event loop -------------------------------------------------

SERVE = """
import asyncio, socket, sys
from aiohttp import web
from firmlog.service.http import HTTPConfig, serve
from firmlog.service.logs import configure_logging

configure_logging("warning", json=True)  # to stderr: stdout is for this script's lines


async def loop_name(request):
    return web.Response(text=type(asyncio.get_running_loop()).__module__.split(".")[0])

app = web.Application()
app.router.add_get("/loop", loop_name)
sock = socket.socket()
sock.bind(("127.0.0.1", 0))
port = sock.getsockname()[1]
choice = None if sys.argv[1] == "default" else sys.argv[1]
serve(
    app,
    HTTPConfig(header_timeout=0.5),
    name="test service",
    sock=[sock],
    on_listening=lambda line: print(port, flush=True),
    event_loop=choice,
)
print("stopped", flush=True)
"""


def _serve_and_probe(choice: str, env: dict[str, str] | None = None) -> str:
    """Run serve() in a process on the event loop ``choice``: the loop a request ran
    on; a head that stops short must get 408 there; SIGTERM stops it."""
    proc = subprocess.Popen(
        [sys.executable, "-c", SERVE, choice],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.strip().isdigit(), (line, proc.stderr.read() if proc.stderr else "")
        port = int(line)
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(b"GET /loop HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            raw = b""
            while chunk := s.recv(4096):
                raw += chunk
        ran_on = parse_answer(raw).body.decode()
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(b"GET /loop HTTP/1.1\r\n")  # and no more: the head times out
            assert s.recv(100).startswith(b"HTTP/1.1 408 ")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        assert proc.stdout.read() == "stopped\n"
        return ran_on
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize("choice", [*EVENT_LOOPS, "default"])
def test_serve_runs_on_the_event_loop_chosen(choice: str) -> None:
    want = default_event_loop() if choice == "default" else choice
    assert _serve_and_probe(choice) == want


def test_uvloop_is_the_default_where_it_is_installed() -> None:
    assert default_event_loop() == ("uvloop" if uvloop_expected() else "asyncio")
    assert event_loop_factory("asyncio") is asyncio.new_event_loop


def _without_uvloop(tmp_path: Path) -> dict[str, str]:
    """An environment in which ``import uvloop`` fails, as where it has no wheel."""
    shadow = tmp_path / "no-uvloop"
    shadow.mkdir()
    (shadow / "uvloop.py").write_text('raise ImportError("no uvloop on this platform")\n')
    return {**os.environ, "PYTHONPATH": str(shadow)}


def test_without_uvloop_serve_falls_back_to_asyncio(tmp_path: Path) -> None:
    assert _serve_and_probe("default", _without_uvloop(tmp_path)) == "asyncio"


def test_choices_that_cannot_be_had_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(EventLoopUnavailable, match="unknown event loop 'trio'"):
        event_loop_factory("trio")
    monkeypatch.setitem(sys.modules, "uvloop", None)  # import uvloop fails
    assert default_event_loop() == "asyncio"
    with pytest.raises(EventLoopUnavailable, match="uvloop event loop is not installed here"):
        event_loop_factory("uvloop")


@pytest.mark.parametrize(
    ("program", "command"), [("firmlog-server", "serve"), ("firmlog-monitor", "run")]
)
def test_the_programs_refuse_uvloop_where_it_is_not_installed(
    tmp_path: Path, program: str, command: str
) -> None:
    args = [str(Path(sys.executable).parent / program), command, "--event-loop", "uvloop"]
    if program == "firmlog-monitor":
        args += ["--data-dir", str(tmp_path / "m"), "--log-url", "http://127.0.0.1:9"]
        args += ["--log-key", "log.example+01234567+AQ=="]
    else:
        args += ["--data-dir", str(tmp_path / "s"), "--listen", "127.0.0.1:0"]
    done = subprocess.run(
        args,
        env=_without_uvloop(tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr == (
        f"{program}: --event-loop uvloop: the uvloop event loop is not installed here (it has "
        "wheels for CPython on Linux and macOS); install uvloop, or use the asyncio event loop\n"
    )


def test_the_event_loop_may_come_from_the_environment(tmp_path: Path) -> None:
    """FIRMLOG_EVENT_LOOP is --event-loop's default; checked as strictly as the option."""
    server = str(Path(sys.executable).parent / "firmlog-server")
    args = [server, "serve", "--data-dir", str(tmp_path / "s"), "--listen", "127.0.0.1:0"]
    env = {**_without_uvloop(tmp_path), "FIRMLOG_EVENT_LOOP": "uvloop"}
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2
    assert done.stderr.startswith("firmlog-server: --event-loop uvloop: the uvloop event loop ")
    env["FIRMLOG_EVENT_LOOP"] = "trio"
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2
    assert done.stderr == (
        "firmlog-server: --event-loop trio: unknown event loop 'trio': expected one of "
        "uvloop, asyncio\n"
    )


def test_an_unknown_event_loop_is_a_usage_error() -> None:
    done = subprocess.run(
        [str(Path(sys.executable).parent / "firmlog-server"), "serve", "--event-loop", "trio"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "argument --event-loop: invalid choice: 'trio'" in done.stderr
