"""What the deploy-file tests share: where the files are, and the firmlog
commands the files run, taken out of every place a command can hide (a
Dockerfile CMD, a compose command, a Kubernetes container, a systemd
ExecStart, a shell block of OPERATIONS.md) so that each can be parsed by the
program's own argparse parser.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import re
import shlex
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from firmlog.client.cli import build_parser as client_parser
from firmlog.monitor.cli import _parser as monitor_parser
from firmlog.server.cli import _parser as server_parser

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
COMPOSE = DEPLOY / "compose.yaml"
KUBERNETES = DEPLOY / "kubernetes"
SYSTEMD = DEPLOY / "systemd"
NGINX = DEPLOY / "nginx"
DOCKERFILE = DEPLOY / "Dockerfile"
OPERATIONS = ROOT / "OPERATIONS.md"
SCHEMA_DIR = Path(__file__).resolve().parents[1] / "data" / "compose-spec"

PARSERS: dict[str, Callable[[], argparse.ArgumentParser]] = {
    "firmlog-server": server_parser,
    "firmlog-monitor": monitor_parser,
    "firmlog": client_parser,
}


@dataclass(frozen=True)
class Invocation:
    where: str  # file and place, for messages
    program: str
    args: tuple[str, ...]


def yaml_files() -> list[Path]:
    return sorted([*DEPLOY.rglob("*.yaml"), *DEPLOY.rglob("*.yml")])


def load_all(path: Path) -> list[Any]:
    with path.open(encoding="utf-8") as f:
        return [doc for doc in yaml.safe_load_all(f) if doc is not None]


def manifests() -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for path in sorted(KUBERNETES.glob("*.yaml")):
        docs += load_all(path)
    return docs


def _program(token: str) -> str | None:
    name = token.rsplit("/", 1)[-1]
    return name if name in PARSERS else None


def _is_operator(token: str) -> bool:
    return bool(token) and all(c in "();<>|&" for c in token)


def _command_position(previous: str | None) -> bool:
    """Whether a word after ``previous`` is a command name, not an argument."""
    return (
        previous is None
        or _is_operator(previous)
        or previous in ("exec", "sudo", "nohup", "time", "then", "do")
        or re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", previous) is not None
    )


def from_tokens(tokens: list[str], where: str) -> Iterator[Invocation]:
    """Every firmlog program in ``tokens`` with its arguments, up to a shell operator."""
    for i, token in enumerate(tokens):
        program = _program(token)
        if program is None or not _command_position(tokens[i - 1] if i else None):
            continue
        args: list[str] = []
        for arg in tokens[i + 1 :]:
            if _is_operator(arg):
                break
            args.append(arg)
        yield Invocation(where, program, tuple(args))


def from_shell(script: str, where: str) -> Iterator[Invocation]:
    """The firmlog commands of a shell script (continuation lines joined)."""
    text = re.sub(r"\\\n", " ", script)
    for number, line in enumerate(text.splitlines(), 1):
        lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        lexer.commenters = "#"
        yield from from_tokens(list(lexer), f"{where} line {number}")


def from_command(command: str | list[str], where: str) -> Iterator[Invocation]:
    """A compose or Kubernetes command: a list (exec form), ``sh -c SCRIPT``, or a string."""
    if isinstance(command, str):
        yield from from_shell(command, where)
        return
    if len(command) >= 3 and command[0] in ("sh", "/bin/sh", "bash") and command[1] == "-c":
        yield from from_shell(command[2], where)
        return
    yield from from_tokens(list(command), where)


def compose_invocations(compose: Mapping[str, Any]) -> Iterator[Invocation]:
    for name, service in compose["services"].items():
        for key in ("entrypoint", "command"):
            if key in service:
                command = service[key]
                # compose turns $$ into $ before the shell sees it
                if isinstance(command, list):
                    command = [c.replace("$$", "$") for c in command]
                else:
                    command = command.replace("$$", "$")
                yield from from_command(command, f"compose.yaml service {name} {key}")


def kubernetes_invocations(docs: list[dict[str, Any]]) -> Iterator[Invocation]:
    for doc in docs:
        spec = doc.get("spec", {}).get("template", {}).get("spec", {})
        for container in [*spec.get("initContainers", []), *spec.get("containers", [])]:
            command = [*container.get("command", []), *container.get("args", [])]
            where = f"{doc['kind']} {doc['metadata']['name']} container {container['name']}"
            yield from from_command(command, where)


def systemd_env(unit_text: str) -> dict[str, str]:
    """The variables of the unit's EnvironmentFile, from its example beside it."""
    env: dict[str, str] = {}
    if "EnvironmentFile=" in unit_text:
        for line in (SYSTEMD / "monitor.env.example").read_text().splitlines():
            if line and not line.startswith("#"):
                key, _, value = line.partition("=")
                env[key] = value
    return env


def systemd_invocations(path: Path) -> Iterator[Invocation]:
    """ExecStart lines with the environment expanded as systemd does: ``${VAR}`` is
    one word, ``$VAR`` alone is split into words."""
    text = path.read_text()
    env = systemd_env(text)
    for line in text.splitlines():
        if not line.startswith("ExecStart="):
            continue
        words: list[str] = []
        for word in shlex.split(line.removeprefix("ExecStart=")):
            if re.fullmatch(r"\$[A-Za-z_][A-Za-z0-9_]*", word):
                words += env[word[1:]].split()
            else:
                words.append(re.sub(r"\$\{(\w+)\}", lambda m: env[m.group(1)], word))
        yield from from_tokens(words, f"{path.name} ExecStart")


def dockerfile_invocations() -> Iterator[Invocation]:
    for line in DOCKERFILE.read_text().splitlines():
        if line.startswith(("CMD [", "ENTRYPOINT [")):
            yield from from_tokens(json.loads(line.split(" ", 1)[1]), f"Dockerfile {line[:3]}")


def markdown_shell_blocks(path: Path) -> Iterator[tuple[int, str]]:
    """(first line number, text) of every ```sh block."""
    lines = path.read_text().splitlines()
    block: list[str] | None = None
    start = 0
    for number, line in enumerate(lines, 1):
        if block is None and line.strip() in ("```sh", "```bash", "```shell"):
            block, start = [], number + 1
        elif block is not None and line.strip() == "```":
            yield start, "\n".join(block)
            block = None
        elif block is not None:
            block.append(line)


def markdown_invocations(path: Path) -> Iterator[Invocation]:
    for start, text in markdown_shell_blocks(path):
        yield from from_shell(text, f"{path.name} block at line {start}")


def parse_problem(invocation: Invocation) -> str | None:
    """Why the program's own parser refuses the arguments, or None."""
    parser = PARSERS[invocation.program]()
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            parser.parse_args(list(invocation.args))
    except SystemExit as exc:
        if exc.code not in (0, None):
            last = err.getvalue().strip().splitlines()[-1:] or ["(no message)"]
            return (
                f"{invocation.where}: {invocation.program} {shlex.join(invocation.args)}: {last[0]}"
            )
    return None
