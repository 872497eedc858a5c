"""The ``firmlog`` commands for scripts and researchers, run as subprocesses against a
real log: --version, help defaults, --json, FIRMLOG_LOG/FIRMLOG_LOG_KEY, log info,
search, get, mirror --verify, inspect of a signer key."""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.entries import IMAGE, VENDOR_KEY, release
from support.livelog import LiveLog

from firmlog.client.bundle import ProofBundle
from firmlog.client.cli import build_parser
from firmlog.client.entries import parse_entry, sign_entry
from firmlog.client.keys import generate_key

FILLER = 260  # past the first full tile: level-0 tile 000 full, a level-1 tile


def firmlog(
    cwd: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("FIRMLOG")}
    return subprocess.run(
        [sys.executable, "-m", "firmlog.client.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**base, **(env or {})},
    )


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stderr
    return result.stdout


def ok_json(result: subprocess.CompletedProcess[str]) -> Any:
    doc = json.loads(ok(result))
    assert doc["ok"] is True
    return doc


def failed(result: subprocess.CompletedProcess[str], code: int, words: str) -> None:
    """The command failed with ``code``, saying ``words`` on stderr, with no traceback."""
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    assert words in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


class Logged:
    """A log holding an admission, three releases of acme.example and filler entries."""

    def __init__(self, live: LiveLog, cwd: Path) -> None:
        self.live = live
        self.cwd = cwd
        self.url = live.url
        self.vkey = live.log_key.verifier.vkey
        live.admit_vendor()
        self.releases = [
            sign_entry(release("1.0"), [VENDOR_KEY]),
            sign_entry(release("2.0", fixes=("CVE-2024-3094",)), [VENDOR_KEY]),
            sign_entry(release("3.0", image=b"another image"), [VENDOR_KEY]),
        ]
        self.bundles = [live.submit(e) for e in self.releases]
        live.submit_many(live.filler(0, FILLER))
        self.size = 1 + len(self.releases) + FILLER
        (cwd / "firmware.bin").write_bytes(IMAGE)
        (cwd / "release.note").write_bytes(self.releases[0])
        (cwd / "release.tlog-proof").write_bytes(self.bundles[0])
        (cwd / "device.policy").write_text(f"log {self.vkey}\nquorum none\n")


@pytest.fixture(scope="module")
def logged(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Logged]:
    tmp_path = tmp_path_factory.mktemp("cli-read")
    cwd = tmp_path / "work"
    cwd.mkdir()
    with LiveLog(tmp_path / "log") as live:
        yield Logged(live, cwd)


# -- version and help ---------------------------------------------------------------------


def _parsers(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in dict.fromkeys(action.choices.values()):
                yield from _parsers(sub)


def test_every_option_has_help_showing_its_default() -> None:
    parsers = list(_parsers(build_parser()))
    names = {p.prog for p in parsers}
    for prog in ("log info", "search", "get", "mirror", "release create", "evidence verify"):
        assert f"firmlog {prog}" in names
    for parser in parsers:
        formatter = parser._get_formatter()
        for action in parser._actions:
            if isinstance(action, (argparse._HelpAction, argparse._VersionAction)):
                continue
            if isinstance(action, argparse._SubParsersAction):
                continue
            where = f"{parser.prog} {'/'.join(action.option_strings) or action.dest}"
            assert action.help, f"{where} has no help text"
            if action.option_strings:
                shown = formatter._get_help_string(action) or ""
                assert "default" in shown or "required" in shown, f"{where}: {shown!r}"


def test_version_and_help_text(tmp_path: Path) -> None:
    out = ok(firmlog(tmp_path, "--version"))
    assert out.strip() == "firmlog 0.1.0"
    text = ok(firmlog(tmp_path, "search", "--help"))
    assert "(default: 100)" in text  # --limit
    assert "(default: 30.0)" in text  # --timeout
    assert "$FIRMLOG_LOG" in text
    text = ok(firmlog(tmp_path, "release", "create", "--help"))
    assert "(default: stable)" in text
    assert "(required)" in text


# -- environment --------------------------------------------------------------------------


def test_firmlog_log_and_log_key_from_the_environment(logged: Logged) -> None:
    env = {"FIRMLOG_LOG": logged.url, "FIRMLOG_LOG_KEY": logged.vkey}
    doc = ok_json(firmlog(logged.cwd, "log", "info", "--json", env=env))
    assert doc["log_key_pinned"] is True
    assert doc["tree_size"] == logged.size
    # Options win over the environment.
    env_down = {"FIRMLOG_LOG": closed_port_url(), "FIRMLOG_LOG_KEY": "not a key"}
    doc = ok_json(
        firmlog(
            logged.cwd,
            "log",
            "info",
            "--log",
            logged.url,
            "--log-key",
            logged.vkey,
            "--json",
            env=env_down,
        )
    )
    assert doc["origin"] == logged.live.log_key.name
    failed(firmlog(logged.cwd, "log", "info", env=env_down), 2, "--log-key: verifier key")
    env_down = {"FIRMLOG_LOG": closed_port_url()}
    failed(firmlog(logged.cwd, "log", "info", env=env_down), 3, "transport error")
    # Neither: the same error as a required option.
    failed(firmlog(logged.cwd, "log", "info"), 2, "the following arguments are required: --log")
    failed(
        firmlog(logged.cwd, "mirror", "--dir", "m"),
        2,
        "the following arguments are required: --log-key",
    )
    failed(
        firmlog(logged.cwd, "mirror", "--dir", "m", "--log-key", logged.vkey),
        2,
        "the following arguments are required: --log",
    )
    # submit and get take it too
    env_log = {"FIRMLOG_LOG": logged.url}
    out = ok(firmlog(logged.cwd, "submit", "release.note", env=env_log))
    assert ProofBundle.parse(out.encode()).index == 1
    ok_json(firmlog(logged.cwd, "get", "--index", "0", "--json", env=env))


# -- log info -----------------------------------------------------------------------------


def test_log_info(logged: Logged) -> None:
    out = ok(firmlog(logged.cwd, "log", "info", "--log", logged.url))
    assert f"log         {logged.live.log_key.name}" in out
    assert f"tree size   {logged.size}" in out
    assert f"log key     {logged.vkey}" in out
    assert "not pinned" in out
    assert f"operator    {logged.live.operator.verifier.vkey}" in out
    assert "witnesses   none" in out
    doc = ok_json(firmlog(logged.cwd, "log", "info", "--log", logged.url, "--json"))
    assert doc["log_key_pinned"] is False
    assert doc["operator_keys"] == [logged.live.operator.verifier.vkey]
    assert doc["witness_policy"] is None
    assert doc["witnesses"] == []
    assert doc["quorum"] is None
    assert set(doc) == {
        "ok", "url", "origin", "tree_size", "root_hash", "log_key", "log_key_pinned",
        "operator_keys", "witness_policy", "witnesses", "quorum", "checkpoint",
    }  # fmt: skip
    pinned = ok(firmlog(logged.cwd, "log", "info", "--log", logged.url, "--log-key", logged.vkey))
    assert "verified with --log-key" in pinned


def test_log_info_mistakes(logged: Logged) -> None:
    other = generate_key(logged.live.log_key.name).verifier.vkey  # same name, other key
    wrong = firmlog(logged.cwd, "log", "info", "--log", logged.url, "--log-key", other, "--json")
    failed(wrong, 1, "not the --log-key")
    doc = json.loads(wrong.stdout)
    assert doc["ok"] is False
    assert doc["exit_code"] == 1
    assert doc["kind"] == "SignatureError"
    failed(firmlog(logged.cwd, "log", "info", "--log", "ftp://x"), 2, "--log: log URL must be")
    failed(
        firmlog(logged.cwd, "log", "info", "--log", logged.url, "--log-key", "nope"), 2, "--log-key"
    )
    down = firmlog(logged.cwd, "log", "info", "--log", closed_port_url(), "--json")
    failed(down, 3, "transport error")
    assert json.loads(down.stdout)["kind"] == "TransportError"


# -- search -------------------------------------------------------------------------------


def test_search(logged: Logged) -> None:
    out = ok(firmlog(logged.cwd, "search", "--log", logged.url, "--vendor", "acme.example"))
    lines = out.splitlines()
    assert lines[0].split() == [
        "INDEX", "VENDOR", "PRODUCT", "VERSION", "SECVER", "CHANNEL", "REVOKED", "ID"
    ]  # fmt: skip
    ids = [parse_entry(e).identity.hex() for e in logged.releases]
    assert [line.split()[0] for line in lines[1:]] == ["1", "2", "3"]
    assert lines[2].split()[3] == "2.0"
    assert lines[2].split()[-1] == ids[1]

    doc = ok_json(
        firmlog(logged.cwd, "search", "--log", logged.url, "--cve", "cve-2024-3094", "--json")
    )
    assert [r["id"] for r in doc["releases"]] == [ids[1]]
    assert doc["next_cursor"] is None
    assert doc["releases"][0]["release"]["fixes"] == ["CVE-2024-3094"]
    digest = hashlib.sha256(b"another image").hexdigest().upper()
    doc = ok_json(firmlog(logged.cwd, "search", "--log", logged.url, "--digest", digest, "--json"))
    assert [r["index"] for r in doc["releases"]] == [3]
    doc = ok_json(
        firmlog(
            logged.cwd,
            "search",
            "--log",
            logged.url,
            "--version",
            "1.0",
            "--product",
            "router-9000",
            "--json",
        )
    )
    assert [r["index"] for r in doc["releases"]] == [1]

    # paging
    first = firmlog(logged.cwd, "search", "--log", logged.url, "--limit", "2")
    assert len(ok(first).splitlines()) == 3
    assert "more results: --cursor 2" in first.stderr
    doc = ok_json(
        firmlog(
            logged.cwd, "search", "--log", logged.url, "--limit", "2", "--cursor", "2", "--json"
        )
    )
    assert [r["index"] for r in doc["releases"]] == [3]
    doc = ok_json(
        firmlog(logged.cwd, "search", "--log", logged.url, "--limit", "1", "--all", "--json")
    )
    assert [r["index"] for r in doc["releases"]] == [1, 2, 3]
    doc = ok_json(
        firmlog(
            logged.cwd, "search", "--log", logged.url, "--order", "desc", "--limit", "1", "--json"
        )
    )
    assert [r["index"] for r in doc["releases"]] == [3]
    none = firmlog(logged.cwd, "search", "--log", logged.url, "--vendor", "nobody.example")
    assert ok(none) == ""
    assert "no release matches" in none.stderr


def test_search_mistakes(logged: Logged) -> None:
    url = logged.url
    failed(firmlog(logged.cwd, "search", "--log", url, "--digest", "abc"), 2, "--digest: expected")
    failed(firmlog(logged.cwd, "search", "--log", url, "--cve", "2024-1"), 2, "--cve: expected")
    failed(firmlog(logged.cwd, "search", "--log", url, "--limit", "0"), 2, "--limit")
    failed(firmlog(logged.cwd, "search", "--log", url, "--limit", "5000"), 2, "limit must be")
    bad = firmlog(logged.cwd, "search", "--log", url, "--cursor", "x", "--json")
    failed(bad, 2, "cursor")
    assert json.loads(bad.stdout)["exit_code"] == 2
    failed(firmlog(logged.cwd, "search", "--log", "not a url"), 2, "--log")
    failed(firmlog(logged.cwd, "search", "--log", closed_port_url()), 3, "transport error")


# -- get ----------------------------------------------------------------------------------


def test_get_by_index_and_by_id(logged: Logged) -> None:
    cwd, url = logged.cwd, logged.url
    entry = parse_entry(logged.releases[1])
    out = ok(
        firmlog(
            cwd, "get", "--log", url, "--index", "2", "--log-key", logged.vkey,
            "--out-entry", "e2.note", "--out-bundle", "e2.tlog-proof",
        )
    )  # fmt: skip
    assert out.startswith(f"entry 2 of {logged.live.log_key.name} at tree size {logged.size}")
    assert "checkpoint signed by --log-key" in out
    assert f"id          {entry.identity.hex()}" in out
    assert (cwd / "e2.note").read_bytes() == logged.releases[1]
    bundle = ProofBundle.parse((cwd / "e2.tlog-proof").read_bytes())
    assert (bundle.index, bundle.extra) == (2, logged.releases[1])
    logged.live.log.check_bundle((cwd / "e2.tlog-proof").read_bytes(), logged.releases[1])

    for ref in (entry.identity.hex(), entry.leaf_hash.hex().upper()):
        doc = ok_json(firmlog(cwd, "get", "--log", url, "--id", ref, "--json"))
        assert doc["index"] == 2
        assert doc["id"] == entry.identity.hex()
        assert doc["leaf_hash"] == entry.leaf_hash.hex()
        assert doc["type"] == "firmlog/release/v1"
        assert doc["entry"]["version"] == "2.0"
        assert doc["log_key_verified"] is False
        assert doc["checkpoint"]["tree_size"] == logged.size
        assert ProofBundle.parse(doc["bundle"].encode()).extra == logged.releases[1]
    unpinned = ok(firmlog(cwd, "get", "--log", url, "--index", "0"))
    assert "NOT checked" in unpinned
    assert "firmlog/vendor/v1" in unpinned


def test_get_mistakes(logged: Logged) -> None:
    cwd, url = logged.cwd, logged.url
    failed(firmlog(cwd, "get", "--log", url, "--index", "x"), 2, "expected an entry index")
    failed(firmlog(cwd, "get", "--log", url, "--index", "-1"), 2, "expected an entry index")
    failed(firmlog(cwd, "get", "--log", url), 2, "one of the arguments --index --id is required")
    beyond = firmlog(cwd, "get", "--log", url, "--index", "99999", "--json")
    failed(beyond, 2, "--index 99999")
    assert json.loads(beyond.stdout)["kind"] == "UsageError"
    failed(firmlog(cwd, "get", "--log", url, "--id", "xyz"), 2, "--id: expected")
    failed(firmlog(cwd, "get", "--log", url, "--id", "ab" * 32), 2, "no entry with id")
    other = generate_key(logged.live.log_key.name).verifier.vkey
    wrong = firmlog(cwd, "get", "--log", url, "--index", "1", "--log-key", other)
    failed(wrong, 1, "no valid signature by a trusted key")
    failed(firmlog(cwd, "get", "--log", "http://", "--index", "1"), 2, "--log")
    failed(firmlog(cwd, "get", "--log", closed_port_url(), "--index", "1"), 3, "transport error")


# -- --json on submit, verify, inspect, mirror ----------------------------------------------


def test_json_of_submit_verify_and_inspect(logged: Logged) -> None:
    cwd = logged.cwd
    doc = ok_json(firmlog(cwd, "submit", "--log", logged.url, "release.note", "--json"))
    entry = parse_entry(logged.releases[0])
    assert doc["index"] == 1
    assert doc["id"] == entry.identity.hex()
    assert doc["entry"]["version"] == "1.0"
    assert doc["checkpoint"]["origin"] == logged.live.log_key.name
    logged.live.log.check_bundle(doc["bundle"].encode(), logged.releases[0])
    (cwd / "junk.note").write_text("firmlog/release/v1\n{}\n\n— x AAAA\n")
    rejected = firmlog(cwd, "submit", "--log", logged.url, "junk.note", "--json")
    failed(rejected, 1, "the log rejected the entry")
    assert json.loads(rejected.stdout)["status"] == 400

    verify = (
        "verify", "--image", "firmware.bin", "--bundle", "release.tlog-proof",
        "--policy", "device.policy", "--vendor-key", VENDOR_KEY.verifier.vkey, "--json",
    )  # fmt: skip
    doc = ok_json(firmlog(cwd, *verify, "--product", "router-9000"))
    assert doc["leaf_index"] == 1
    assert doc["release"]["version"] == "1.0"
    assert doc["vendor_keys"] == [VENDOR_KEY.verifier.vkey]
    assert doc["quorum"].startswith("none")
    assert doc["revocation_checked"] is None
    refused = firmlog(cwd, *verify, "--product", "toaster")
    failed(refused, 1, "REFUSED at step 'product'")
    got = json.loads(refused.stdout)
    assert (got["ok"], got["step"], got["exit_code"]) == (False, "product", 1)

    doc = ok_json(firmlog(cwd, "inspect", "release.tlog-proof", "--json"))
    assert doc["file_type"] == "proof-bundle"
    assert doc["entry"]["id"] == entry.identity.hex()
    assert doc["checkpoint"]["signatures"][0]["name"] == logged.live.log_key.name
    doc = ok_json(firmlog(cwd, "inspect", "device.policy", "--json"))
    assert doc == {
        "ok": True, "file_type": "policy", "logs": [{"key": logged.vkey, "url": None}],
        "witnesses": [], "quorum": "none (no cosignatures required)",
    }  # fmt: skip
    key = generate_key("me.example/release")
    (cwd / "me.key").write_text(key.skey + "\n")
    doc = ok_json(firmlog(cwd, "inspect", "me.key", "--json"))
    assert doc["file_type"] == "signer-key"
    assert doc["verifier_key"] == key.verifier.vkey
    secret = key.skey.split("+", 4)[4]  # PRIVATE+KEY+name+id+base64 (which may hold "+")
    assert secret not in json.dumps(doc)
    ok(firmlog(cwd, "keygen", "--witness", "w.example"))
    doc = ok_json(firmlog(cwd, "inspect", "w.example.key", "--json"))
    assert doc["key_type"] == "cosignature/v1 (0x04)"
    garbage = firmlog(cwd, "inspect", "firmware.bin", "--json")
    failed(garbage, 2, "not a well-formed")
    assert json.loads(garbage.stdout)["ok"] is False


# -- mirror --verify --------------------------------------------------------------------------


def test_mirror_json_and_verify(logged: Logged, tmp_path: Path) -> None:
    cwd = logged.cwd
    mirror = tmp_path / "mirror"
    args = ("mirror", "--log", logged.url, "--log-key", logged.vkey, "--dir", str(mirror))
    doc = ok_json(firmlog(cwd, *args, "--json"))
    assert doc["checkpoint"]["tree_size"] == logged.size
    assert doc["previous_size"] == 0
    assert doc["fetched"] > 0

    check = ("mirror", "--verify", "--log-key", logged.vkey, "--dir", str(mirror))
    out = ok(firmlog(cwd, *check))
    assert f"at tree size {logged.size}" in out
    assert "3 tiles and 2 entry bundles" in out  # 0/000, 0/001.p/8, 1/000.p/1
    doc = ok_json(firmlog(cwd, *check, "--json"))
    assert (doc["tiles"], doc["entry_bundles"], doc["problems"]) == (3, 2, [])

    # A wrong log key: the checkpoint is refused.
    other = generate_key(logged.live.log_key.name).verifier.vkey
    wrong = firmlog(cwd, "mirror", "--verify", "--log-key", other, "--dir", str(mirror))
    failed(wrong, 1, "checkpoint: note has no valid signature")

    # Damage: one entry changed in the full bundle, the partial level-0 tile deleted.
    broken = tmp_path / "broken"
    shutil.copytree(mirror, broken)
    bundle = broken / "tile/entries/000"
    data = bytearray(bundle.read_bytes())
    data[-5] ^= 1
    bundle.write_bytes(bytes(data))
    (broken / "tile/0/001.p/8").unlink()
    bad = firmlog(
        cwd, "mirror", "--verify", "--log-key", logged.vkey, "--dir", str(broken), "--json"
    )
    failed(bad, 1, "problem(s) found")
    doc = json.loads(bad.stdout)
    assert doc["ok"] is False
    problems = {p["path"]: p["problem"] for p in doc["problems"]}
    assert "leaf hash of entry 255" in problems["tile/0/000"]
    assert problems["tile/0/001.p/8"] == "missing"
    assert "not checked" in problems["tile/1/000.p/1"]

    # A level-1 tile that does not hash up.
    upper = tmp_path / "upper"
    shutil.copytree(mirror, upper)
    (upper / "tile/1/000.p/1").write_bytes(b"\0" * 32)
    failed(
        firmlog(cwd, "mirror", "--verify", "--log-key", logged.vkey, "--dir", str(upper)),
        1,
        "tile/1/000.p/1: tile/1/000.p/1: hash 0 is",
    )
    failed(
        firmlog(cwd, "mirror", "--verify", "--log-key", logged.vkey, "--dir", str(tmp_path / "no")),
        2,
        "no such directory",
    )
    empty = tmp_path / "empty"
    empty.mkdir()
    failed(
        firmlog(cwd, "mirror", "--verify", "--log-key", logged.vkey, "--dir", str(empty)),
        1,
        "checkpoint: missing",
    )


def test_a_reader_that_went_away_ends_the_command_quietly(tmp_path: Path) -> None:
    """``firmlog ... | head``: when nobody reads stdout any more, the command stops
    with the status of a SIGPIPE and no traceback."""
    import os
    import subprocess
    import sys

    key = tmp_path / "k.key"
    key.write_text(generate_key("acme.example/release").skey + "\n")
    firmlog = str(Path(sys.executable).parent / "firmlog")
    read_end, write_end = os.pipe()
    os.close(read_end)  # no reader: the first write fails
    try:
        done = subprocess.run(
            [firmlog, "inspect", str(key), "--json"],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
            check=False,
        )
    finally:
        os.close(write_end)
    assert done.returncode == 141, done.stderr
    assert "Traceback" not in done.stderr
