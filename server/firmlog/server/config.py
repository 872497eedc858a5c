"""Server configuration: one frozen dataclass, from ``config.toml``, environment and flags.

Precedence, lowest first: built-in defaults, ``<data dir>/config.toml``,
``FIRMLOG_*`` environment variables, command-line flags. Everything is
validated once at start, so bad configuration fails fast with a message that
names the setting.

``config.toml``::

    origin = "log.example.com/firmware"   # checkpoint origin = log key name
    listen = "127.0.0.1:8080"
    workers = 2               # server processes on the listening port (default: one per core)
    database = "sqlite:///firmlog-data/firmlog.db"   # or postgresql://...
    operator_keys = ["log.example.com/firmware/operator+1234abcd+AQ..."]   # with operator.pub
    publish_dir = "/var/www/firmlog"   # write checkpoint and tiles there (tlog-tiles layout)

    [sequencer]
    batch_interval = 0.01     # seconds an entry waits for others to join its batch (<= 0.5)
    batch_size = 1024         # a batch this full is integrated at once
    pool_size = 20000         # pending entries beyond this get 503 + Retry-After

    [limits]
    max_entry_size = 16384

    [http]                    # against slow clients; also FIRMLOG_HTTP_<NAME> in the environment
    header_timeout = 10.0     # a request line and headers, from their first byte
    body_timeout = 30.0       # a whole entry; the longest pause in an image upload
    idle_timeout = 75.0       # a keep-alive connection between requests
    min_upload_rate = 65536   # bytes per second an image upload must average
"""

from __future__ import annotations

import math
import os
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from firmlog.client.entries import DEFAULT_MAX_ENTRY_SIZE
from firmlog.client.errors import KeyFormatError
from firmlog.client.keys import Ed25519Verifier, check_key_name, parse_verifier_key
from firmlog.server.errors import ConfigError
from firmlog.server.witnessing import load_witness_policy
from firmlog.service import cli as service_cli
from firmlog.service.http import HTTPConfig

CONFIG_FILE = "config.toml"
LOG_KEY_FILE = "log.key"
LOG_PUB_FILE = "log.pub"
OPERATOR_PUB_FILE = "operator.pub"
OPERATOR_KEY_OFFLINE_FILE = "operator.key.MOVE-ME-OFFLINE"  # written once, never read again
OPERATOR_KEY_FILE = "operator.key"  # where data dirs before operator.pub kept the signer key
DB_FILE = "firmlog.db"
MAX_WORKERS = 256


@dataclass(frozen=True, slots=True)
class SequencerConfig:
    batch_interval: float = 0.01
    batch_size: int = 1024
    pool_size: int = 20000


@dataclass(frozen=True, slots=True)
class LimitsConfig:
    max_entry_size: int = DEFAULT_MAX_ENTRY_SIZE
    max_entries_per_request: int = 1000
    tile_cache_tiles: int = 4096
    max_image_size: int = 4 << 30  # escrowed firmware images, bytes


