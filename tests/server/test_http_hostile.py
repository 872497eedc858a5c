"""The log server against a hostile or merely real network, on SQLite and PostgreSQL.

- Bodies arrive in pieces: every POST and PUT goes through :class:`SplitProxy`
  (1..50-byte segments, a few ms apart), Content-Length and chunked, and any
  entry split at any points is answered exactly as if it had come whole.
- A body is the whole body: a valid entry followed, in a later segment, by
  garbage is malformed (400), by too much is too large (413).
- Compressed request bodies are refused (415) on every route and never
  inflated, not even a gzip bomb.
- Hostile query and path parameters get 400, never a 5xx; malformed requests
  get JSON that does not echo them; unknown errors are 500, not "retry" 503.
- Slow clients are cut off: a request head trickled byte by byte, a body that
  does not come, a connection that sends nothing.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import socket
import zlib
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest
from aiohttp import ClientSession
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from splitproxy import SplitProxy
from support.entries import release
from support.harness import LogUnderTest
from support.logcheck import verify_whole_log
from support.rawhttp import (
    chunked,
    connect,
    exchange,
    parse_answer,
    post_head,
    trickle,
)

from firmlog.client.entries import VendorAdmission, sign_entry
from firmlog.client.keys import generate_key
from firmlog.server.app import SERVICES
from firmlog.server.config import ConfigError, load_config
from firmlog.server.storage import StorageUnavailable
from firmlog.service.http import HTTPConfig

pytestmark = pytest.mark.every_event_loop  # support.loops: asyncio's and uvloop

VENDOR = generate_key("acme.example/release")
IMAGE = bytes(range(256)) * 64  # 16 KiB of firmware


def admission(log: LogUnderTest, vendor: str = "acme.example") -> bytes:
    return sign_entry(VendorAdmission(vendor, (VENDOR.verifier.vkey,), 1), [log.operator])


def big_release(version: str) -> bytes:
    """A release of about 5 KB: several TCP segments on any real network."""
    changelog = "\n".join(f"- fixed issue {i} in the heating controller" for i in range(110))
    raw = sign_entry(release(version, changelog=changelog), [VENDOR])
    assert 4000 < len(raw) < 16384
    return raw


async def log_size(log: LogUnderTest) -> int:
    return (await verify_whole_log(log.base, log.verifier)).checkpoint.tree_size


# -- bodies arrive in pieces ------------------------------------------------------


async def test_entries_arrive_whole_through_a_proxy_that_splits_them(
    log: LogUnderTest, session: ClientSession
) -> None:
    assert log.server is not None
    async with SplitProxy("127.0.0.1", log.server.port) as proxy:
        entries = [admission(log), big_release("1.0"), big_release("1.1")]
        for i, raw in enumerate(entries):
            async with session.post(f"{proxy.base}/v1/entries", data=raw) as resp:
                body = await resp.read()
                assert resp.status == 200, body
            assert log.check_bundle(body, raw).index == i
        # chunked, in chunks of 300 bytes, each cut again by the proxy
        raw = big_release("1.2")
        answer = await exchange(proxy.port, post_head("/v1/entries") + chunked(raw, 300))
        assert answer.status == 200, answer.body
        assert log.check_bundle(answer.body, raw).index == 3
        assert proxy.segments > 4 * len(raw) // 50
    checked = await verify_whole_log(log.base, log.verifier)
    assert checked.entries == [*entries, raw]


async def test_an_escrow_upload_arrives_whole_through_the_proxy(
    log: LogUnderTest, session: ClientSession
) -> None:
    assert log.server is not None
    image = IMAGE[:5000]
    async with SplitProxy("127.0.0.1", log.server.port) as proxy:
        for raw in (admission(log), sign_entry(release("1.0", image=image), [VENDOR])):
            async with session.post(f"{proxy.base}/v1/entries", data=raw) as resp:
                assert resp.status == 200, await resp.read()
        url = f"/v1/images/sha256/{hashlib.sha256(image).hexdigest()}"
        async with session.put(f"{proxy.base}{url}", data=image) as resp:
            assert resp.status == 201, await resp.read()
        head = f"PUT {url} HTTP/1.1\r\nHost: log\r\nConnection: close\r\n"
        answer = await exchange(
            proxy.port, f"{head}Transfer-Encoding: chunked\r\n\r\n".encode() + chunked(image, 999)
        )
        assert answer.status == 200, answer.body  # already held, the same bytes
        bad = image[:-1] + b"!"
        answer = await exchange(
            proxy.port, f"{head}Content-Length: {len(bad)}\r\n\r\n".encode() + bad
        )
        assert answer.status == 400, answer.body
    async with session.get(f"{log.base}{url}") as resp:
        assert await resp.read() == image


async def test_a_valid_entry_followed_by_garbage_in_a_later_segment_is_refused(
    log: LogUnderTest,
) -> None:
    assert log.server is not None
    port = log.server.port
    raw = admission(log)
    garbage = b"\n\xe2\x80\x94 garbage AAAA\n"
    answer = await exchange(
        port, post_head("/v1/entries", length=len(raw) + len(garbage)) + raw, garbage
    )
    assert answer.status == 400, answer.body
    assert answer.json()["kind"] == "EntryFormatError"
    # chunked: the entry in the first chunk, garbage in a later one
    answer = await exchange(
        port, post_head("/v1/entries") + chunked(raw, len(raw))[:-5], chunked(garbage, 100)
    )
    assert answer.status == 400, answer.body
    # too much, in pieces, without a Content-Length: too large, however it comes
    answer = await exchange(
        port, post_head("/v1/entries") + chunked(raw, len(raw))[:-5], chunked(b"x" * 20000, 4000)
    )
    assert answer.status == 413, answer.body
    assert "the limit is 16384" in str(answer.json()["error"])
    assert await log_size(log) == 0
    # and the entry alone, in pieces, is logged
    answer = await exchange(port, post_head("/v1/entries", length=len(raw)) + raw[:100], raw[100:])
    assert answer.status == 200, answer.body
    assert await log_size(log) == 1


@pytest.fixture
async def fast_log(database_url: str, tmp_path: Path) -> AsyncIterator[LogUnderTest]:
    server = LogUnderTest(database_url, tmp_path, batch_interval=0.002)
    await server.start()
    try:
        async with ClientSession() as session:
            await post(session, server.base, admission(server))
        yield server
    finally:
        await server.stop()


async def post(session: ClientSession, base: str, raw: bytes) -> tuple[int, bytes]:
    async with session.post(f"{base}/v1/entries", data=raw) as resp:
        return resp.status, await resp.read()


def submission(log: LogUnderTest, kind: str, n: int, at: int, noise: bytes) -> bytes:
    if kind == "admission":
        return sign_entry(
            VendorAdmission(f"v{n}.example", (VENDOR.verifier.vkey,), 1), [log.operator]
        )
    if kind == "release":
        return sign_entry(release(f"1.{n}", changelog="x" * (at % 2000)), [VENDOR])
    # Damaged copies of a text that is never logged: a logged text with damaged
    # signature lines is, by design, answered with its original bundle (200).
    valid = sign_entry(
        VendorAdmission(f"damaged-{n}-{at}.example", (VENDOR.verifier.vkey,), 1), [log.operator]
    )
    if kind == "truncated":
        return valid[: at % len(valid)]
    if kind == "flipped":
        i = at % len(valid)
        return valid[:i] + bytes([valid[i] ^ (1 << (n % 8))]) + valid[i + 1 :]
    if kind == "trailing":
        return valid + (noise or b"\n")
    if kind == "oversize":
        return valid + b"x" * (16385 - len(valid) + at % 100)
    return noise


@settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    kind=st.sampled_from(
        ["admission", "release", "truncated", "flipped", "trailing", "oversize", "noise"]
    ),
    n=st.integers(0, 10**6),
    at=st.integers(0, 10**6),
    noise=st.binary(max_size=200),
    sizes=st.lists(st.integers(1, 50), min_size=1, max_size=12),
    split_first=st.booleans(),
)
async def test_any_entry_split_at_any_points_is_answered_as_if_sent_whole(
    fast_log: LogUnderTest,
    kind: str,
    n: int,
    at: int,
    noise: bytes,
    sizes: list[int],
    split_first: bool,
) -> None:
    log = fast_log
    assert log.server is not None
    raw = submission(log, kind, n, at, noise)
    async with (
        ClientSession() as session,
        SplitProxy("127.0.0.1", log.server.port, sizes=sizes, max_delay=0.001) as proxy,
    ):
        if split_first:
            split = await post(session, proxy.base, raw)
            whole = await post(session, log.base, raw)
        else:
            whole = await post(session, log.base, raw)
            split = await post(session, proxy.base, raw)
    assert split == whole
    if kind in ("admission", "release"):
        assert whole[0] == 200, whole
    elif kind != "noise":
        assert whole[0] in (400, 403, 413), whole


# -- compressed bodies --------------------------------------------------------------


def gzip_bomb(compressed_size: int) -> bytes:
    """A gzip stream of zeros that inflates about 1000-fold (no valid end: it is never
    meant to be inflated to the end). Built by repeating one full-flushed block."""
    c = zlib.compressobj(9, zlib.DEFLATED, 31)
    zeros = bytes(1 << 20)
    head = c.compress(zeros) + c.flush(zlib.Z_FULL_FLUSH)
    block = c.compress(zeros) + c.flush(zlib.Z_FULL_FLUSH)
    return head + block * (compressed_size // len(block))


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "br", "zstd", "identity, gzip", "GZIP"])
async def test_compressed_request_bodies_are_refused_on_every_route(
    log: LogUnderTest, session: ClientSession, encoding: str
) -> None:
    body = zlib.compress(admission(log))
    sha = "ab" * 32
    for method, path in [
        ("POST", "/v1/entries"),
        ("PUT", f"/v1/images/sha256/{sha}"),
        ("GET", "/checkpoint"),
        ("GET", "/healthz"),
        ("GET", "/v1/releases"),
        ("POST", "/nowhere"),
    ]:
        async with session.request(
            method, f"{log.base}{path}", data=body, headers={"Content-Encoding": encoding}
        ) as resp:
            assert resp.status == 415, (method, path, await resp.read())
            assert (await resp.json())["kind"] == "UnsupportedContentEncoding"
    async with session.post(
        f"{log.base}/v1/entries", data=admission(log), headers={"Content-Encoding": "identity"}
    ) as resp:
        assert resp.status == 200
    assert await log_size(log) == 1


async def test_a_gzip_bomb_is_never_inflated(
    log: LogUnderTest, session: ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    """8 MiB that inflate to 8 GiB: refused at once, and no decompressor is ever made
    (aiohttp's parser, Python or C, inflates through http_parser.DeflateBuffer)."""
    from aiohttp import http_parser

    made: list[str] = []
    real_init = http_parser.DeflateBuffer.__init__

    def spy(self: object, *args: object, **kwargs: object) -> None:
        made.append(repr(args[1:2]))
        real_init(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(http_parser.DeflateBuffer, "__init__", spy)
    bomb = gzip_bomb(8 << 20)
    for path in ("/v1/entries", "/v1/images/sha256/" + "ab" * 32):
        method = "POST" if path == "/v1/entries" else "PUT"
        async with session.request(
            method, f"{log.base}{path}", data=bomb, headers={"Content-Encoding": "gzip"}
        ) as resp:
            assert resp.status == 415
    async with session.get(f"{log.base}/healthz") as resp:
        assert resp.status == 200
    assert made == [], f"the server made decompressors: {made}"


async def test_transfer_codings_other_than_chunked_are_not_implemented(
    log: LogUnderTest,
) -> None:
    assert log.server is not None
    raw = zlib.compress(admission(log))
    answer = await exchange(
        log.server.port,
        b"POST /v1/entries HTTP/1.1\r\nHost: log\r\nConnection: close\r\n"
        b"Transfer-Encoding: gzip, chunked\r\n\r\n" + chunked(raw, 100),
    )
    assert answer.status == 501, answer.body
    assert answer.json()["kind"] == "UnsupportedTransferEncoding"


# -- parameters, errors -------------------------------------------------------------


HOSTILE = [
    "/v1/releases?cursor=9223372036854775808",
    "/v1/releases?cursor=18446744073709551616&order=desc",
    "/v1/releases?cursor=99999999999999999999999999",
    "/v1/vendors?cursor=9223372036854775808",
    "/v1/vendors?cursor=-1",
    "/v1/vendors?cursor=%D9%A1%D9%A2",  # Arabic-Indic digits
    "/v1/vendors?limit=%EF%BC%91",  # a fullwidth digit one
    "/v1/vendors?limit=1e3",
    "/v1/releases?vendor=%00",
    "/v1/releases?product=a%00b",
    "/v1/releases?version=%1b%5b31m",
    "/v1/releases?vendor=" + "v" * 300,
    "/v1/releases?image_sha256=" + "AB" * 32,
    "/v1/releases?cve=CVE-1-1",
    "/v1/releases?order=sideways",
    "/v1/vendors/%00",
    "/v1/vendors/a%0Ab",
    "/v1/vendors/" + "x" * 3000,
    "/v1/entries?start=9223372036854775808",
    "/v1/entries?start=%2B1",
    "/v1/bundle/9223372036854775808",
    "/v1/bundle/0?tree_size=9223372036854775808",
    "/v1/bundle/%F0%9F%92%A5",
    "/v1/proof/inclusion?index=0&tree_size=99999999999999999999",
    "/v1/proof/consistency?old=1&new=%20%202",
    "/v1/revocations/" + "G" * 64,
    "/v1/images/sha256/" + "a" * 63 + "%00",
    "/v1/images/sha256/" + "a" * 3000,
    "/v1/bundle/" + "9" * 3000,
    "/v1/revocations/" + "g" * 3000,
]


async def test_a_long_bad_tile_path_is_not_echoed(
    log: LogUnderTest, session: ClientSession
) -> None:
    async with session.get(f"{log.base}/tile/0/{'1' * 5000}") as resp:
        assert resp.status == 404
        assert len((await resp.json())["error"]) < 300


@pytest.mark.parametrize("path", HOSTILE)
async def test_hostile_parameters_get_400_never_a_5xx(
    log: LogUnderTest, session: ClientSession, path: str
) -> None:
    async with session.get(f"{log.base}{path}") as resp:
        assert resp.status == 400, (path, await resp.read())
        err = await resp.json()
    assert err["kind"] == "BadRequest"
    assert len(err["error"]) < 300, "an error message echoes too much of the request"


async def test_unknown_errors_are_500_and_only_unavailability_is_503(
    log: LogUnderTest, session: ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert log.server is not None
    storage = log.server.app[SERVICES].storage

    async def broken(*args: object, **kwargs: object) -> None:
        raise KeyError("a bug")

    monkeypatch.setattr(storage, "search_releases", broken)
    async with session.get(f"{log.base}/v1/releases") as resp:
        assert resp.status == 500
        assert "Retry-After" not in resp.headers
        err = await resp.json()
    assert err["kind"] == "InternalError"
    assert "a bug" not in err["error"], "internal details go to the log, not to clients"

    async def unavailable(*args: object, **kwargs: object) -> None:
        raise StorageUnavailable("the disk is on fire")

    monkeypatch.setattr(storage, "search_releases", unavailable)
    async with session.get(f"{log.base}/v1/releases") as resp:
        assert resp.status == 503
        assert resp.headers["Retry-After"]
        assert (await resp.json())["kind"] == "StorageUnavailable"


MARK = "<script>alert(1)</script>"

MALFORMED = [
    pytest.param(f"GET /{MARK}{'a' * 9000} HTTP/1.1\r\nHost: log\r\n\r\n", id="long-url"),
    pytest.param(f"GET / HTTP/1.1\r\nHost: log\r\nX-A: {MARK * 1000}\r\n\r\n", id="long-header"),
    pytest.param(
        "GET / HTTP/1.1\r\nHost: log\r\n" + "".join(f"X-{i}: {MARK}\r\n" for i in range(200)),
        id="too-many-headers",
    ),
    pytest.param(f"GET /{MARK} HTTP/1.1\x00\r\nHost: log\r\n\r\n", id="bad-request-line"),
    pytest.param(f"{MARK} / HTTP/1.1\r\n\r\n", id="bad-method"),
    pytest.param(f"GET / HTTP/1.1\r\nHost: log\r\n{MARK}\r\n\r\n", id="bad-header"),
    pytest.param(
        f"POST /v1/entries HTTP/1.1\r\nHost: log\r\nTransfer-Encoding: chunked\r\n\r\n{MARK}\r\n",
        id="bad-chunk",
    ),
    pytest.param(
        "POST /v1/entries HTTP/1.1\r\nHost: log\r\nContent-Length: 5\r\n"
        f"Transfer-Encoding: chunked\r\nX: {MARK}\r\n\r\n",
        id="length-and-chunked",
    ),
    pytest.param(
        f"GET /healthz HTTP/1.1\r\nHost: log\r\nConnection: close\r\nExpect: {MARK}\r\n\r\n",
        id="expect",
    ),
]


@pytest.mark.parametrize("request_text", MALFORMED)
async def test_malformed_requests_are_answered_in_json_without_echo(
    log: LogUnderTest, request_text: str
) -> None:
    assert log.server is not None
    answer = await exchange(log.server.port, request_text.encode("latin-1"))
    assert 400 <= answer.status < 500, answer.raw[:300]
    assert answer.headers["content-type"].startswith("application/json"), answer.raw[:300]
    err = answer.json()
    assert err["error"]
    assert err["kind"]
    assert b"script" not in answer.raw, answer.raw[:500]
    async with ClientSession() as session, session.get(f"{log.base}/healthz") as resp:
        assert resp.status == 200  # and the server is fine


# -- slow clients -------------------------------------------------------------------

SHORT = HTTPConfig(header_timeout=0.5, body_timeout=0.5, idle_timeout=1.0)


@pytest.fixture
async def impatient_log(database_url: str, tmp_path: Path) -> AsyncIterator[LogUnderTest]:
    server = LogUnderTest(database_url, tmp_path)
    server.config = replace(server.config, http=SHORT)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


async def test_a_request_head_sent_a_byte_at_a_time_gets_408(impatient_log: LogUnderTest) -> None:
    log = impatient_log
    assert log.server is not None
    request = b"GET /healthz HTTP/1.1\r\nHost: log\r\nUser-Agent: slowloris\r\nX-Pad: 0123\r\n\r\n"
    answer, sent = await trickle(log.server.port, request)
    assert sent < len(request), "the server waited for the whole trickled head"
    got = parse_answer(answer)
    assert got.status == 408
    assert got.json()["kind"] == "HeaderTimeout"
    assert got.headers["connection"] == "close"


async def test_an_entry_body_that_does_not_come_gets_408(impatient_log: LogUnderTest) -> None:
    log = impatient_log
    assert log.server is not None
    raw = admission(log)
    head = post_head("/v1/entries", length=len(raw))
    answer, sent = await trickle(log.server.port, raw, head=head)
    assert sent < len(raw)
    got = parse_answer(answer)
    assert got.status == 408, got.body
    assert got.json()["kind"] == "BodyTimeout"
    assert await log_size(log) == 0


async def test_an_image_upload_that_stalls_gets_408(impatient_log: LogUnderTest) -> None:
    log = impatient_log
    assert log.server is not None
    image = b"tiny firmware " * 8
    async with ClientSession() as session:
        for raw in (admission(log), sign_entry(release("1.0", image=image), [VENDOR])):
            assert (await post(session, log.base, raw))[0] == 200
    url = f"/v1/images/sha256/{hashlib.sha256(image).hexdigest()}"
    head = f"PUT {url} HTTP/1.1\r\nHost: log\r\nContent-Length: {len(image)}\r\n\r\n".encode()
    answer, sent = await trickle(log.server.port, image, head=head)
    assert sent < len(image)
    got = parse_answer(answer)
    assert got.status == 408, got.body
    assert got.json()["kind"] == "BodyTimeout"
    assert not (log.config.escrow_path / "sha256" / url.rsplit("/", 1)[1]).exists()


async def test_idle_connections_are_closed(impatient_log: LogUnderTest) -> None:
    log = impatient_log
    assert log.server is not None
    reader, writer = await connect(log.server.port)
    try:
        assert await asyncio.wait_for(reader.read(), 30) == b""  # nothing sent: closed
    finally:
        writer.close()
    reader, writer = await connect(log.server.port)
    try:
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: log\r\n\r\n")  # keep-alive
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
        assert head.startswith(b"HTTP/1.1 200")
        length = int(parse_answer(head).headers["content-length"])
        await reader.readexactly(length)
        assert await asyncio.wait_for(reader.read(), 30) == b""  # then idle: closed
    finally:
        writer.close()


# -- configuration ------------------------------------------------------------------


def test_http_timeouts_come_from_toml_and_environment(tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text(
        'origin = "a.example/log"\n[http]\nheader_timeout = 5\nidle_timeout = 20.5\n'
    )
    cfg = load_config(tmp_path, environ={})
    assert cfg.http == HTTPConfig(header_timeout=5.0, body_timeout=30.0, idle_timeout=20.5)
    cfg = load_config(
        tmp_path, environ={"FIRMLOG_HTTP_BODY_TIMEOUT": "7", "FIRMLOG_HTTP_MIN_UPLOAD_RATE": "4096"}
    )
    assert (cfg.http.body_timeout, cfg.http.min_upload_rate) == (7.0, 4096)
    assert load_config(Path(tmp_path / "none"), origin="a.example/log", environ={}).http == (
        HTTPConfig()
    )


@pytest.mark.parametrize(
    ("text", "env", "message"),
    [
        ("[http]\nheader_timeout = 0\n", {}, "http.header_timeout must be 0.1..3600"),
        ("[http]\nidle_timeout = -1.0\n", {}, "http.idle_timeout must be 0.1..3600"),
        ('[http]\nbody_timeout = "30"\n', {}, "http.body_timeout must be float"),
        ("[http]\nread_timeout = 3\n", {}, "unknown setting http.read_timeout"),
        ("http = 3\n", {}, "[http] must be a table"),
        ("", {"FIRMLOG_HTTP_IDLE_TIMEOUT": "soon"}, "FIRMLOG_HTTP_IDLE_TIMEOUT must be a number"),
        ("", {"FIRMLOG_HTTP_IDLE_TIMEOUT": "nan"}, "http.idle_timeout must be 0.1..3600"),
        ("[http]\nmin_upload_rate = 10\n", {}, "at least 1024 bytes per second"),
        ("", {"FIRMLOG_HTTP_MIN_UPLOAD_RATE": "1e6"}, "must be an integer, got '1e6'"),
    ],
)
def test_bad_http_settings_fail_fast(
    tmp_path: Path, text: str, env: dict[str, str], message: str
) -> None:
    (tmp_path / "config.toml").write_text('origin = "a.example/log"\n' + text)
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path, environ=env)
    assert message in str(info.value)


# -- serve: web.run_app with the log's connections ----------------------------------

SERVE = """
import socket, sys
from pathlib import Path
from firmlog.client.keys import generate_key
from firmlog.server.app import make_app
from firmlog.server.config import ServerConfig
from firmlog.service.http import HTTPConfig, serve
from firmlog.service.logs import configure_logging

configure_logging("warning", json=True)  # to stderr: stdout is for this script's lines
key, operator = generate_key("serve.example/log"), generate_key("operator.example")
config = ServerConfig(data_dir=Path(sys.argv[1]), origin=key.name).validate()
sock = socket.socket()
sock.bind(("127.0.0.1", 0))
port = sock.getsockname()[1]
serve(
    make_app(config, key, [operator.verifier]),
    HTTPConfig(header_timeout=0.5),
    name="log server",
    sock=[sock],
    on_listening=lambda line: print(port, line, flush=True),
)
print("stopped", flush=True)
"""


def test_serve_runs_the_app_on_bound_sockets_until_sigterm(tmp_path: Path) -> None:
    import signal
    import subprocess
    import sys
    import urllib.request

    proc = subprocess.Popen(
        [sys.executable, "-c", SERVE, str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        port, line = proc.stdout.readline().split(" ", 1)
        assert line.startswith("listening on http://127.0.0.1:")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10) as resp:
            assert json.loads(resp.read())["status"] == "ok"
        with socket.create_connection(("127.0.0.1", int(port)), timeout=10) as s:
            s.sendall(b"GET /healthz HTTP/1.1\r\n")  # and no more: the head times out
            assert s.recv(100).startswith(b"HTTP/1.1 408 ")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        assert proc.stdout.read() == "stopped\n"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
