"""LogClient against misbehaving servers: real sockets on 127.0.0.1, no mocks.

``timeout`` is a deadline for the whole request, not for each read: a server
that trickles its answer a byte at a time is cut off. A body shorter than its
Content-Length, a malformed or oversized Content-Length, and an oversized
body are transport errors, never data.

A test of the deadline asserts that the client gave up while the server still
had bytes to send (``Script.sent < Script.total``): no test measures a duration.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import pytest

from firmlog.client.errors import HTTPStatusError, TransportError
from firmlog.client.online import LogClient


@dataclass
class Script:
    """What the server does on each connection, after reading the request head:
    send each ``(data, pause)`` step, pausing after it, then close."""

    steps: Sequence[tuple[bytes, float]]
    sent: int = 0  # bytes the server got to send before the client went away
    requests: list[bytes] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(len(data) for data, _ in self.steps)


def trickled(data: bytes, pause: float = 0.1) -> list[tuple[bytes, float]]:
    return [(data[i : i + 1], pause) for i in range(len(data))]


@contextlib.contextmanager
def misbehaving(script: Script) -> Iterator[str]:
    """A server on 127.0.0.1 playing ``script`` to every client; yields its base URL."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    stop = threading.Event()

    def serve(conn: socket.socket) -> None:
        with conn:
            conn.settimeout(30)
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = conn.recv(4096)
                if not chunk:
                    return
                head += chunk
            script.requests.append(head)
            for data, pause in script.steps:
                try:
                    conn.sendall(data)
                except OSError:  # the client gave up
                    return
                script.sent += len(data)
                if stop.wait(pause):
                    return

    def accept() -> None:
        listener.settimeout(0.05)  # to see ``stop``: closing does not wake accept()
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        thread.join(timeout=10)
        listener.close()


OK_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 40\r\n\r\n"
OK_BODY = b"test.firmlog.example/log\n1\nAAAAAAAAAAA\n\n"


def test_a_server_that_trickles_its_headers_is_cut_off_at_the_deadline() -> None:
    script = Script(trickled(OK_HEAD + OK_BODY))  # ~11 s, each byte well within the timeout
    with misbehaving(script) as url:
        with pytest.raises(TransportError, match="timed out") as info:
            LogClient(url, timeout=1.0).checkpoint()
        assert not isinstance(info.value, HTTPStatusError)
        assert script.sent < script.total, "the client waited for the whole trickle"


def test_a_server_that_trickles_its_body_is_cut_off_at_the_deadline() -> None:
    script = Script([(OK_HEAD, 0), *trickled(OK_BODY, 0.2)])  # ~8 s
    with misbehaving(script) as url:
        with pytest.raises(TransportError, match="timed out"):
            LogClient(url, timeout=1.0).checkpoint()
        assert script.sent < script.total


def test_an_error_answer_is_read_only_until_the_deadline() -> None:
    head = b"HTTP/1.1 404 Not Found\r\nContent-Length: 100\r\n\r\n"
    script = Script([(head, 0), *trickled(b'{"error": "no such tile"}' + b" " * 75, 0.1)])
    with misbehaving(script) as url:
        with pytest.raises(HTTPStatusError) as info:
            LogClient(url, timeout=1.0).get("tile/0/000")
        assert info.value.status == 404
        assert script.sent < script.total


def test_a_body_shorter_than_its_content_length_is_a_transport_error() -> None:
    script = Script([(OK_HEAD + OK_BODY[:25], 0)])  # then the server closes
    with (
        misbehaving(script) as url,
        pytest.raises(TransportError, match="ended after 25 of its 40 bytes"),
    ):
        LogClient(url).checkpoint()


def test_a_chunked_body_cut_short_is_a_transport_error() -> None:
    head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    script = Script([(head + b"28\r\n" + OK_BODY[:20], 0)])
    with misbehaving(script) as url, pytest.raises(TransportError):
        LogClient(url).checkpoint()


@pytest.mark.parametrize(
    "length", [b"12abc", b"-1", b"1_0", b"+40", b"40, 41", b"99999999999999999999999"]
)
def test_a_malformed_content_length_is_a_transport_error(length: bytes) -> None:
    head = b"HTTP/1.1 200 OK\r\nContent-Length: " + length + b"\r\n\r\n"
    script = Script([(head + OK_BODY, 0)])
    with misbehaving(script) as url, pytest.raises(TransportError, match="Content-Length"):
        LogClient(url).checkpoint()


def test_two_different_content_lengths_are_a_transport_error() -> None:
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 40\r\nContent-Length: 41\r\n\r\n"
    script = Script([(head + OK_BODY, 0)])
    with misbehaving(script) as url, pytest.raises(TransportError, match="Content-Length"):
        LogClient(url).checkpoint()


def test_a_declared_size_beyond_the_cap_is_refused_without_reading_it() -> None:
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 1000000000000\r\n\r\n"
    script = Script([(head, 0), *[(b"x" * 1000, 0.05)] * 200])
    with misbehaving(script) as url:
        with pytest.raises(TransportError, match="more than the 1000 accepted"):
            LogClient(url, max_response_size=1000).checkpoint()
        assert script.sent < script.total


@pytest.mark.parametrize("framing", ["chunked", "close"])
def test_an_oversized_body_without_a_length_is_refused(framing: str) -> None:
    body = b"y" * 5000
    if framing == "chunked":
        answer = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        answer += b"".join(b"3e8\r\n" + body[i : i + 1000] + b"\r\n" for i in range(0, 5000, 1000))
        answer += b"0\r\n\r\n"
    else:
        answer = b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n" + body
    with (
        misbehaving(Script([(answer, 0)])) as url,
        pytest.raises(TransportError, match="larger than the 1000 bytes"),
    ):
        LogClient(url, max_response_size=1000).checkpoint()


def test_an_answer_in_many_small_segments_is_read_whole() -> None:
    answer = OK_HEAD + OK_BODY
    steps = [(answer[i : i + 3], 0.001) for i in range(0, len(answer), 3)]
    script = Script(steps)
    with misbehaving(script) as url:
        assert LogClient(url, timeout=10).checkpoint() == OK_BODY
    assert script.requests[0].startswith(b"GET /checkpoint HTTP/1.1\r\n")


def test_a_post_sends_its_whole_body_within_the_deadline() -> None:
    answer = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    script = Script([(answer, 0)])
    with misbehaving(script) as url:
        assert LogClient(url).submit(b"an entry") == b"ok"
    assert b"Content-Length: 8\r\n" in script.requests[0]
