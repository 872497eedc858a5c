"""The monitor's data directory: its witness key, created on first start, and its state.

::

    DIR/
      witness.key    the monitor's cosignature/v1 signer key (type 0x04), mode 0600
      monitor.db     SQLite state (firmlog.monitor.store)
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from pathlib import Path

from firmlog.client.cosignature import (
    CosignatureSigner,
    generate_witness_key,
    parse_witness_signer_key,
)
from firmlog.client.errors import KeyFormatError
from firmlog.monitor.config import ConfigError
from firmlog.service.files import write_new

__all__ = ["WITNESS_KEY_FILE", "WitnessKey", "default_name", "init_data_dir"]

WITNESS_KEY_FILE = "witness.key"


@dataclass(frozen=True, slots=True)
class WitnessKey:
    signer: CosignatureSigner
    created: bool  # True when this call created it


def default_name() -> str:
    host = socket.gethostname().lower().strip(".") or "localhost"
    return f"{host}/firmlog-monitor"


def init_data_dir(data_dir: Path, name: str | None = None) -> WitnessKey:
    """Load the witness key of ``data_dir``, creating both on first start.

    ``name`` names a new key (default :func:`default_name`); for an existing
    key it must match. Raises ConfigError saying what to do.
    """
    try:
        data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create data dir {data_dir}: {exc.strerror or exc}") from exc
    path = data_dir / WITNESS_KEY_FILE
    created = False
    if not path.exists():
        try:
            signer = generate_witness_key(name or default_name())
        except ValueError as exc:
            raise ConfigError(f"--name {name!r} cannot name a key: {exc}") from exc
        created = write_new(path, signer.skey + "\n")
    try:
        signer = parse_witness_signer_key(path.read_text("utf-8").strip())
    except (OSError, UnicodeDecodeError, KeyFormatError) as exc:
        raise ConfigError(f"cannot read the witness key {path}: {exc}") from exc
    if name is not None and signer.name != name:
        raise ConfigError(
            f"{path} holds the witness key {signer.name!r}, not {name!r}: drop --name or use "
            "another data dir"
        )
    return WitnessKey(signer, created)
