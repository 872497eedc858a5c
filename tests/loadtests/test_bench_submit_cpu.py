"""The write-path CPU benchmark, briefly: it drives a real log through its mix of
entries (each answer checked in the script) and reports every stage."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "loadtests" / "bench_submit_cpu.py"


def _run(*args: str) -> str:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


def test_the_benchmark_runs_the_mix_and_reports_every_stage(tmp_path: Path) -> None:
    entries = tmp_path / "entries.json"
    _run("--batch-size", "24", "--batches", "2", "--warmup", "1", "--write-entries", str(entries))
    out = _run(
        "--entries", str(entries), "--batch-size", "24", "--batches", "2", "--warmup", "1",
        "--runs", "1",
    )  # fmt: skip
    assert "48 entries in batches of 24" in out
    for stage in ("parse", "authorize", "gate", "tree", "checkpoint", "bundles", "storage"):
        assert f"  {stage} " in out, out
    assert "sqlite" in _run("--batch-size", "24", "--batches", "1", "--stop-after", "parse")
