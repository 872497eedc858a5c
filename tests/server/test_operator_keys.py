"""The operator's signer key stays off the server (firmlog.server.datadir, cli).

The server trusts operator *verifier* keys (``--operator-key``, config.toml
``operator_keys``, DATA/operator.pub). A first start with none generates a
signer key once, into a file named to be moved offline, and no later start
reads it; an old data dir with operator.key is migrated to operator.pub.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest
from procs import ORIGIN, ServerProcess, running_servers
from support.entries import admission

from firmlog.client.keys import Ed25519Signer, generate_key, parse_signer_key
from firmlog.server.config import load_config
from firmlog.server.datadir import init_data_dir, load_operator_keys
from firmlog.server.errors import ConfigError

OFFLINE = "operator.key.MOVE-ME-OFFLINE"
TIMEOUT_S = 60


class Server(ServerProcess):
    """``firmlog-server serve`` with extra flags."""

    def __init__(self, data_dir: Path, log_path: Path, *extra: str) -> None:
        super().__init__("server", data_dir, log_path)
        self.extra = list(extra)

    def command(self) -> list[str]:
        return [*super().command(), *self.extra]


async def submit(base: str, note: bytes) -> int:
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{base}/v1/entries", data=note) as resp,
    ):
        await resp.read()
        return resp.status


async def operator_keys_of(base: str) -> list[str]:
    async with aiohttp.ClientSession() as session, session.get(f"{base}/v1/log") as resp:
        keys: list[str] = (await resp.json())["operator_keys"]
        return keys


def test_first_start_writes_the_signer_key_once_and_never_reads_it(tmp_path: Path) -> None:
    d = tmp_path / "data"
    init_data_dir(d, "log.example/fw")
    first = load_operator_keys(d, (), "log.example/fw/operator")
    assert first.generated == d / OFFLINE
    signer = parse_signer_key((d / OFFLINE).read_text().strip())
    assert signer.name == "log.example/fw/operator"
    assert stat.S_IMODE((d / OFFLINE).stat().st_mode) == 0o600
    assert stat.S_IMODE((d / "operator.pub").stat().st_mode) == 0o644
    assert [v.vkey for v in first.verifiers] == [signer.verifier.vkey]
    assert not (d / "operator.key").exists()
    # The signer key is moved away, or left unreadable: later loads do not need it.
    (d / OFFLINE).chmod(0)
    again = load_operator_keys(d, (), "log.example/fw/operator")
    assert again.generated is None
    assert again.migrated is None
    assert again.verifiers == first.verifiers
    (d / OFFLINE).unlink()
    assert load_operator_keys(d, (), "ignored").verifiers == first.verifiers
    assert not (d / OFFLINE).exists()


def test_a_key_out_path_keeps_the_signer_key_out_of_the_data_dir(tmp_path: Path) -> None:
    d, out = tmp_path / "data", tmp_path / "offline" / "operator.key"
    init_data_dir(d, "log.example/fw")
    keys = load_operator_keys(d, (), "log.example/fw/operator", out)
    assert keys.generated == out
    assert parse_signer_key(out.read_text().strip()).verifier == keys.verifiers[0]
    assert sorted(p.name for p in d.iterdir()) == [
        "config.toml",
        "log.key",
        "log.pub",
        "operator.pub",
    ]


def test_configured_keys_generate_nothing(tmp_path: Path) -> None:
    d = tmp_path / "data"
    init_data_dir(d, "log.example/fw")
    a, b = generate_key("op-a.example"), generate_key("op-b.example")
    (d / "config.toml").write_text(
        f'origin = "log.example/fw"\noperator_keys = ["{a.verifier.vkey}"]\n'
    )
    config = load_config(d, operator_keys=[b.verifier.vkey, a.verifier.vkey], environ={})
    assert config.operator_keys == (a.verifier.vkey, b.verifier.vkey)
    keys = load_operator_keys(d, config.operator_verifiers, "log.example/fw/operator")
    assert keys.generated is None
    assert [v.vkey for v in keys.verifiers] == [a.verifier.vkey, b.verifier.vkey]
    assert not (d / "operator.pub").exists()
    assert not (d / OFFLINE).exists()
    # operator.pub adds to them.
    c = generate_key("op-c.example")
    (d / "operator.pub").write_text(f"# comment\n\n{c.verifier.vkey}\n{a.verifier.vkey}\n")
    keys = load_operator_keys(d, config.operator_verifiers, "x")
    assert [v.vkey for v in keys.verifiers] == [k.verifier.vkey for k in (a, b, c)]


def test_an_old_data_dir_is_migrated_to_operator_pub(tmp_path: Path) -> None:
    d = tmp_path / "data"
    init_data_dir(d, "log.example/fw")
    old = generate_key("log.example/fw/operator")
    (d / "operator.key").write_text(old.skey + "\n")
    keys = load_operator_keys(d, (), "log.example/fw/operator")
    assert keys.migrated == d / "operator.key"
    assert keys.generated is None
    assert keys.verifiers == (old.verifier,)
    assert old.verifier.vkey in (d / "operator.pub").read_text()
    (d / "operator.key").unlink()
    assert load_operator_keys(d, (), "x").verifiers == (old.verifier,)


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        ("pub", "operator.pub line 2: not an operator verifier key"),
        ("empty", "has no operator key"),
        ("toml", "operator_keys must be a list of verifier key strings"),
        ("bad-toml-key", "operator key 'nope' is not a verifier key"),
        ("signer-as-vkey", "is not a verifier key"),
    ],
)
def test_bad_operator_keys_are_refused_naming_them(
    tmp_path: Path, setup: str, message: str
) -> None:
    d = tmp_path / "data"
    init_data_dir(d, "log.example/fw")
    signer = generate_key("op.example")
    head = 'origin = "log.example/fw"\n'
    flags: list[str] = []
    if setup == "pub":
        (d / "operator.pub").write_text(f"{signer.verifier.vkey}\nnot-a-key\n")
    elif setup == "empty":
        (d / "operator.pub").write_text("# nobody\n")
    elif setup == "toml":
        (d / "config.toml").write_text(head + 'operator_keys = "one"\n')
    elif setup == "bad-toml-key":
        (d / "config.toml").write_text(head + 'operator_keys = ["nope"]\n')
    else:
        flags = [signer.skey]

    def load() -> None:
        config = load_config(d, operator_keys=flags, environ={})
        load_operator_keys(d, config.operator_verifiers, "x")

    with pytest.raises(ConfigError, match=message):
        load()


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("FIRMLOG_")}


def test_serve_refuses_a_bad_operator_key_flag(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "firmlog.server.cli", "serve", "--data-dir", str(tmp_path / "d"),
         "--listen", "127.0.0.1:0", "--operator-key", "acme+00+AAAA"],
        capture_output=True, text=True, timeout=TIMEOUT_S, check=False, env=_env(),
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("firmlog-server: operator key 'acme+00+AAAA' is not")
    assert not (tmp_path / "d" / OFFLINE).exists()


async def test_the_server_admits_with_a_key_it_no_longer_holds(tmp_path: Path) -> None:
    """The first start prints the banner; the signer key is moved offline; the next
    start finds no private operator key and still accepts the operator's admissions."""
    d, offline = tmp_path / "data", tmp_path / "offline.key"
    with running_servers() as servers:
        server = Server(d, tmp_path / "server.log")
        servers.append(server)
        await server.start()
        server.stop()
        text = server.log_path.read_text()
        assert "MOVE THE OPERATOR KEY OFFLINE" in text
        assert f"scp -p {(d / OFFLINE).resolve()} OFFLINE-HOST:operator.key && shred -u" in text
        (d / OFFLINE).rename(offline)  # what the banner asks for
        operator = parse_signer_key(offline.read_text().strip())
        await server.start()
        assert await operator_keys_of(server.base) == [operator.verifier.vkey]
        assert await submit(server.base, admission(operator, "acme.example")) == 200
        # A signature by any other key is one the rule does not require: 400.
        stranger: Ed25519Signer = generate_key(operator.name)  # same name, other key
        assert await submit(server.base, admission(stranger, "evil.example")) == 400
        server.stop()
        assert text.count("MOVE THE OPERATOR KEY OFFLINE") == 1
        assert not (d / OFFLINE).exists()
        assert not (d / "operator.key").exists()


