"""The data directory: keys and config created on first start, loaded after.

::

    firmlog-data/
      config.toml     origin, listen, database, operator_keys, sequencer and limit settings
      log.key         the log's signer key (name = origin), mode 0600
      log.pub         the log's verifier key, for monitors, devices and other servers
      operator.pub    the operator's verifier keys, one a line: who may admit vendors
      firmlog.db      the embedded SQLite database (default backend)
      checkpoint      the last checkpoint note this server published (firmlog.server.signing)

The server holds no operator *signer* key. It needs only the operator's
verifier keys, from config.toml ``operator_keys``, ``--operator-key`` and
``operator.pub`` together. When none is configured, the first start generates
an operator signer key once, into ``operator.key.MOVE-ME-OFFLINE`` (or the
path given with ``--operator-key-out``), writes its verifier key to
``operator.pub`` and asks the operator to move the signer key off the server;
later starts never read it. A data dir from before (with ``operator.key`` and
no ``operator.pub``) is migrated: ``operator.pub`` is derived from it once and
the operator is told to move ``operator.key`` offline.
"""

from __future__ import annotations

import socket
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from firmlog.client.errors import KeyFormatError
from firmlog.client.keys import (
    Ed25519Signer,
    Ed25519Verifier,
    generate_key,
    parse_signer_key,
    parse_verifier_key,
)
from firmlog.server.config import (
    CONFIG_FILE,
    LOG_KEY_FILE,
    LOG_PUB_FILE,
    OPERATOR_KEY_FILE,
    OPERATOR_KEY_OFFLINE_FILE,
    OPERATOR_PUB_FILE,
)
from firmlog.server.errors import ConfigError
from firmlog.service.files import check_writable, write_new

CHECKPOINT_FILE = "checkpoint"


@dataclass(frozen=True, slots=True)
class LogKeys:
    log: Ed25519Signer
    created: bool  # True when this call created them


@dataclass(frozen=True, slots=True)
class OperatorKeys:
    """The operator verifier keys a server trusts to admit vendors."""

    verifiers: tuple[Ed25519Verifier, ...]
    generated: Path | None = None  # a signer key this call created: to be moved offline
    migrated: Path | None = None  # an old operator.key operator.pub was derived from


def default_origin() -> str:
    host = socket.gethostname().lower().strip(".") or "localhost"
    return f"{host}/firmlog"


def _check_writable(data_dir: Path) -> None:
    """Raise ConfigError unless files can be created in ``data_dir``."""
    problem = check_writable(data_dir)
    if problem is not None:
        raise ConfigError(
            f"the data dir {data_dir} is not writable ({problem}); make it writable "
            "for this user, or choose another --data-dir"
        )


def _read_key(path: Path) -> Ed25519Signer:
    try:
        return parse_signer_key(path.read_text(encoding="utf-8").strip())
    except ValueError as exc:
        raise ConfigError(f"{path}: not a signer key: {exc}") from exc
    except OSError as exc:
        raise ConfigError(f"cannot read {path} ({exc.strerror or exc})") from exc


def init_data_dir(data_dir: Path, origin: str | None) -> LogKeys:
    """Create the data directory, config and log key if missing; load them otherwise.

    On first start the origin is ``origin`` or ``<hostname>/firmlog``; later the
    origin comes from config.toml and must agree with the log key's name.
    Operator keys are :func:`load_operator_keys`'s.
    """
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(
            f"cannot create the data dir {data_dir} ({exc.strerror or exc}); choose another "
            "--data-dir, or create it as a directory writable for this user"
        ) from exc
    _check_writable(data_dir)
    log_path, config_path = data_dir / LOG_KEY_FILE, data_dir / CONFIG_FILE
    created = False
    if not log_path.exists():
        created |= write_new(log_path, generate_key(origin or default_origin()).skey + "\n")
    log = _read_key(log_path)
    if not (data_dir / LOG_PUB_FILE).exists():
        write_new(data_dir / LOG_PUB_FILE, log.verifier.vkey + "\n", mode=0o644)
    if not config_path.exists():
        write_new(
            config_path,
            "# firmlog-server configuration; see firmlog.server.config for every setting.\n"
            f'origin = "{log.name}"\n',
            mode=0o644,
        )
    if origin is not None and origin != log.name:
        raise ConfigError(
            f"--origin {origin!r} does not match the existing log key in {log_path} "
            f"(named {log.name!r}); a log's origin cannot change"
        )
    return LogKeys(log=log, created=created)


def parse_operator_pub(text: str, where: str) -> tuple[Ed25519Verifier, ...]:
    """The verifier keys of an operator.pub file: one vkey a line; blank lines and
    lines starting with ``#`` are skipped. ConfigError names the bad line."""
    keys: list[Ed25519Verifier] = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        try:
            keys.append(parse_verifier_key(line))
        except KeyFormatError as exc:
            raise ConfigError(
                f"{where} line {number}: not an operator verifier key ({exc}); put one "
                "vkey a line (firmlog inspect OPERATOR.key prints it)"
            ) from exc
    return tuple(keys)


def _unique(keys: Sequence[Ed25519Verifier]) -> tuple[Ed25519Verifier, ...]:
    seen: dict[str, Ed25519Verifier] = {}
    for key in keys:
        seen.setdefault(key.vkey, key)
    return tuple(seen.values())


def load_operator_keys(
    data_dir: Path,
    configured: Sequence[Ed25519Verifier],
    name: str,
    key_out: Path | None = None,
) -> OperatorKeys:
    """The operator verifier keys: ``configured`` (config.toml and flags) and
    ``operator.pub``; never an operator signer key, except once:

    - no key configured and no operator.pub: an old operator.key (or a signer
      key a first start left in ``key_out``) gives operator.pub, else a new
      signer key named ``name`` is written to ``key_out`` (default
      ``DATA/operator.key.MOVE-ME-OFFLINE``) and its verifier to operator.pub.
    """
    pub_path = data_dir / OPERATOR_PUB_FILE
    out = key_out or data_dir / OPERATOR_KEY_OFFLINE_FILE
    generated = migrated = None
    if not pub_path.exists() and not configured:
        legacy = data_dir / OPERATOR_KEY_FILE
        if legacy.exists():
            migrated, signer = legacy, _read_key(legacy)
        elif out.exists():  # a first start stopped before it wrote operator.pub
            signer = _read_key(out)
            generated = out
        else:
            signer = generate_key(name)
            try:
                out.parent.mkdir(parents=True, exist_ok=True)
                if write_new(out, signer.skey + "\n"):
                    generated = out
                else:  # another server of this data dir was first: its key counts
                    signer = _read_key(out)
            except OSError as exc:
                raise ConfigError(
                    f"cannot write the new operator key to {out} ({exc.strerror or exc}); "
                    "choose another --operator-key-out, or pass --operator-key VKEY"
                ) from exc
        write_new(pub_path, f"{signer.verifier.vkey}\n", mode=0o644)
    from_file: tuple[Ed25519Verifier, ...] = ()
    if pub_path.exists():
        try:
            text = pub_path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read {pub_path} ({exc}); fix its permissions") from exc
        from_file = parse_operator_pub(text, str(pub_path))
        if not from_file and not configured:
            raise ConfigError(
                f"{pub_path} has no operator key; add the operator's verifier key to it, "
                "or pass --operator-key VKEY"
            )
    return OperatorKeys(_unique([*configured, *from_file]), generated, migrated)
