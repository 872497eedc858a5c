"""deploy/compose.yaml: valid against the Compose Specification's JSON schema
(carried in tests/data/compose-spec, see its README), and wired as it says:
two log servers on one PostgreSQL, nginx in front, three monitors that gossip
with each other and witness the log."""

from __future__ import annotations

import copy
import json
import re
from typing import Any

import jsonschema
import pytest
import yaml
from deployfiles import COMPOSE, DEPLOY, SCHEMA_DIR, load_all, yaml_files


def schema_errors(doc: Any) -> list[str]:
    schema = json.loads((SCHEMA_DIR / "compose-spec.json").read_text())
    # The schema says draft 2019-09 with a URI jsonschema does not know (…/draft/2019-09/schema#).
    assert "2019-09" in schema["$schema"]
    jsonschema.Draft201909Validator.check_schema(schema)
    validator = jsonschema.Draft201909Validator(schema)
    return [
        f"{'/'.join(map(str, e.absolute_path)) or '(top)'}: {e.message}"
        for e in validator.iter_errors(doc)
    ]


def compose() -> dict[str, Any]:
    (doc,) = load_all(COMPOSE)
    assert isinstance(doc, dict)
    return doc


@pytest.mark.parametrize("path", yaml_files(), ids=lambda p: str(p.relative_to(DEPLOY)))
def test_every_yaml_file_parses(path: Any) -> None:
    docs = load_all(path)
    assert docs, f"{path} holds no document"
    assert all(isinstance(d, dict) for d in docs)


def test_compose_file_is_valid_against_the_compose_spec_schema() -> None:
    assert schema_errors(compose()) == []


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda d: d["services"]["log1"].update(restart_policy="always"), "restart_policy"),
        (lambda d: d["services"]["nginx"].update(ports="8080:80"), "is not of type 'array'"),
        (
            lambda d: d["services"]["log1"]["depends_on"]["postgres"].update(condition="up"),
            "services/log1/depends_on: ",
        ),
        (lambda d: d.update(servics={}), "servics"),
    ],
)
def test_the_schema_check_refuses_a_broken_compose_file(mutate: Any, expected: str) -> None:
    doc = copy.deepcopy(compose())
    mutate(doc)
    errors = schema_errors(doc)
    assert any(expected in e for e in errors), errors


def _command_text(service: dict[str, Any]) -> str:
    command = service.get("command", "")
    return " ".join(command) if isinstance(command, list) else str(command)


def test_compose_wiring() -> None:
    doc = compose()
    services: dict[str, Any] = doc["services"]
    assert {"postgres", "init", "log1", "log2", "nginx", "monitor1", "monitor2", "monitor3"} <= set(
        services
    )
    # Every dependency and every named volume exists.
    for name, service in services.items():
        for dep in service.get("depends_on", {}):
            assert dep in services, f"{name} depends on unknown service {dep}"
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith("."):
                assert (DEPLOY / source).exists(), f"{name} mounts missing file {source}"
            else:
                assert source in doc["volumes"], f"{name} uses undeclared volume {source}"
    # Two log servers on the one PostgreSQL, sharing one data dir (one log key).
    for name in ("log1", "log2"):
        log = services[name]
        assert "@postgres:5432/" in log["environment"]["FIRMLOG_DATABASE"]
        assert "firmlog-data:/var/lib/firmlog" in log["volumes"]
        assert "--witness-policy /var/lib/firmlog/witnesses.policy" in _command_text(log)
        assert log["depends_on"]["init"]["condition"] == "service_completed_successfully"
    # The operator's signer key goes to a volume no server mounts.
    assert "operator-offline:/var/lib/firmlog-offline" in services["init"]["volumes"]
    for name, service in services.items():
        if name != "init":
            assert not any("operator-offline" in v for v in service.get("volumes", [])), name
    # nginx in front of both, its upstream file naming both.
    upstream = (DEPLOY / "nginx" / "upstream-compose.conf").read_text()
    assert "server log1:8080" in upstream
    assert "server log2:8080" in upstream
    # Three monitors, each gossiping with the other two and witnessing for the log.
    monitors = [f"monitor{i}" for i in (1, 2, 3)]
    init = _command_text(services["init"])
    for name in monitors:
        text = _command_text(services[name])
        peers = set(re.findall(r"--peer http://(monitor\d):8081", text))
        assert peers == set(monitors) - {name}, (name, peers)
        assert "--listen 0.0.0.0:8081" in text
        assert f"--monitor={name}=/var/lib/monitors/{name}=http://{name}:8081" in init
        assert f"{name}:/var/lib/monitors/{name}" in services["init"]["volumes"]
        assert f"{name}:/var/lib/firmlog-monitor" in services[name]["volumes"]
    assert "--quorum=2" in init


def test_yaml_parsing_is_strict_enough_to_fail() -> None:
    with pytest.raises(yaml.YAMLError):
        yaml.safe_load("services:\n  a: [unclosed\n")