async def test_a_left_behind_signer_key_is_reported_not_read(tmp_path: Path) -> None:
    d = tmp_path / "data"
    other = generate_key("op.example")
    with running_servers() as servers:
        server = Server(d, tmp_path / "server.log", "--operator-key", other.verifier.vkey)
        servers.append(server)
        d.mkdir()
        (d / "operator.key").write_text("PRIVATE+KEY+garbage: never parsed\n")
        await server.start()
        assert await operator_keys_of(server.base) == [other.verifier.vkey]
        assert await submit(server.base, admission(other, "acme.example")) == 200
        server.stop()
        text = server.log_path.read_text()
        assert f"warning: {d / 'operator.key'} is an operator signer key still on this" in text
        assert ORIGIN in (d / "log.pub").read_text()
        assert not (d / "operator.pub").exists()


def test_the_data_dir_race_gives_one_operator_key(tmp_path: Path) -> None:
    """Servers starting together on one data dir agree on one operator key."""
    d = tmp_path / "data"
    code = (
        "import sys; from pathlib import Path;"
        "from firmlog.server.datadir import init_data_dir, load_operator_keys;"
        "init_data_dir(Path(sys.argv[1]), 'race.example/log');"
        "print(load_operator_keys(Path(sys.argv[1]), (), 'race.example/log/operator')"
        ".verifiers[0].vkey)"
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", code, str(d)], stdout=subprocess.PIPE, text=True)
        for _ in range(6)
    ]
    outputs = {p.communicate(timeout=TIMEOUT_S)[0] for p in procs}
    assert all(p.returncode == 0 for p in procs)
    assert len(outputs) == 1, outputs
    vkey = outputs.pop().strip()
    assert parse_signer_key((d / OFFLINE).read_text().strip()).verifier.vkey == vkey
