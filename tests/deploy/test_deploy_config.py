"""The configuration the deploy files carry is what the programs accept: the
example config.toml and the Kubernetes one load with the server's own
loader; the compose first-start script creates a data dir the server loads
(operator signer key outside it) and a witness policy the server accepts; the
Dockerfile installs every workspace member and runs as a non-root user."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from deployfiles import DEPLOY, DOCKERFILE, ROOT, manifests

from firmlog.client.keys import parse_signer_key
from firmlog.monitor.datadir import init_data_dir as init_monitor_dir
from firmlog.server.config import load_config
from firmlog.server.datadir import init_data_dir, load_operator_keys
from firmlog.server.errors import ConfigError
from firmlog.server.witnessing import load_witness_policy

INIT = DEPLOY / "compose" / "init.py"
TIMEOUT_S = 60


def _config_dir(tmp_path: Path, text: str) -> Path:
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "config.toml").write_text(text)
    return tmp_path


def test_the_example_config_loads_with_the_servers_loader(tmp_path: Path) -> None:
    config = load_config(
        _config_dir(tmp_path, (DEPLOY / "config.example.toml").read_text()), environ={}
    )
    assert config.origin == "log.example.com/firmware"
    assert config.listen == "127.0.0.1:8080"


def test_the_kubernetes_config_loads_with_the_servers_loader(tmp_path: Path) -> None:
    (cm,) = [d for d in manifests() if d["metadata"]["name"] == "firmlog-server-config"]
    config = load_config(_config_dir(tmp_path, cm["data"]["config.toml"]), environ={})
    assert config.listen == "0.0.0.0:8080"
    assert len(config.operator_verifiers) == 1
    (monitor_cm,) = [d for d in manifests() if d["metadata"]["name"] == "firmlog-monitor-config"]
    assert monitor_cm["data"]["OPERATOR_KEY"] == config.operator_keys[0]
    assert monitor_cm["data"]["LOG_KEY"].startswith(config.origin + "+")


def test_a_broken_example_config_would_be_caught(tmp_path: Path) -> None:
    text = (DEPLOY / "config.example.toml").read_text().replace("batch_size", "batch_sise")
    with pytest.raises(ConfigError, match=r"unknown setting sequencer\.batch_sise"):
        load_config(_config_dir(tmp_path, text), environ={})


def run_init(tmp_path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    monitors = [
        f"--monitor=monitor{i}={tmp_path / f'm{i}'}=http://monitor{i}:8081" for i in (1, 2, 3)
    ]
    return subprocess.run(
        [sys.executable, str(INIT), f"--data-dir={tmp_path / 'data'}",
         "--origin=log.example.com/firmware",
         f"--operator-key-out={tmp_path / 'offline' / 'operator.key'}", *monitors, *extra],
        capture_output=True, text=True, timeout=TIMEOUT_S, check=False,
        env={k: v for k, v in os.environ.items() if not k.startswith("FIRMLOG_")},
    )  # fmt: skip


def test_the_compose_first_start_makes_what_the_server_and_monitors_load(tmp_path: Path) -> None:
    first = run_init(tmp_path, "--quorum=2", f"--owner={os.getuid()}:{os.getgid()}")
    assert first.returncode == 0, first.stderr
    data = tmp_path / "data"
    # Nothing private about the operator in the servers' data dir.
    assert sorted(p.name for p in data.iterdir()) == [
        "config.toml", "log.key", "log.pub", "operator.pub", "witnesses.policy",
    ]  # fmt: skip
    operator = parse_signer_key((tmp_path / "offline" / "operator.key").read_text().strip())
    # The server loads it all as its own first start would have made it.
    log = init_data_dir(data, None).log
    config = load_config(data, witness_policy=str(data / "witnesses.policy"), environ={})
    keys = load_operator_keys(data, config.operator_verifiers, "unused")
    assert keys.verifiers == (operator.verifier,)
    assert keys.generated is None
    assert (data / "log.pub").read_text().strip() == log.verifier.vkey
    policy = load_witness_policy(data / "witnesses.policy")
    assert [w.url for w in policy.witnesses] == [f"http://monitor{i}:8081" for i in (1, 2, 3)]
    assert (
        "group monitors 2 monitor1 monitor2 monitor3\nquorum monitors\n"
        in (data / "witnesses.policy").read_text()
    )
    # Each monitor finds its witness key, the one the policy names.
    for i, witness in zip((1, 2, 3), policy.witnesses, strict=True):
        key = init_monitor_dir(tmp_path / f"m{i}", f"monitor{i}.log.example.com/firmware/witness")
        assert not key.created
        assert key.signer.verifier.vkey == witness.verifier.vkey
    # A second run changes nothing.
    again = run_init(tmp_path, "--quorum=2")
    assert again.returncode == 0, again.stderr
    assert again.stdout.splitlines()[:2] == first.stdout.splitlines()[:2]
    assert f"log key:      {log.verifier.vkey}" in first.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--quorum=4",), "--quorum must be 0..3"),
        (("--monitor=bad",), "expected NAME=DIR=URL"),
        (("--owner=me",), "expected UID:GID"),
    ],
)
def test_the_compose_first_start_refuses_bad_arguments(
    tmp_path: Path, args: tuple[str, ...], message: str
) -> None:
    result = run_init(tmp_path, *args)
    assert result.returncode == 2
    assert message in result.stderr
    assert not (tmp_path / "data").exists()


def _stages(text: str) -> list[list[str]]:
    stages: list[list[str]] = []
    for line in re.sub(r"\\\n", " ", text).splitlines():
        if line.startswith("FROM "):
            stages.append([])
        if stages and line and not line.startswith("#"):
            stages[-1].append(line)
    return stages


def dockerfile_problems(text: str) -> list[str]:
    problems = []
    stages = _stages(text)
    if len(stages) < 2:
        return ["needs a build stage and a runtime stage"]
    final = stages[-1]
    if not any(line.startswith("COPY --from=build ") for line in final):
        problems.append("the runtime stage copies nothing from the build stage")
    users = [line.split()[1] for line in final if line.startswith("USER ")]
    if not users or users[-1].split(":")[0] in ("0", "root"):
        problems.append("the runtime stage must run as a non-root USER")
    # Every workspace member is copied (and let through the .dockerignore).
    members = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["uv"]["workspace"][
        "members"
    ]
    copied = {
        source.rstrip("/")
        for line in stages[0]
        if line.startswith("COPY ")
        for source in line.split()[1:-1]
    }
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
    for member in [*members, "pyproject.toml", "uv.lock"]:
        if member not in copied:
            problems.append(f"the build stage does not copy {member}")
        if f"!{member}" not in ignore and f"!{member}/" not in ignore:
            problems.append(f"Dockerfile.dockerignore keeps {member} out")
    sync = " ".join(line for line in stages[0] if line.startswith("RUN ") and "uv sync" in line)
    for flag in ("--locked", "--no-dev"):  # exactly uv.lock's versions, no test tools
        if flag not in sync.split():
            problems.append(f"uv sync without {flag}")
    # The directories compose mounts volumes on exist in the image, owned by its user.
    for path in ("/var/lib/firmlog", "/var/lib/firmlog-monitor", "/var/lib/firmlog-offline"):
        if path not in text:
            problems.append(f"the image has no {path}")
    return problems


def test_the_dockerfile_builds_every_member_in_stages_and_runs_unprivileged() -> None:
    assert dockerfile_problems(DOCKERFILE.read_text()) == []


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("USER 10001:10001", "USER root", "non-root USER"),
        ("COPY monitor/ monitor/\n", "", "does not copy monitor"),
        ("--locked ", "", "without --locked"),
        ("COPY --from=build /opt/firmlog /opt/firmlog", "", "copies nothing"),
    ],
)
def test_the_dockerfile_check_catches_a_broken_dockerfile(
    old: str, new: str, expected: str
) -> None:
    text = DOCKERFILE.read_text()
    assert old in text
    problems = dockerfile_problems(text.replace(old, new))
    assert any(expected in p for p in problems), problems
