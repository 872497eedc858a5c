"""Firmware escrow: images of logged releases, stored by content address.

An image is accepted only when a logged release names its SHA-256 digest and
size; it is written to a temporary file while it is hashed, checked, flushed
to disk and renamed into ``<dir>/sha256/<hex>``, so a stored image is always
complete. On the way out the file is hashed again before a byte is sent: a
corrupted image is moved to ``<dir>/corrupt/``, reported, and never served;
the vendor (or anyone holding the image) can upload it again.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from collections.abc import AsyncIterator, Set
from pathlib import Path
from typing import BinaryIO

import structlog

from firmlog.server.errors import ImageCorrupt, ImageNotLogged, ImageRejected
from firmlog.service.files import fsync_dir

log = structlog.get_logger("firmlog.escrow")

CHUNK = 1 << 20


def _hash_file(path: Path) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


class ImageStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self._images = root / "sha256"
        self._tmp = root / "tmp"
        self._corrupt = root / "corrupt"

    def open(self) -> None:
        for d in (self._images, self._tmp, self._corrupt):
            d.mkdir(parents=True, exist_ok=True)

    def path(self, sha256: str) -> Path:
        return self._images / sha256

    async def put(self, sha256: str, sizes: Set[int], body: AsyncIterator[bytes]) -> bool:
        """Store the image streamed in ``body``; True if it was new, False if already held.

        ``sizes`` are the sizes logged releases give this digest (empty: none
        names it). Raises ImageNotLogged or ImageRejected; nothing is kept then.
        """
        if not sizes:
            raise ImageNotLogged(f"no logged release names image sha256:{sha256}")
        loop = asyncio.get_running_loop()
        limit = max(sizes)
        tmp = self._tmp / f"{sha256}.{os.getpid()}.{time.monotonic_ns()}"
        digest = hashlib.sha256()
        size = 0
        f = await loop.run_in_executor(None, tmp.open, "wb")
        try:
            async for chunk in body:
                size += len(chunk)
                if size > limit:
                    raise ImageRejected(f"image is larger than the {limit} bytes its release names")
                await loop.run_in_executor(None, f.write, chunk)
                digest.update(chunk)
            await loop.run_in_executor(None, _flush, f)
        except BaseException:
            f.close()
            tmp.unlink(missing_ok=True)
            raise
        f.close()
        got = digest.hexdigest()
        if got != sha256 or size not in sizes:
            tmp.unlink(missing_ok=True)
            want = " or ".join(str(s) for s in sorted(sizes))
            raise ImageRejected(
                f"uploaded image does not match its release: expected sha256:{sha256} of "
                f"{want} bytes, got sha256:{got} of {size} bytes"
            )
        final = self.path(sha256)
        existed = final.exists()
        await loop.run_in_executor(None, os.replace, tmp, final)
        await loop.run_in_executor(None, fsync_dir, self._images)
        log.info("image stored", sha256=sha256, size=size, replaced=existed)
        return not existed

    async def verified_path(self, sha256: str) -> Path:
        """The path of a stored image that still matches its digest.

        Raises FileNotFoundError if not held, ImageCorrupt (after quarantining
        the file) if its bytes changed.
        """
        path = self.path(sha256)
        if not path.is_file():
            raise FileNotFoundError(f"image sha256:{sha256} is not held in escrow")
        got, size = await asyncio.get_running_loop().run_in_executor(None, _hash_file, path)
        if got != sha256:
            quarantined = self._corrupt / f"{sha256}.{int(time.time())}"
            os.replace(path, quarantined)
            log.error(
                "stored image failed its digest check",
                sha256=sha256,
                got=got,
                size=size,
                quarantined=str(quarantined),
            )
            raise ImageCorrupt(
                f"the stored image sha256:{sha256} failed its digest check (its bytes hash to "
                f"{got}); it was quarantined and will not be served: upload it again"
            )
        return path


def _flush(f: BinaryIO) -> None:
    f.flush()
    os.fsync(f.fileno())
