"""What the services' command lines share: --version, and one-line refusals."""

from __future__ import annotations

import socket
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest

from firmlog.service.cli import ListenError, bind, parse_listen

BIN = Path(sys.executable).parent


@pytest.mark.parametrize("program", ["firmlog-server", "firmlog-monitor"])
def test_version_names_the_program_and_its_installed_version(program: str) -> None:
    done = subprocess.run(
        [str(BIN / program), "--version"], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"{program} {version(program)}\n"


@pytest.mark.parametrize("program", ["firmlog-server", "firmlog-monitor"])
def test_every_option_says_what_it_is_for(program: str) -> None:
    command = "serve" if program == "firmlog-server" else "run"
    done = subprocess.run(
        [str(BIN / program), command, "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "--log-level {debug,info,warning,error}" in done.stdout
    assert "the least level logged (default info)" in done.stdout


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("127.0.0.1:8080", ("127.0.0.1", 8080)),
        ("[::1]:0", ("::1", 0)),
        ("host:65535", ("host", 65535)),
    ],
)
def test_parse_listen(value: str, expected: tuple[str, int]) -> None:
    assert parse_listen(value) == expected


@pytest.mark.parametrize("value", ["8080", ":8080", "host:", "host:http", "host:65536", "host:-1"])
def test_parse_listen_refuses(value: str) -> None:
    with pytest.raises(ListenError, match="--listen must be HOST:PORT"):
        parse_listen(value)


def test_bind_says_when_the_address_is_taken() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ListenError, match="already in use; stop the program"):
            bind("127.0.0.1", port)


def test_bind_says_when_the_address_is_not_this_machines() -> None:
    with pytest.raises(ListenError, match="not one of this machine's"):
        bind("192.0.2.1", 0)