@dataclass(frozen=True, slots=True)
class ServerConfig:
    data_dir: Path
    origin: str
    listen_host: str = "127.0.0.1"
    listen_port: int = 8080
    database: str = ""  # empty: SQLite in the data directory
    escrow_dir: str = ""  # empty: <data dir>/images
    sequencer: SequencerConfig = field(default_factory=SequencerConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    http: HTTPConfig = field(default_factory=HTTPConfig)
    witness_policy: str = ""  # empty: no witnessing; else a tlog-policy file with witness URLs
    witness_timeout: float = 10.0  # seconds to wait for the quorum of cosignatures
    operator_keys: tuple[str, ...] = ()  # vkeys that may admit vendors, besides operator.pub
    publish_dir: str = ""  # empty: none; else the tlog-tiles files are written there too
    workers: int = 0  # worker processes serving the listening sockets; 0: one per core

    @property
    def worker_count(self) -> int:
        return self.workers or os.cpu_count() or 1

    @property
    def operator_verifiers(self) -> tuple[Ed25519Verifier, ...]:
        return tuple(parse_verifier_key(k) for k in self.operator_keys)

    @property
    def database_url(self) -> str:
        return self.database or f"sqlite:///{(self.data_dir / DB_FILE).resolve()}"

    @property
    def escrow_path(self) -> Path:
        return Path(self.escrow_dir) if self.escrow_dir else self.data_dir / "images"

    @property
    def listen(self) -> str:
        return f"{self.listen_host}:{self.listen_port}"

    def validate(self) -> ServerConfig:
        try:
            check_key_name(self.origin)
        except ValueError as exc:
            raise ConfigError(f"origin {self.origin!r} is not a valid key name: {exc}") from exc
        if not 0 <= self.workers <= MAX_WORKERS:
            raise ConfigError(
                f"workers must be 1..{MAX_WORKERS} (or 0: one per core), got {self.workers}"
            )
        if not 0 <= self.listen_port <= 65535:
            raise ConfigError(f"listen port must be 0..65535, got {self.listen_port}")
        if self.database and not self.database.startswith(
            ("sqlite:///", "postgresql://", "postgres://")
        ):
            raise ConfigError(
                f"database must be sqlite:///PATH or postgresql://..., got {self.database!r}"
            )
        s = self.sequencer
        if not 0.001 <= s.batch_interval <= 0.5:
            raise ConfigError(
                f"sequencer.batch_interval must be 0.001..0.5 s (entries are integrated at "
                f"least every 500 ms), got {s.batch_interval}"
            )
        if not 1 <= s.batch_size <= 65536:
            raise ConfigError(f"sequencer.batch_size must be 1..65536, got {s.batch_size}")
        if s.pool_size < s.batch_size:
            raise ConfigError(
                f"sequencer.pool_size ({s.pool_size}) must be at least batch_size ({s.batch_size})"
            )
        lim = self.limits
        if not 256 <= lim.max_entry_size <= 65535:
            raise ConfigError(
                f"limits.max_entry_size must be 256..65535 bytes (entry bundles use a uint16 "
                f"length), got {lim.max_entry_size}"
            )
        if not 1 <= lim.max_entries_per_request <= 100000:
            raise ConfigError(
                f"limits.max_entries_per_request must be 1..100000, "
                f"got {lim.max_entries_per_request}"
            )
        if lim.max_image_size < 1:
            raise ConfigError(f"limits.max_image_size must be positive, got {lim.max_image_size}")
        if lim.tile_cache_tiles < 16:
            raise ConfigError(f"limits.tile_cache_tiles must be >= 16, got {lim.tile_cache_tiles}")
        for name in ("header_timeout", "body_timeout", "idle_timeout"):
            seconds = getattr(self.http, name)
            if not (math.isfinite(seconds) and 0.1 <= seconds <= 3600):
                raise ConfigError(f"http.{name} must be 0.1..3600 seconds, got {seconds}")
        if self.http.min_upload_rate < 1024:
            raise ConfigError(
                f"http.min_upload_rate must be at least 1024 bytes per second, "
                f"got {self.http.min_upload_rate}"
            )
        if not (math.isfinite(self.witness_timeout) and 0.1 <= self.witness_timeout <= 600):
            raise ConfigError(
                f"witness_timeout must be 0.1..600 seconds, got {self.witness_timeout}"
            )
        for vkey in self.operator_keys:
            try:
                parse_verifier_key(vkey)
            except KeyFormatError as exc:
                raise ConfigError(
                    f"operator key {vkey!r} is not a verifier key: {exc}; give the "
                    "operator's vkey (firmlog inspect OPERATOR.key prints it)"
                ) from exc
        if (
            self.publish_dir
            and Path(self.publish_dir).exists()
            and not Path(self.publish_dir).is_dir()
        ):
            raise ConfigError(f"publish_dir {self.publish_dir!r} is not a directory")
        if self.witness_policy:
            try:
                load_witness_policy(Path(self.witness_policy))
            except (OSError, ValueError) as exc:
                raise ConfigError(f"witness_policy {self.witness_policy!r}: {exc}") from exc
        return self


def parse_listen(value: str) -> tuple[str, int]:
    try:
        return service_cli.parse_listen(value, "listen")
    except service_cli.ListenError as exc:
        raise ConfigError(str(exc)) from None


def _section(cls: type[Any], raw: Any, where: str) -> Any:
    if not isinstance(raw, Mapping):
        raise ConfigError(f"[{where}] must be a table")
    known = {f.name: f for f in fields(cls)}
    values: dict[str, Any] = {}
    for key, given in raw.items():
        value = given
        if key not in known:
            raise ConfigError(f"unknown setting {where}.{key} (known: {', '.join(sorted(known))})")
        want = type(getattr(cls(), key))
        if want is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if type(value) is not want:
            raise ConfigError(
                f"{where}.{key} must be {want.__name__}, got {type(value).__name__} {value!r}"
            )
        values[key] = value
    return cls(**values)


def load_config(
    data_dir: Path,
    *,
    listen: str | None = None,
    database: str | None = None,
    origin: str | None = None,
    witness_policy: str | None = None,
    operator_keys: Sequence[str] = (),
    publish_dir: str | None = None,
    workers: int | None = None,
    environ: Mapping[str, str] | None = None,
    default_origin: str | None = None,
) -> ServerConfig:
    """Read ``<data_dir>/config.toml`` (if present), then environment, then these overrides.

    ``default_origin`` (the log key's name) applies when nothing else names one.
    ``operator_keys`` (``--operator-key``) are trusted together with config.toml's.
    """
    env = os.environ if environ is None else environ
    raw: dict[str, Any] = {}
    path = data_dir / CONFIG_FILE
    if path.is_file():
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: {exc}") from exc
    allowed = {
        "origin",
        "listen",
        "database",
        "escrow_dir",
        "sequencer",
        "limits",
        "http",
        "witness_policy",
        "witness_timeout",
        "operator_keys",
        "publish_dir",
        "workers",
    }
    for key in raw:
        if key not in allowed:
            raise ConfigError(
                f"{path}: unknown setting {key!r} (known: {', '.join(sorted(allowed))})"
            )

    cfg_origin = origin or env.get("FIRMLOG_ORIGIN") or raw.get("origin") or default_origin
    if not isinstance(cfg_origin, str):
        raise ConfigError(f"no origin configured: set origin in {path} or pass --origin")
    cfg = ServerConfig(data_dir=data_dir, origin=cfg_origin)

    cfg_listen = listen or env.get("FIRMLOG_LISTEN") or raw.get("listen")
    if cfg_listen is not None:
        if not isinstance(cfg_listen, str):
            raise ConfigError(f"listen must be a string HOST:PORT, got {cfg_listen!r}")
        host, port = parse_listen(cfg_listen)
        cfg = replace(cfg, listen_host=host, listen_port=port)
    cfg_workers: object = workers
    if cfg_workers is None and "FIRMLOG_WORKERS" in env:
        try:
            cfg_workers = int(env["FIRMLOG_WORKERS"])
        except ValueError:
            raise ConfigError(
                f"FIRMLOG_WORKERS must be an integer, got {env['FIRMLOG_WORKERS']!r}"
            ) from None
    if cfg_workers is None:
        cfg_workers = raw.get("workers")
    if cfg_workers is not None:
        if isinstance(cfg_workers, bool) or not isinstance(cfg_workers, int):
            raise ConfigError(f"workers must be an integer, got {cfg_workers!r}")
        cfg = replace(cfg, workers=cfg_workers)
    cfg_db = database or env.get("FIRMLOG_DATABASE") or raw.get("database")
    if cfg_db is not None:
        if not isinstance(cfg_db, str):
            raise ConfigError(f"database must be a string URL, got {cfg_db!r}")
        cfg = replace(cfg, database=cfg_db)
    if "escrow_dir" in raw:
        if not isinstance(raw["escrow_dir"], str):
            raise ConfigError(f"escrow_dir must be a string path, got {raw['escrow_dir']!r}")
        cfg = replace(cfg, escrow_dir=raw["escrow_dir"])
    cfg_policy = witness_policy or env.get("FIRMLOG_WITNESS_POLICY") or raw.get("witness_policy")
    if cfg_policy is not None:
        if not isinstance(cfg_policy, str):
            raise ConfigError(f"witness_policy must be a string path, got {cfg_policy!r}")
        cfg = replace(cfg, witness_policy=cfg_policy)
    cfg_publish = publish_dir or env.get("FIRMLOG_PUBLISH_DIR") or raw.get("publish_dir")
    if cfg_publish is not None:
        if not isinstance(cfg_publish, str):
            raise ConfigError(f"publish_dir must be a string path, got {cfg_publish!r}")
        cfg = replace(cfg, publish_dir=cfg_publish)
    if "witness_timeout" in raw:
        timeout = raw["witness_timeout"]
        if isinstance(timeout, bool) or not isinstance(timeout, int | float):
            raise ConfigError(f"witness_timeout must be a number of seconds, got {timeout!r}")
        cfg = replace(cfg, witness_timeout=float(timeout))
    cfg_operators = raw.get("operator_keys", [])
    if not isinstance(cfg_operators, list) or not all(isinstance(k, str) for k in cfg_operators):
        raise ConfigError(
            f"operator_keys must be a list of verifier key strings, got {cfg_operators!r}"
        )
    cfg = replace(cfg, operator_keys=tuple(dict.fromkeys([*cfg_operators, *operator_keys])))
    if "sequencer" in raw:
        cfg = replace(cfg, sequencer=_section(SequencerConfig, raw["sequencer"], "sequencer"))
    if "limits" in raw:
        cfg = replace(cfg, limits=_section(LimitsConfig, raw["limits"], "limits"))
    http = raw.get("http", {})
    if not isinstance(http, Mapping):
        raise ConfigError("[http] must be a table")
    http = dict(http)
    for f in fields(HTTPConfig):
        name = f"FIRMLOG_HTTP_{f.name.upper()}"
        if name in env:
            want = type(getattr(HTTPConfig(), f.name))
            try:
                http[f.name] = want(env[name])
            except ValueError:
                raise ConfigError(
                    f"{name} must be {'an integer' if want is int else 'a number'}, "
                    f"got {env[name]!r}"
                ) from None
    cfg = replace(cfg, http=_section(HTTPConfig, http, "http"))
    return cfg.validate()
