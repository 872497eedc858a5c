"""The monitor's configuration: one frozen dataclass, validated at start (bad config fails fast)."""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

from firmlog.client.keys import Ed25519Verifier
from firmlog.service.http import HTTPConfig

__all__ = ["ConfigError", "MonitorConfig"]


class ConfigError(ValueError):
    """The configuration is unusable; the message says what to change."""


@dataclass(frozen=True, slots=True)
class MonitorConfig:
    """What ``firmlog-monitor run`` was told.

    ``log_key`` is the log's verifier key (its name is the origin);
    ``operator_keys`` are the log operator's keys the monitor's own ledger
    replay trusts to admit vendors (the monitor never takes key sets from the
    log's API); ``watch_vendors`` pairs a vendor with its announced-digests
    file, ``alert_command`` runs for each new alert (firmlog.monitor.alerts).
    Times are seconds.
    """

    data_dir: Path
    log_url: str
    log_key: Ed25519Verifier
    operator_keys: tuple[Ed25519Verifier, ...] = ()
    listen_host: str = "127.0.0.1"
    listen_port: int = 8081
    peers: tuple[str, ...] = ()
    poll_interval: float = 5.0
    gossip_interval: float = 30.0  # seconds between exchanges with the peers
    max_backoff: float = 300.0
    request_timeout: float = 10.0
    max_checkpoint_size: int = 1 << 20
    max_bundle_size: int = 16 << 20
    max_request_size: int = 1 << 20  # an add-checkpoint body
    chunk_tiles: int = 16  # entry bundles fetched, verified and replayed per transaction
    fetch_concurrency: int = 8
    watch_vendors: tuple[tuple[str, Path], ...] = ()
    alert_command: str | None = None
    http: HTTPConfig = field(default_factory=HTTPConfig)  # how long a client may take

    @property
    def origin(self) -> str:
        return self.log_key.name

    @property
    def database_path(self) -> Path:
        return self.data_dir / "monitor.db"

    def validate(self) -> MonitorConfig:
        for what, url in [("--log-url", self.log_url), *(("--peer", p) for p in self.peers)]:
            parts = urllib.parse.urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise ConfigError(f"{what} must be an http:// or https:// URL, got {url!r}")
        if not 0 < self.listen_port < 65536:
            raise ConfigError(f"listen port must be 1..65535, got {self.listen_port}")
        for name in ("poll_interval", "gossip_interval", "max_backoff", "request_timeout"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be positive, got {getattr(self, name)}")
        if self.chunk_tiles < 1 or self.fetch_concurrency < 1:
            raise ConfigError("chunk_tiles and fetch_concurrency must be at least 1")
        vendors = [v for v, _ in self.watch_vendors]
        if len(set(vendors)) != len(vendors):
            raise ConfigError("--watch-vendor names a vendor twice")
        for vendor, path in self.watch_vendors:
            if not path.is_file():
                raise ConfigError(f"--announced {path} (of vendor {vendor}) is not a file")
        if self.alert_command is not None and not self.alert_command.strip():
            raise ConfigError("--alert-command must not be empty")
        return self
