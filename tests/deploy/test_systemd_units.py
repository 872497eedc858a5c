"""deploy/systemd: the units pass ``systemd-analyze verify`` (their ExecStart
pointed at this checkout's programs, which must exist for verify) with no
warning at all, and keep their hardening. Skipped only where systemd-analyze
is not installed; where it is, a failing check fails, in CI too."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from deployfiles import SYSTEMD

ANALYZE = shutil.which("systemd-analyze")
UNITS = sorted(SYSTEMD.glob("*.service"))
BIN = Path(sys.executable).parent  # this checkout's firmlog-server and firmlog-monitor
INSTALLED = "/opt/firmlog/venv/bin"
HARDENING = (
    "NoNewPrivileges=true",
    "ProtectSystem=strict",
    "ProtectHome=true",
    "PrivateTmp=true",
    "PrivateDevices=true",
    "RestrictSUIDSGID=true",
    "CapabilityBoundingSet=",
    "SystemCallFilter=@system-service",
    "UMask=0077",
)


def verify(unit: Path, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    assert ANALYZE is not None
    text = unit.read_text()
    assert f"ExecStart={INSTALLED}/" in text
    copy = tmp_path / unit.name
    copy.write_text(text.replace(INSTALLED, str(BIN)))
    return subprocess.run(
        [ANALYZE, "verify", "--man=no", str(copy)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=tmp_path,
    )


def test_there_are_units_for_the_server_and_the_monitor() -> None:
    assert [u.name for u in UNITS] == ["firmlog-monitor.service", "firmlog-server.service"]


@pytest.mark.parametrize("unit", UNITS, ids=lambda u: u.name)
def test_the_unit_is_hardened(unit: Path) -> None:
    lines = set(unit.read_text().splitlines())
    missing = [h for h in HARDENING if h not in lines]
    assert missing == []
    assert "DynamicUser=true" in lines or any(line.startswith("User=") for line in lines)
    data = next(line.split("=", 1)[1] for line in lines if line.startswith("StateDirectory="))
    assert f"ReadWritePaths=/var/lib/{data}" in lines
    assert f"--data-dir /var/lib/{data}" in unit.read_text()


@pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze is not installed here")
@pytest.mark.parametrize("unit", UNITS, ids=lambda u: u.name)
def test_systemd_analyze_verify_passes(unit: Path, tmp_path: Path) -> None:
    result = verify(unit, tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "", result.stderr  # verify warns on stderr, exit 0


@pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze is not installed here")
@pytest.mark.parametrize(
    ("old", "new"),
    [("ProtectSystem=strict", "ProtectSytem=strict"), ("ProtectHome=true", "ProtectHome=maybe")],
)
def test_verify_catches_a_broken_unit(tmp_path: Path, old: str, new: str) -> None:
    broken = tmp_path / "src" / "firmlog-server.service"
    broken.parent.mkdir()
    broken.write_text((SYSTEMD / "firmlog-server.service").read_text().replace(old, new))
    result = verify(broken, tmp_path)
    assert result.returncode != 0 or result.stderr.strip() != ""
