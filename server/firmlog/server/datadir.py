"""The data directory: keys and config created on first start, loaded after.

::

    firmlog-data/
      config.toml     origin, listen, database, sequencer and limit settings
      log.key         the log's signer key (name = origin), mode 0600
      operator.key    the operator's signer key, admits vendors, mode 0600
      firmlog.db      the embedded SQLite database (default backend)
      checkpoint      the last checkpoint note this server published (firmlog.server.signing)
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from pathlib import Path

from firmlog.client.keys import Ed25519Signer, generate_key, parse_signer_key
from firmlog.server.config import CONFIG_FILE, LOG_KEY_FILE, OPERATOR_KEY_FILE
from firmlog.server.errors import ConfigError
from firmlog.service.files import check_writable, write_new

CHECKPOINT_FILE = "checkpoint"


@dataclass(frozen=True, slots=True)
class LogKeys:
    log: Ed25519Signer
    operator: Ed25519Signer
    created: bool  # True when this call created them


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


def init_data_dir(data_dir: Path, origin: str | None) -> LogKeys:
    """Create the data directory, config and keys if missing; load them otherwise.

    On first start the origin is ``origin`` or ``<hostname>/firmlog``; later the
    origin comes from config.toml and must agree with the log key's name.
    """
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(
            f"cannot create the data dir {data_dir} ({exc.strerror or exc}); choose another "
            "--data-dir, or create it as a directory writable for this user"
        ) from exc
    _check_writable(data_dir)
    log_path, op_path = data_dir / LOG_KEY_FILE, data_dir / OPERATOR_KEY_FILE
    config_path = data_dir / CONFIG_FILE
    created = False
    if not log_path.exists():
        created |= write_new(log_path, generate_key(origin or default_origin()).skey + "\n")
    name = _read_key(log_path).name
    if not config_path.exists():
        write_new(
            config_path,
            "# firmlog-server configuration; see firmlog.server.config for every setting.\n"
            f'origin = "{name}"\n',
            mode=0o644,
        )
    if not op_path.exists():
        created |= write_new(op_path, generate_key(f"{name}/operator").skey + "\n")
    log, op = _read_key(log_path), _read_key(op_path)
    if origin is not None and origin != log.name:
        raise ConfigError(
            f"--origin {origin!r} does not match the existing log key in {log_path} "
            f"(named {log.name!r}); a log's origin cannot change"
        )
    return LogKeys(log=log, operator=op, created=created)
