"""Server configuration and the data directory: precedence, validation, first start."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from firmlog.server.config import ConfigError, load_config
from firmlog.server.datadir import init_data_dir
from firmlog.service.files import write_new


def write(d: Path, text: str) -> None:
    (d / "config.toml").write_text(text)


def test_precedence_file_env_flags(tmp_path: Path) -> None:
    write(
        tmp_path,
        'origin = "a.example/log"\nlisten = "127.0.0.1:1111"\n[sequencer]\nbatch_size = 7\n',
    )
    cfg = load_config(tmp_path, environ={})
    assert (cfg.origin, cfg.listen_port, cfg.sequencer.batch_size) == ("a.example/log", 1111, 7)
    cfg = load_config(tmp_path, environ={"FIRMLOG_LISTEN": "127.0.0.1:2222"})
    assert cfg.listen_port == 2222
    cfg = load_config(tmp_path, listen="[::1]:3333", environ={"FIRMLOG_LISTEN": "x:1"})
    assert (cfg.listen_host, cfg.listen_port) == ("::1", 3333)
    assert cfg.database_url == f"sqlite:///{(tmp_path / 'firmlog.db').resolve()}"
    assert cfg.escrow_path == tmp_path / "images"


def test_the_key_names_the_origin_when_the_file_does_not(tmp_path: Path) -> None:
    write(tmp_path, "[sequencer]\nbatch_interval = 0.5\n")
    cfg = load_config(tmp_path, environ={}, default_origin="k.example/log")
    assert cfg.origin == "k.example/log"
    assert cfg.sequencer.batch_interval == 0.5


def test_workers_file_env_flag_and_one_per_core(tmp_path: Path) -> None:
    write(tmp_path, 'origin = "o/log"\n')
    assert load_config(tmp_path, environ={}).worker_count == (os.cpu_count() or 1)
    write(tmp_path, 'origin = "o/log"\nworkers = 3\n')
    assert load_config(tmp_path, environ={}).worker_count == 3
    assert load_config(tmp_path, environ={"FIRMLOG_WORKERS": "5"}).worker_count == 5
    cfg = load_config(tmp_path, workers=1, environ={"FIRMLOG_WORKERS": "5"})
    assert cfg.worker_count == 1
    with pytest.raises(ConfigError, match="FIRMLOG_WORKERS must be an integer, got 'many'"):
        load_config(tmp_path, environ={"FIRMLOG_WORKERS": "many"})


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('origin = "o/log"\nbogus = 1\n', "unknown setting 'bogus'"),
        ('origin = "o/log"\n[sequencer]\nbatch_sise = 1\n', "unknown setting sequencer.batch_sise"),
        ('origin = "o/log"\n[sequencer]\nbatch_size = "9"\n', "sequencer.batch_size must be int"),
        ('origin = "o/log"\n[sequencer]\nbatch_size = 0\n', "batch_size must be 1..65536"),
        ('origin = "o/log"\n[sequencer]\nbatch_interval = 1\n', "at least every 500 ms"),
        ('origin = "o/log"\n[sequencer]\nbatch_size = 100\npool_size = 10\n', "pool_size (10)"),
        ('origin = "o/log"\n[limits]\nmax_entry_size = 70000\n', "uint16"),
        ('origin = "o/log"\nlisten = "nowhere"\n', "HOST:PORT"),
        ('origin = "o/log"\ndatabase = "mysql://x"\n', "sqlite:///PATH or postgresql"),
        ('origin = "bad origin"\n', "not a valid key name"),
        ("origin = \n", "config.toml"),
        ("[sequencer]\n", "no origin configured"),
        ('origin = "o/log"\nworkers = "4"\n', "workers must be an integer"),
        ('origin = "o/log"\nworkers = 1000\n', "workers must be 1..256 (or 0: one per core)"),
    ],
)
def test_bad_config_fails_fast_naming_the_setting(tmp_path: Path, text: str, message: str) -> None:
    write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path, environ={})
    assert message in str(info.value)


def test_first_start_creates_keys_once(tmp_path: Path) -> None:
    d = tmp_path / "data"
    first = init_data_dir(d, "log.example/fw")
    assert first.created
    assert first.log.name == "log.example/fw"
    assert stat.S_IMODE((d / "log.key").stat().st_mode) == 0o600
    assert (d / "log.pub").read_text() == first.log.verifier.vkey + "\n"
    assert 'origin = "log.example/fw"' in (d / "config.toml").read_text()
    again = init_data_dir(d, None)
    assert not again.created
    assert again.log.skey == first.log.skey
    with pytest.raises(ConfigError, match="a log's origin cannot change"):
        init_data_dir(d, "other.example/log")


def test_a_key_file_is_never_replaced(tmp_path: Path) -> None:
    path = tmp_path / "k.key"
    assert write_new(path, "first\n")
    assert not write_new(path, "second\n")
    assert path.read_text() == "first\n"
    assert list(tmp_path.iterdir()) == [path]  # no temporary files left


def test_servers_starting_together_share_one_set_of_keys(tmp_path: Path) -> None:
    d = tmp_path / "data"
    code = (
        "import sys; from pathlib import Path; from firmlog.server.datadir import init_data_dir;"
        "from firmlog.server.datadir import load_operator_keys;"
        "k = init_data_dir(Path(sys.argv[1]), 'race.example/log');"
        "o = load_operator_keys(Path(sys.argv[1]), (), 'race.example/log/operator');"
        "print(k.log.verifier.vkey, [v.vkey for v in o.verifiers])"
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", code, str(d)], stdout=subprocess.PIPE, text=True)
        for _ in range(8)
    ]
    outputs = {p.communicate(timeout=60)[0] for p in procs}
    assert all(p.returncode == 0 for p in procs)
    assert len(outputs) == 1, outputs
    assert not [f for f in d.iterdir() if f.name.endswith(".tmp")]


def serve(d: Path) -> subprocess.CompletedProcess[str]:
    # A subprocess: serve configures logging for its whole process.
    return subprocess.run(
        [sys.executable, "-m", "firmlog.server.cli", "serve", "--data-dir", str(d)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_serve_refuses_bad_config_with_exit_2(tmp_path: Path) -> None:
    d = tmp_path / "data"
    init_data_dir(d, "log.example/fw")
    write(d, 'origin = "someone.else/log"\n')
    result = serve(d)
    assert result.returncode == 2
    assert "does not match the log key name" in result.stderr
    write(d, 'origin = "log.example/fw"\n[limits]\nmax_entry_size = 1\n')
    result = serve(d)
    assert result.returncode == 2
    assert "limits.max_entry_size" in result.stderr


def test_a_corrupt_key_file_is_reported(tmp_path: Path) -> None:
    d = tmp_path / "data"
    init_data_dir(d, "log.example/fw")
    (d / "log.key").write_text("PRIVATE+KEY+garbage\n")
    with pytest.raises(ConfigError, match=r"log\.key: not a signer key"):
        init_data_dir(d, None)
