"""The ``firmlog`` command line, run as a subprocess, end to end against a real log."""

from __future__ import annotations

import http.server
import os
import socket
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.livelog import LiveLog

from firmlog.client.bundle import ProofBundle
from firmlog.client.cosignature import cosign, parse_witness_signer_key
from firmlog.client.entries import KeySet, Release, Revocation, parse_entry
from firmlog.client.keys import parse_signer_key
from firmlog.client.online import save_state
from firmlog.client.verify import DeviceState

IMAGE = b"\x7fELF firmware for the router" * 300


def firmlog(cwd: Path, *args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FIRMLOG")}
    return subprocess.run(
        [sys.executable, "-m", "firmlog.client.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=env,
        input=None if stdin is None else stdin.decode(),
    )


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stderr
    return result.stdout


class Setup:
    """A log with acme.example admitted via the CLI, and a release logged via the CLI."""

    def __init__(self, live: LiveLog, cwd: Path) -> None:
        self.live = live
        self.cwd = cwd
        (cwd / "op.key").write_text(live.operator.skey + "\n")
        (cwd / "firmware.bin").write_bytes(IMAGE)
        (cwd / "sbom.json").write_text('{"components": []}\n')
        (cwd / "device.policy").write_text(f"log {live.log_key.verifier.vkey}\nquorum none\n")
        self.vendor_vkey = ok(firmlog(cwd, "keygen", "acme.example/release")).strip()
        admission = ok(
            firmlog(
                cwd,
                "vendor",
                "admit",
                "--operator-key",
                "op.key",
                "--vendor",
                "acme.example",
                "--key",
                self.vendor_vkey,
            )
        )
        (cwd / "admission.note").write_text(admission)
        ok(firmlog(cwd, "submit", "--log", live.url, "admission.note"))
        ok(
            firmlog(
                cwd,
                "release",
                "create",
                "--key",
                "acme.example_release.key",
                "--vendor",
                "acme.example",
                "--product",
                "router-9000",
                "--version",
                "2.4.1",
                "--security-version",
                "7",
                "--image",
                "firmware.bin",
                "--channel",
                "beta",
                "--source-uri",
                "https://git.acme.example/router.git",
                "--source-commit",
                "4f2a9c1",
                "--builder",
                "ci.acme.example",
                "--build-time",
                "2024-06-01T08:00:00Z",
                "--reproducible",
                "--hardware-revision",
                "A",
                "--hardware-revision",
                "B",
                "--sbom",
                "sbom.json",
                "--fix",
                "CVE-2024-3094",
                "--changelog",
                "Fixes a backdoor.",
                "-o",
                "release.note",
            )
        )
        self.bundle = ok(firmlog(cwd, "submit", "--log", live.url, "release.note"))
        (cwd / "release.tlog-proof").write_text(self.bundle)

    def verify(
        self,
        *extra: str,
        image: str = "firmware.bin",
        bundle: str = "release.tlog-proof",
        policy: str = "device.policy",
    ) -> subprocess.CompletedProcess[str]:
        return firmlog(
            self.cwd,
            "verify",
            "--image",
            image,
            "--bundle",
            bundle,
            "--policy",
            policy,
            "--vendor-key",
            self.vendor_vkey,
            *extra,
        )


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    """One log and one logged release for the module (the tests that change the
    vendor's keys run last)."""
    tmp_path = tmp_path_factory.mktemp("cli")
    cwd = tmp_path / "work"
    cwd.mkdir()
    with LiveLog(tmp_path / "log") as live:
        yield Setup(live, cwd)


def test_keygen_release_submit_verify_end_to_end(setup: Setup) -> None:
    cwd = setup.cwd
    key_file = cwd / "acme.example_release.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert parse_signer_key(key_file.read_text().strip()).verifier.vkey == setup.vendor_vkey

    release = parse_entry((cwd / "release.note").read_bytes())
    assert isinstance(release.body, Release)
    assert release.body.image.size == len(IMAGE)
    assert release.body.hardware_revisions == ("A", "B")
    assert release.body.sbom_sha256 is not None
    bundle = ProofBundle.parse(setup.bundle.encode())
    assert bundle.extra == (cwd / "release.note").read_bytes()
    assert bundle.index == 1  # after the admission

    out = ok(setup.verify("--product", "router-9000", "--installed-security-version", "7"))
    assert out.startswith("OK: the image may be installed")
    assert "acme.example router-9000 2.4.1" in out
    assert "index 1 of tree size 2" in out
    assert "CVE-2024-3094" in out
    assert len(out.splitlines()) < 24  # one screen

    # A tampered image: exit 1, naming the step.
    tampered = bytearray(IMAGE)
    tampered[1000] ^= 0xFF
    (cwd / "tampered.bin").write_bytes(bytes(tampered))
    bad = setup.verify("--product", "router-9000", image="tampered.bin")
    assert bad.returncode == 1
    assert "REFUSED at step 'image-digest'" in bad.stderr
    assert bad.stdout == ""


@pytest.mark.parametrize(
    ("options", "step"),
    [
        (["--product", "toaster"], "product"),
        (["--product", "router-9000", "--installed-security-version", "8"], "security-version"),
        (["--product", "router-9000", "--hardware-revision", "C"], "hardware-revision"),
        (["--product", "router-9000", "--vendor", "other.example"], "vendor-signatures"),
    ],
)
def test_verify_refusals_exit_1_naming_the_step(
    setup: Setup, options: list[str], step: str
) -> None:
    result = setup.verify(*options)
    assert result.returncode == 1, result.stderr
    assert f"step {step!r}" in result.stderr


def test_verify_with_witnesses_and_a_state_file(setup: Setup) -> None:
    cwd = setup.cwd
    vkey = ok(firmlog(cwd, "keygen", "--witness", "w1.witness.example")).strip()
    witness = parse_witness_signer_key((cwd / "w1.witness.example.key").read_text().strip())
    (cwd / "witnessed.policy").write_text(
        f"log {setup.live.log_key.verifier.vkey}\nwitness W1 {vkey}\nquorum W1\n"
    )
    save_state(cwd / "state.json", DeviceState("router-9000", 5))
    refused = setup.verify("--state", "state.json", policy="witnessed.policy")
    assert refused.returncode == 1
    assert "step 'cosignatures'" in refused.stderr

    bundle = ProofBundle.parse(setup.bundle.encode())
    now = 1_750_000_000
    cosigned = ProofBundle(
        bundle.index, bundle.proof, cosign(bundle.checkpoint, witness, now), bundle.extra
    )
    (cwd / "cosigned.tlog-proof").write_bytes(cosigned.format())
    options = {"bundle": "cosigned.tlog-proof", "policy": "witnessed.policy"}
    out = ok(setup.verify("--state", "state.json", "--now", str(now + 60), **options))
    assert "witnesses   W1" in out
    assert "(installed: 5)" in out
    stale = setup.verify(
        "--state",
        "state.json",
        "--now",
        str(now + 7200),
        "--max-cosignature-age",
        "3600",
        **options,
    )
    assert stale.returncode == 1
    assert "step 'cosignatures'" in stale.stderr


def test_inspect_every_kind_of_file(setup: Setup) -> None:
    cwd = setup.cwd
    out = ok(firmlog(cwd, "inspect", "release.tlog-proof"))
    assert "proof bundle" in out
    assert "tree size   2" in out
    assert '"security_version": 7' in out
    assert "acme.example/release+" in out
    out = ok(firmlog(cwd, "inspect", "release.note"))
    assert "entry: firmlog/release/v1" in out
    (cwd / "checkpoint").write_bytes(setup.live.client().checkpoint())
    out = ok(firmlog(cwd, "inspect", "checkpoint"))
    assert f"origin      {setup.live.log_key.name}" in out
    out = ok(firmlog(cwd, "inspect", "device.policy"))
    assert "quorum      none" in out
    save_state(cwd / "state.json", DeviceState("router-9000", 3, (cwd / "checkpoint").read_bytes()))
    out = ok(firmlog(cwd, "inspect", "state.json"))
    assert "stored checkpoint" in out
    out = ok(firmlog(cwd, "inspect", "-", stdin=(cwd / "release.note").read_bytes()))
    assert "firmlog/release/v1" in out

    (cwd / "garbage").write_text("hello\n")
    bad = firmlog(cwd, "inspect", "garbage")
    assert bad.returncode == 2
    assert "not a well-formed" in bad.stderr
    # A signer key shows its verifier key, never its private part.
    skey = (cwd / "acme.example_release.key").read_text().strip()
    secret = firmlog(cwd, "inspect", "acme.example_release.key")
    assert secret.returncode == 0, secret.stderr
    assert f"vkey        {setup.vendor_vkey}" in secret.stdout
    seed = skey.split("+", 4)[4]  # PRIVATE+KEY+name+id+base64 (which may hold "+")
    assert "PRIVATE" not in secret.stdout + secret.stderr
    assert seed not in secret.stdout + secret.stderr


def test_mirror_command(setup: Setup) -> None:
    result = firmlog(
        setup.cwd,
        "mirror",
        "--log",
        setup.live.url,
        "--log-key",
        setup.live.log_key.verifier.vkey,
        "--dir",
        "mirror",
    )
    assert result.returncode == 0, result.stderr
    assert "1/1 tiles verified" in result.stderr
    assert "mirrored" in result.stderr
    assert (setup.cwd / "mirror" / "checkpoint").is_file()
    assert (setup.cwd / "mirror" / "tile/entries/000.p/2").is_file()


# -- errors and exit codes (no log needed) ------------------------------------------------------


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def test_usage_and_transport_errors(tmp_path: Path) -> None:
    help_text = ok(firmlog(tmp_path, "--help"))
    for line in ("0  success", "1  refused", "2  usage", "3  transport"):
        assert line in help_text
    assert "image-digest" in ok(firmlog(tmp_path, "verify", "--help"))

    assert firmlog(tmp_path).returncode == 2  # no command
    assert firmlog(tmp_path, "verify").returncode == 2  # missing options

    vkey = ok(firmlog(tmp_path, "keygen", "me.example")).strip()
    again = firmlog(tmp_path, "keygen", "me.example")
    assert again.returncode == 2
    assert "refusing to overwrite" in again.stderr
    bad_name = firmlog(tmp_path, "keygen", "has space")
    assert bad_name.returncode == 2

    (tmp_path / "note").write_text("firmlog/release/v1\n{}\n\n— x AAAA\n")
    unreachable = firmlog(tmp_path, "submit", "--log", f"http://127.0.0.1:{_closed_port()}", "note")
    assert unreachable.returncode == 3
    assert "transport error" in unreachable.stderr

    missing = firmlog(
        tmp_path,
        "verify",
        "--image",
        "nope.bin",
        "--bundle",
        "nope.tlog-proof",
        "--policy",
        "nope.policy",
        "--vendor-key",
        vkey,
        "--product",
        "p",
    )
    assert missing.returncode == 2
    assert "cannot read" in missing.stderr

    (tmp_path / "p.policy").write_text("quorum none\n")
    (tmp_path / "b").write_text("x")
    (tmp_path / "i").write_text("x")
    no_product = firmlog(
        tmp_path,
        "verify",
        "--image",
        "i",
        "--bundle",
        "b",
        "--policy",
        "p.policy",
        "--vendor-key",
        vkey,
    )
    assert no_product.returncode == 2
    assert "--product" in no_product.stderr
    bad_key = firmlog(
        tmp_path,
        "verify",
        "--image",
        "i",
        "--bundle",
        "b",
        "--policy",
        "p.policy",
        "--vendor-key",
        "not-a-key",
        "--product",
        "p",
    )
    assert bad_key.returncode == 2
    malformed = firmlog(
        tmp_path,
        "verify",
        "--image",
        "i",
        "--bundle",
        "b",
        "--policy",
        "p.policy",
        "--vendor-key",
        vkey,
        "--product",
        "p",
    )
    assert malformed.returncode == 1
    assert "step 'bundle'" in malformed.stderr

    half = firmlog(
        tmp_path,
        "release",
        "create",
        "--key",
        "me.example.key",
        "--vendor",
        "me.example",
        "--product",
        "p",
        "--version",
        "1",
        "--security-version",
        "1",
        "--image",
        "i",
        "--source-uri",
        "https://example.com/src",
    )
    assert half.returncode == 2
    assert "--source-commit" in half.stderr


def test_revoke_and_rotate_keys(setup: Setup) -> None:
    cwd = setup.cwd
    release_id = parse_entry((cwd / "release.note").read_bytes()).identity.hex()
    assert f"id          {release_id}" in ok(firmlog(cwd, "inspect", "release.note"))
    revocation = ok(
        firmlog(
            cwd,
            "revoke",
            "--key",
            "acme.example_release.key",
            "--vendor",
            "acme.example",
            "--release",
            release_id,
            "--reason",
            "bricks devices with hardware revision A",
            "--advisory",
            "ACME-SA-2024-07",
        )
    )
    body = parse_entry(revocation.encode()).body
    assert isinstance(body, Revocation)
    assert body.release_id == release_id
    (cwd / "revocation.note").write_text(revocation)
    online = ("--product", "router-9000", "--log", setup.live.url)
    assert "revocation  none signed by the vendor" in ok(setup.verify(*online))
    ok(firmlog(cwd, "submit", "--log", setup.live.url, "revocation.note"))
    revoked = setup.verify(*online)
    assert revoked.returncode == 1, revoked.stderr
    assert "REFUSED at step 'revocation'" in revoked.stderr
    assert "bricks devices with hardware revision A; advisory: ACME-SA-2024-07" in revoked.stderr
    assert ok(setup.verify("--product", "router-9000")).startswith("OK")  # offline: no view

    new_vkey = ok(firmlog(cwd, "keygen", "acme.example/release-2025")).strip()
    rotation = ok(
        firmlog(
            cwd,
            "rotate-keys",
            "--key",
            "acme.example_release.key",
            "--vendor",
            "acme.example",
            "--new-key",
            new_vkey,
            "--new-key",
            setup.vendor_vkey,
            "--threshold",
            "2",
            "--serial",
            "2",
        )
    )
    keys = parse_entry(rotation.encode()).body
    assert isinstance(keys, KeySet)
    assert keys.threshold == 2
    assert keys.serial == 2
    (cwd / "rotation.note").write_text(rotation)
    ok(firmlog(cwd, "submit", "--log", setup.live.url, "rotation.note"))

    # The old key alone no longer meets the vendor's threshold: the log refuses.
    again = firmlog(
        cwd,
        "revoke",
        "--key",
        "acme.example_release.key",
        "--vendor",
        "acme.example",
        "--release",
        release_id,
        "--reason",
        "again",
        "-o",
        "again.note",
    )
    ok(again)
    rejected = firmlog(cwd, "submit", "--log", setup.live.url, "again.note")
    assert rejected.returncode == 1
    assert "rejected the entry (HTTP 403)" in rejected.stderr
    assert "threshold is 2" in rejected.stderr


class _GossipStub(http.server.BaseHTTPRequestHandler):
    """A monitor's POST /v1/gossip answering with the server's ``status``."""

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.received.append((self.path, body))  # type: ignore[attr-defined]
        data = b'{"result": "split-view"}' if self.server.status == 409 else b"{}"  # type: ignore[attr-defined]
        self.send_response(self.server.status)  # type: ignore[attr-defined]
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def gossip_stub() -> Iterator[http.server.ThreadingHTTPServer]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _GossipStub)
    server.received = []  # type: ignore[attr-defined]
    server.status = 200  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def test_verify_gossips_the_accepted_checkpoint(
    setup: Setup, gossip_stub: http.server.ThreadingHTTPServer
) -> None:
    url = f"http://127.0.0.1:{gossip_stub.server_address[1]}"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        down = f"http://127.0.0.1:{s.getsockname()[1]}"
    base = ("--product", "router-9000", "--timeout", "5")
    out = setup.verify(*base, "--gossip", down, "--gossip", url)
    assert out.returncode == 0, out.stderr
    assert "warning: gossip to " + down in out.stderr  # a monitor that is down: a warning
    ((path, note),) = gossip_stub.received  # type: ignore[attr-defined]
    assert path == "/v1/gossip"
    bundle = ProofBundle.parse(setup.bundle.encode())
    assert note == bundle.checkpoint  # byte for byte

    gossip_stub.status = 409  # type: ignore[attr-defined]
    refused = setup.verify(*base, "--gossip", url)
    assert refused.returncode == 1
    assert "REFUSED at step 'gossip'" in refused.stderr
    assert refused.stdout == ""
