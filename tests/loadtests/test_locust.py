"""The locust run script, briefly: it installs locust, loads a fresh log with the
three kinds of users, checks the log afterwards and writes locust's reports."""

from __future__ import annotations

import csv
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_the_locust_script_writes_its_reports_and_nothing_fails(tmp_path: Path) -> None:
    out = tmp_path / "report"
    done = subprocess.run(
        [
            str(REPO / "scripts" / "locust"),
            "--users",
            "6",
            "--run-time",
            "6",
            "--vendors",
            "3",
            "--releases",
            "260",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "checkpoint signed by the log key" in done.stdout  # the log was mirrored and checked
    assert (out / "report.html").read_text(encoding="utf-8").lstrip().startswith("<!DOCTYPE html>")
    rows = {r["Name"]: r for r in csv.DictReader((out / "firmlog_stats.csv").open())}
    for name in ("POST /v1/entries", "GET /v1/bundle/[id]", "GET /checkpoint"):
        assert int(rows[name]["Request Count"]) > 0, name
    assert int(rows["Aggregated"]["Failure Count"]) == 0, rows["Aggregated"]
