"""Every firmlog-server, firmlog-monitor and firmlog command that the deploy
files and OPERATIONS.md run is accepted by that program's own argparse parser,
so the files cannot drift from the command-line interfaces."""

from __future__ import annotations

import pytest
from deployfiles import (
    COMPOSE,
    OPERATIONS,
    SYSTEMD,
    Invocation,
    compose_invocations,
    dockerfile_invocations,
    from_shell,
    kubernetes_invocations,
    load_all,
    manifests,
    markdown_invocations,
    parse_problem,
    systemd_invocations,
)


def all_invocations() -> list[Invocation]:
    found = [
        *dockerfile_invocations(),
        *compose_invocations(load_all(COMPOSE)[0]),
        *kubernetes_invocations(manifests()),
        *markdown_invocations(OPERATIONS),
    ]
    for unit in sorted(SYSTEMD.glob("*.service")):
        found += systemd_invocations(unit)
    return found


def test_every_command_in_the_deploy_files_parses() -> None:
    invocations = all_invocations()
    problems = [p for p in map(parse_problem, invocations) if p]
    assert problems == []


def test_each_kind_of_file_is_searched() -> None:
    wheres = " | ".join(i.where for i in all_invocations())
    for expected in (
        "Dockerfile CMD",
        "compose.yaml service log1",
        "compose.yaml service monitor3",
        "StatefulSet firmlog-server",
        "StatefulSet firmlog-monitor",
        "firmlog-server.service ExecStart",
        "firmlog-monitor.service ExecStart",
        "OPERATIONS.md",
    ):
        assert expected in wheres, expected
    programs = {(i.program, i.args[0]) for i in all_invocations() if i.args}
    assert ("firmlog-server", "serve") in programs
    assert ("firmlog-monitor", "run") in programs


@pytest.mark.parametrize(
    ("script", "expected"),
    [
        ("firmlog-server serve --data-dir d --witness-polcy p", "unrecognized arguments"),
        ("exec firmlog-monitor run --data-dir d --log-url u", "required"),
        ("x=$(firmlog vendor admit --vendor v) && echo", "required"),
        ("/opt/firmlog/venv/bin/firmlog-server serv", "invalid choice"),
        ("firmlog rotate-keys --key k --vendor v --new-key n --serial two > out", "invalid int"),
    ],
)
def test_a_wrong_command_is_caught(script: str, expected: str) -> None:
    (invocation,) = from_shell(script, "test")
    problem = parse_problem(invocation)
    assert problem is not None
    assert expected in problem


def test_shell_operators_end_a_command() -> None:
    (invocation,) = from_shell(
        "VK=$(firmlog keygen acme.example/release) # the vendor's key\n", "test"
    )
    assert invocation.args == ("keygen", "acme.example/release")
    assert parse_problem(invocation) is None
