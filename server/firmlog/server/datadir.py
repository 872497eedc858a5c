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

import os
import secrets
import socket
from dataclasses import dataclass
from pathlib import Path

from firmlog.client.keys import Ed25519Signer, generate_key, parse_signer_key
from firmlog.server.config import CONFIG_FILE, LOG_KEY_FILE, OPERATOR_KEY_FILE
from firmlog.server.errors import ConfigError

CHECKPOINT_FILE = "checkpoint"


@dataclass(frozen=True, slots=True)
class LogKeys:
    log: Ed25519Signer
    operator: Ed25519Signer
    created: bool  # True when this call created them


def default_origin() -> str:
    host = socket.gethostname().lower().strip(".") or "localhost"
    return f"{host}/firmlog"


def _tmp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")


def fsync_dir(directory: Path) -> None:
    """Make the entries of ``directory`` (a new or renamed file) durable."""
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def write_new(path: Path, text: str, mode: int = 0o600) -> bool:
    """Create ``path`` atomically with ``text``; never replace an existing file.

    Returns False if another process created it first (several servers may
    start at once on one data directory): the caller then reads theirs.
    """
    tmp = _tmp_name(path)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        os.write(fd, text.encode("utf-8"))
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(tmp, path)  # fails if path exists: a key is never replaced
    except FileExistsError:
        return False
    finally:
        tmp.unlink()
    fsync_dir(path.parent)
    return True


def replace_file(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Replace ``path`` with ``data`` atomically and durably.

    Readers see the old or the new content, never a mix; once this returns the
    new content survives a crash. Processes sharing the directory each write
    their own temporary file, so concurrent replacements never mix either.
    """
    tmp = _tmp_name(path)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def _check_writable(data_dir: Path) -> None:
    """Raise ConfigError unless files can be created in ``data_dir``."""
    probe = _tmp_name(data_dir / "write-test")
    try:
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        probe.unlink()
    except OSError as exc:
        raise ConfigError(
            f"the data dir {data_dir} is not writable ({exc.strerror or exc}); make it writable "
            "for this user, or choose another --data-dir"
        ) from exc


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
