"""The README's commands, run as a newcomer pastes them: the quickstart's log and
the ten lines of real use, in order, in a fresh directory."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
README = (REPO / "README.md").read_text(encoding="utf-8")


def sh_block(section: str) -> str:
    """The first ```sh block of the README section whose heading is ``section``."""
    start = README.index(f"\n## {section}\n")
    match = re.compile(r"```sh\n(.*?)```", re.S).search(README, start)
    assert match is not None, f"no sh block in {section}"
    return match.group(1)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_healthy(base: str, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the log exited"
        try:
            with urllib.request.urlopen(f"{base}/healthz", timeout=2) as resp:  # loopback
                if resp.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"the log at {base} did not answer /healthz within {timeout} s")


def test_the_quickstart_serves_the_log() -> None:
    block = sh_block("Quickstart")
    assert "./scripts/serve" in block
    assert "./scripts/test" in block


def test_ten_lines_of_real_use_paste_and_run(tmp_path: Path) -> None:
    """The log runs as ./scripts/serve runs it (firmlog-server serve on a fresh
    firmlog-data); the lines run as written, with the log's port where they
    say 8080 (this machine may use 8080 for something else)."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    (tmp_path / ".venv").symlink_to(BIN.parent)  # "$PWD/.venv/bin"
    server = subprocess.Popen(
        [
            str(BIN / "firmlog-server"),
            "serve",
            "--data-dir",
            "firmlog-data",
            "--listen",
            f"127.0.0.1:{port}",
        ],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        wait_healthy(base, server)
        script = sh_block("Ten lines of real use").replace("127.0.0.1:8080", f"127.0.0.1:{port}")
        done = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", script],
            cwd=tmp_path,
            env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
        assert "may be installed" in done.stdout + done.stderr
        assert (tmp_path / "mirror" / "checkpoint").is_file()
        assert (tmp_path / "release.tlog-proof").read_bytes().startswith(b"c2sp.org/tlog-proof")
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    assert os.path.exists(tmp_path / "firmlog-data" / "log.pub")
