"""The data directory: keys and config created on first start, loaded after.

::

    firmlog-data/
      config.toml     origin, listen, database, sequencer and limit settings
      log.key         the log's signer key (name = origin), mode 0600
      operator.key    the operator's signer key, admits vendors, mode 0600
      firmlog.db      the embedded SQLite database (default backend)
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path

from firmlog.client.note import Ed25519Signer, generate_key, parse_signer_key
from firmlog.server.config import CONFIG_FILE, LOG_KEY_FILE, OPERATOR_KEY_FILE, ConfigError


@dataclass(frozen=True, slots=True)
class LogKeys:
    log: Ed25519Signer
    operator: Ed25519Signer
    created: bool  # True when this call created them


def default_origin() -> str:
    host = socket.gethostname().lower().strip(".") or "localhost"
    return f"{host}/firmlog"


def write_secret(path: Path, text: str) -> None:
    """Write a key file atomically with mode 0600; never overwrite an existing one."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, text.encode("utf-8"))
        os.fsync(fd)
    finally:
        os.close(fd)
    os.link(tmp, path)  # fails if path exists: a key is never replaced
    tmp.unlink()


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
    data_dir.mkdir(parents=True, exist_ok=True)
    log_path, op_path = data_dir / LOG_KEY_FILE, data_dir / OPERATOR_KEY_FILE
    config_path = data_dir / CONFIG_FILE
    created = False
    if not log_path.exists():
        name = origin or default_origin()
        log = generate_key(name)
        write_secret(log_path, log.skey + "\n")
        created = True
        if not config_path.exists():
            config_path.write_text(
                "# firmlog-server configuration; see firmlog.server.config for every setting.\n"
                f'origin = "{name}"\n',
                encoding="utf-8",
            )
    if not op_path.exists():
        op = generate_key(f"{_read_key(log_path).name}/operator")
        write_secret(op_path, op.skey + "\n")
        created = True
    log, op = _read_key(log_path), _read_key(op_path)
    if origin is not None and origin != log.name:
        raise ConfigError(
            f"--origin {origin!r} does not match the existing log key in {log_path} "
            f"(named {log.name!r}); a log's origin cannot change"
        )
    return LogKeys(log=log, operator=op, created=created)
