"""deploy/nginx: the config passes ``nginx -t`` (its absolute paths moved under
a temporary prefix), and a real nginx with it in front of a real log server
caches tiles with year-long immutable headers and passes the checkpoint
through uncached. Skipped only where nginx is not installed."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from deployfiles import NGINX
from support.harness import LogUnderTest

NGINX_BIN = shutil.which("nginx") or (
    "/usr/sbin/nginx" if os.access("/usr/sbin/nginx", os.X_OK) else None
)
pytestmark = pytest.mark.skipif(NGINX_BIN is None, reason="nginx is not installed here")
TIMEOUT_S = 30
# Where the config's absolute paths go under the prefix.
MOVES = {
    "/run/nginx.pid": "run/nginx.pid",
    "/var/log/nginx/": "logs/",
    "/var/cache/nginx/": "cache/",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def prefixed(prefix: Path, upstream: str, listen: int, *, as_root_workers: bool = False) -> Path:
    """deploy/nginx/nginx.conf under ``prefix``, with ``upstream`` as firmlog-upstream.conf."""
    text = (NGINX / "nginx.conf").read_text()
    for old, new in MOVES.items():
        text = text.replace(old, new)
    directives = re.sub(r"#.*", "", text)
    left = re.findall(r"(?<![\w.])/(?:var|run|etc|tmp|srv|opt|usr)/\S*", directives)
    assert left == [], f"absolute paths this test does not move: {left}"
    assert "listen 80;" in text
    text = text.replace("listen 80;", f"listen 127.0.0.1:{listen};")
    if as_root_workers:  # the pytest tmp dir is root's alone: workers must read the cache
        text = "user root root;\n" + text
    for d in ("run", "logs", "cache"):
        (prefix / d).mkdir(parents=True, exist_ok=True)
    (prefix / "firmlog-upstream.conf").write_text(upstream)
    conf = prefix / "nginx.conf"
    conf.write_text(text)
    return conf


def nginx_t(prefix: Path, conf: Path) -> subprocess.CompletedProcess[str]:
    assert NGINX_BIN is not None
    return subprocess.run(
        [NGINX_BIN, "-t", "-p", f"{prefix}/", "-c", str(conf)],
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        check=False,
    )


def test_nginx_accepts_the_config_with_the_local_upstream(tmp_path: Path) -> None:
    upstream = (NGINX / "upstream-local.conf").read_text()
    result = nginx_t(tmp_path, prefixed(tmp_path, upstream, free_port()))
    assert result.returncode == 0, result.stderr
    assert "test is successful" in result.stderr


def test_nginx_accepts_the_config_with_the_compose_upstream(tmp_path: Path) -> None:
    # nginx resolves upstream names at start: the compose names become loopback here.
    upstream = (NGINX / "upstream-compose.conf").read_text()
    assert "server log1:8080" in upstream
    upstream = re.sub(r"server log\d:", "server 127.0.0.1:", upstream)
    result = nginx_t(tmp_path, prefixed(tmp_path, upstream, free_port()))
    assert result.returncode == 0, result.stderr


def test_nginx_t_refuses_a_broken_config(tmp_path: Path) -> None:
    upstream = (NGINX / "upstream-local.conf").read_text()
    conf = prefixed(tmp_path, upstream, free_port())
    conf.write_text(conf.read_text().replace("proxy_cache_lock on;", "proxy_cache_lock on"))
    result = nginx_t(tmp_path, conf)
    assert result.returncode != 0
    assert "emerg" in result.stderr


@pytest.fixture
def nginx_in_front(tmp_path: Path) -> Iterator[tuple[Path, int, list[int]]]:
    """Yields (prefix, nginx port, [upstream port]); the caller starts the upstream."""
    prefix, port, upstream_port = tmp_path / "nginx", free_port(), free_port()
    upstream = (
        (NGINX / "upstream-local.conf")
        .read_text()
        .replace("127.0.0.1:8080", f"127.0.0.1:{upstream_port}")
    )
    conf = prefixed(prefix, upstream, port, as_root_workers=os.geteuid() == 0)
    assert NGINX_BIN is not None
    proc = subprocess.Popen(
        [NGINX_BIN, "-p", f"{prefix}/", "-c", str(conf), "-g", "daemon off;"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + TIMEOUT_S
        while True:
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            assert time.monotonic() < deadline, "nginx did not listen"
            time.sleep(0.05)
        yield prefix, port, [upstream_port]
    finally:
        proc.terminate()
        proc.wait(timeout=TIMEOUT_S)


async def test_nginx_caches_tiles_for_a_year_and_not_the_checkpoint(
    tmp_path: Path, nginx_in_front: tuple[Path, int, list[int]]
) -> None:
    _, port, (upstream_port,) = nginx_in_front
    log = LogUnderTest(f"sqlite:///{tmp_path / 'log.db'}", tmp_path / "data")
    await log.start(port=upstream_port)
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=TIMEOUT_S)) as s:
            for i in range(3):
                status, _ = await log.submit(s, log.entry(i))
                assert status == 200
            front = f"http://127.0.0.1:{port}"
            async with s.get(f"{log.base}/tile/0/000.p/3") as direct:
                tile = await direct.read()
            seen = []
            for _ in range(2):
                async with s.get(f"{front}/tile/0/000.p/3") as resp:
                    assert resp.status == 200
                    assert await resp.read() == tile
                    assert resp.headers["Cache-Control"] == "public, max-age=31536000, immutable"
                    seen.append(resp.headers["X-Cache-Status"])
            assert seen == ["MISS", "HIT"]
            async with s.get(f"{front}/tile/0/001") as resp:  # beyond the tree
                assert resp.status == 404
                assert "immutable" not in resp.headers.get("Cache-Control", "")
            async with s.get(f"{front}/checkpoint") as resp:
                assert resp.status == 200
                assert resp.headers["Cache-Control"] == "public, max-age=1"
                assert "X-Cache-Status" not in resp.headers
                assert (await resp.read()).startswith(log.log_key.name.encode() + b"\n3\n")
            async with s.post(f"{front}/tile/0/000.p/3", data=b"x") as resp:
                assert resp.status == 403
    finally:
        await log.stop()
        await asyncio.sleep(0)
