"""Files that survive a crash: created once, or replaced whole.

The log server's keys, config and published checkpoint, and the monitor's
witness key, are written through these. A reader sees a file whole or not at
all; once a call returns, what it wrote survives a power loss; processes that
share a directory never mix their writes.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

__all__ = ["check_writable", "fsync_dir", "replace_file", "write_new"]


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

    Returns False if another process created it first (several processes may
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


def check_writable(directory: Path) -> str | None:
    """Why files cannot be created in ``directory``, or None if they can."""
    probe = _tmp_name(directory / "write-test")
    try:
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        probe.unlink()
    except OSError as exc:
        return str(exc.strerror or exc)
    return None
