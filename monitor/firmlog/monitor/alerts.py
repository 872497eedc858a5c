"""Content alerts: what the monitor says about the entries the log accepted (DESIGN.md 5).

For every entry its own ledger replay accepts, :meth:`ContentChecks.check`
raises an alert for:

- ``duplicate-version``: a second, different release for one
  (vendor, product, version);
- ``security-version-regression``: a release whose security_version is lower
  than an earlier release of the same (vendor, product, channel);
- ``revocation`` and ``key-rotation``: every one of them;
- ``unannounced-release``: a release of a watched vendor (``--watch-vendor V
  --announced FILE``) whose image digest is not in the vendor's announced
  digests, one hex SHA-256 a line, re-read whenever the file changes: a
  release signed with the vendor's keys that the vendor did not make (a
  stolen signing key).

What the checks remember is compact, two small tables kept in the store
(``release_versions``: (vendor, product, version) -> first index and
identity; ``security_versions``: (vendor, product, channel) -> highest
security_version and its index), never the entries. Changes made while
checking a chunk are pending until :meth:`ContentChecks.commit` (after the
store saved them, in the transaction that advances ``next_index``) or
dropped by :meth:`ContentChecks.rollback`.

:class:`AlertCommand` runs ``--alert-command`` for each alert the store
holds and has not handed to it yet, the alert's JSON on its stdin, off the
follower's path; failures are logged. It reads them from the store, so an
alert stored just before a crash is handed over at the next start (at least
once; at most twice if the crash falls between the command and its mark).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from firmlog.client.entries import KeySet, Release, Revocation
from firmlog.client.ledger import Applied
from firmlog.monitor.store import (
    Alert,
    AsyncStore,
    ContentRows,
    SecurityRow,
    VersionLookup,
    VersionRow,
)

__all__ = [
    "DUPLICATE_VERSION",
    "KEY_ROTATION",
    "REVOCATION",
    "SECURITY_REGRESSION",
    "UNANNOUNCED_RELEASE",
    "AlertCommand",
    "AnnouncedDigests",
    "ContentChecks",
]

log = structlog.get_logger("firmlog.monitor.alerts")

DUPLICATE_VERSION = "duplicate-version"
SECURITY_REGRESSION = "security-version-regression"
REVOCATION = "revocation"
KEY_ROTATION = "key-rotation"
UNANNOUNCED_RELEASE = "unannounced-release"

_DIGEST = re.compile(r"[0-9a-fA-F]{64}")


class AnnouncedDigests:
    """The image digests a vendor announced: a file, one hex SHA-256 a line (blank
    lines and ``#`` comments ignored), re-read when its size, mtime or inode change.
    An unreadable file keeps the digests last read (and logs it)."""

    def __init__(self, vendor: str, path: Path) -> None:
        self.vendor = vendor
        self.path = path
        self.digests: frozenset[str] = frozenset()
        self._stamp: tuple[int, int, int] | None = None

    def current(self) -> frozenset[str]:
        try:
            st = os.stat(self.path)
            stamp = (st.st_ino, st.st_size, st.st_mtime_ns)
            if stamp != self._stamp:
                text = self.path.read_text(encoding="utf-8")
                self.digests = self._parse(text)
                self._stamp = stamp
                log.info(
                    "announced digests read",
                    vendor=self.vendor,
                    path=str(self.path),
                    digests=len(self.digests),
                )
        except (OSError, UnicodeDecodeError) as exc:
            log.error(
                "cannot read the announced digests; keeping the last ones",
                vendor=self.vendor,
                path=str(self.path),
                error=str(exc),
            )
        return self.digests

    def _parse(self, text: str) -> frozenset[str]:
        out = set()
        for number, raw in enumerate(text.splitlines(), 1):
            line = raw.split("#", 1)[0].strip()
            if not line:
                continue
            if _DIGEST.fullmatch(line) is None:
                log.warning(
                    "not a hex SHA-256 digest, ignored",
                    vendor=self.vendor,
                    path=str(self.path),
                    line=number,
                )
                continue
            out.add(line.lower())
        return frozenset(out)


def _no_versions() -> VersionLookup:
    versions: dict[tuple[str, str, str], tuple[int, bytes]] = {}
    return versions


@dataclass(slots=True)
class ContentChecks:
    """The content checks over accepted entries, and the little they remember."""

    watched: dict[str, AnnouncedDigests] = field(default_factory=dict)
    versions: VersionLookup = field(default_factory=_no_versions)
    security: dict[tuple[str, str, str], tuple[int, int]] = field(default_factory=dict)
    _new_versions: dict[tuple[str, str, str], tuple[int, bytes]] = field(default_factory=dict)
    _new_security: dict[tuple[str, str, str], tuple[int, int]] = field(default_factory=dict)
    loaded: bool = False

    @classmethod
    def watching(cls, vendors: tuple[tuple[str, Path], ...]) -> ContentChecks:
        return cls(watched={v: AnnouncedDigests(v, p) for v, p in vendors})

    def load(self, rows: ContentRows, versions: VersionLookup | None = None) -> None:
        """The state as stored (drops anything pending); ``versions``, if given, looks
        the release versions up in the store instead of holding all of ``rows``'."""
        version_rows, security = rows
        self.versions = (
            versions
            if versions is not None
            else {(v, p, ver): (idx, ident) for v, p, ver, idx, ident in version_rows}
        )
        self.security = {(v, p, ch): (sv, idx) for v, p, ch, sv, idx in security}
        self.rollback()
        self.loaded = True

    def pending(self) -> tuple[list[VersionRow], list[SecurityRow]]:
        """The rows to store with the chunk just checked."""
        return (
            [(*k, idx, ident) for k, (idx, ident) in self._new_versions.items()],
            [(*k, sv, idx) for k, (sv, idx) in self._new_security.items()],
        )

    def commit(self) -> None:
        self.versions.update(self._new_versions)
        self.security.update(self._new_security)
        self.rollback()

    def rollback(self) -> None:
        self._new_versions = {}
        self._new_security = {}

    def check(self, applied: Applied, now: int) -> list[Alert]:
        """The alerts for one entry the replay accepted (``applied``)."""
        index, entry, body = applied.index, applied.entry, applied.entry.body
        if isinstance(body, Revocation):
            at = f" (index {applied.revoked})" if applied.revoked is not None else ""
            detail = f"{body.vendor} revoked release {body.release_id}{at}: {body.reason}"
            return [Alert(index, REVOCATION, detail, now)]
        if isinstance(body, KeySet):
            return [
                Alert(
                    index,
                    KEY_ROTATION,
                    f"{body.vendor} rotated its keys to key set serial {body.serial} "
                    f"({len(body.keys)} keys, threshold {body.threshold})",
                    now,
                )
            ]
        if not isinstance(body, Release):
            return []
        alerts = []
        name = f"{body.vendor} {body.product} {body.version}"
        key = (body.vendor, body.product, body.version)
        first = self._new_versions.get(key) or self.versions.get(key)
        if first is None:
            self._new_versions[key] = (index, entry.identity)
        elif first[1] != entry.identity:
            alerts.append(
                Alert(
                    index,
                    DUPLICATE_VERSION,
                    f"a second release of {name} (image {body.image.sha256}); the first is at "
                    f"index {first[0]} ({first[1].hex()})",
                    now,
                )
            )
        line = (body.vendor, body.product, body.channel)
        highest = self._new_security.get(line) or self.security.get(line)
        if highest is None or body.security_version > highest[0]:
            self._new_security[line] = (body.security_version, index)
        elif body.security_version < highest[0]:
            alerts.append(
                Alert(
                    index,
                    SECURITY_REGRESSION,
                    f"{name} on channel {body.channel} has security_version "
                    f"{body.security_version}, lower than {highest[0]} of the release at "
                    f"index {highest[1]}",
                    now,
                )
            )
        announced = self.watched.get(body.vendor)
        if announced is not None and body.image.sha256.lower() not in announced.current():
            alerts.append(
                Alert(
                    index,
                    UNANNOUNCED_RELEASE,
                    f"{name} names image {body.image.sha256}, which {body.vendor} did not "
                    f"announce ({announced.path}): its signing key may be stolen",
                    now,
                )
            )
        return alerts


class AlertCommand:
    """Runs ``command`` (a shell command) for each alert of ``store`` not handed to it
    yet, the JSON on its stdin (with the evidence, for a split view), one at a time in
    the order they were stored, in a task of its own. Call :meth:`wake` after storing
    alerts, and once at start. Each alert is marked once the command ran for it, whatever
    its exit status (a failing command is logged, not retried)."""

    def __init__(self, command: str, store: AsyncStore, origin: str, timeout: float = 60.0) -> None:
        self.command = command
        self.store = store
        self.origin = origin
        self.timeout = timeout
        self._again = False
        self._closed = False
        self._task: asyncio.Task[None] | None = None

    def wake(self) -> None:
        if self._closed:
            return  # stopping: what is left is handed over at the next start
        self._again = True
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._worker(), name="firmlog-monitor-alert-command")

    async def _worker(self) -> None:
        store = self.store.store
        while self._again:
            self._again = False
            while batch := await self.store.run(store.unnotified):
                for alert_id, alert, evidence in batch:
                    message: dict[str, Any] = {"origin": self.origin, **alert.to_json()}
                    if evidence is not None:
                        message["evidence"] = evidence.to_json()
                    await self._run(message)
                    await self.store.run(store.mark_notified, alert_id)

    async def _run(self, message: dict[str, Any]) -> None:
        data = json.dumps(message, sort_keys=True).encode("utf-8") + b"\n"
        proc = None
        try:
            proc = await asyncio.create_subprocess_shell(
                self.command,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
            )
            _, err = await asyncio.wait_for(proc.communicate(data), self.timeout)
            if proc.returncode != 0:
                log.error(
                    "the alert command failed",
                    status=proc.returncode,
                    stderr=err.decode("utf-8", "replace")[-500:],
                    kind=message.get("kind"),
                )
        except asyncio.CancelledError:
            if proc is not None and proc.returncode is None:
                proc.kill()
            raise
        except (OSError, TimeoutError) as exc:
            if proc is not None and proc.returncode is None:
                proc.kill()
                await proc.wait()
            log.error("the alert command failed", error=repr(exc), kind=message.get("kind"))

    async def close(self, grace: float = 5.0) -> None:
        """Wait up to ``grace`` seconds for the alerts stored so far, then stop."""
        self._closed = True
        task = self._task
        if task is None:
            return
        done, _ = await asyncio.wait({task}, timeout=grace)
        if not done:
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
