"""Witnessing: the log collects cosignatures before it publishes a checkpoint.

The witness policy is tlog-policy text whose ``witness`` lines carry the
witnesses' URLs (the tlog-witness submission prefix) and a quorum; its
``log`` lines, if any, are ignored (the log is this server's key). For each
new checkpoint :class:`WitnessCollector` posts ``add-checkpoint`` (c2sp.org/
tlog-witness) to every witness in parallel, with a consistency proof from
the size that witness last cosigned (0 at first; a 409 answer says which
size it knows, and is retried once with a proof from there). It verifies
each returned cosignature against the witness's key in the policy (others
are dropped), and returns the note with the valid cosignatures once the
policy's quorum is met; :class:`WitnessingFailed` past the timeout.
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

import structlog
from aiohttp import ClientError, ClientSession, ClientTimeout

from firmlog.client.errors import FormatError, VerificationError
from firmlog.client.keys import Ed25519Verifier
from firmlog.client.note import Signature, add_signatures, split_note
from firmlog.client.policy import Policy, PolicyLog, PolicyWitness, parse_policy

__all__ = ["WitnessCollector", "WitnessingFailed", "load_witness_policy"]

log = structlog.get_logger("firmlog.witnessing")

SIZE_CONTENT_TYPE = "text/x.tlog.size"
MAX_RESPONSE = 64 * 1024

ConsistencyProof = Callable[[int, int], Awaitable[list[bytes]]]


class WitnessingFailed(Exception):
    """The quorum of cosignatures was not met in time."""


def load_witness_policy(path: Path) -> Policy:
    """Parse the policy file (OSError, PolicyFormatError); ValueError if it names
    no witness with a URL."""
    policy = parse_policy(path.read_bytes())
    if not any(w.url for w in policy.witnesses):
        raise ValueError(f"{path}: no witness line carries a URL")
    return policy


class _Refused(Exception):
    pass


class WitnessCollector:
    def __init__(
        self,
        policy: Policy,
        log_key: Ed25519Verifier,
        session: ClientSession,
        consistency_proof: ConsistencyProof,
        *,
        timeout: float = 10.0,
    ) -> None:
        # The policy a checkpoint must meet: this log's key, the file's witnesses and quorum.
        self.policy = Policy((PolicyLog(log_key),), policy.witnesses, policy.groups, policy.quorum)
        self._witnesses: tuple[PolicyWitness, ...] = tuple(w for w in policy.witnesses if w.url)
        self._session = session
        self._proof = consistency_proof
        self._timeout = timeout
        self._sizes: dict[str, int] = {}  # witness name -> the size it cosigned last

    def cosigned(self, note: bytes) -> bool:
        """Whether ``note`` carries the quorum (and the log's signature)."""
        try:
            self.policy.verify_checkpoint(note)
        except (FormatError, VerificationError, ValueError):
            return False
        return True

    async def collect(self, note: bytes, tree_size: int) -> bytes:
        """``note`` (the log's signed checkpoint of ``tree_size``) with the
        witnesses' valid cosignatures, once they meet the quorum."""
        text, _ = split_note(note)
        if self.policy.satisfied_by(set()):
            return note
        tasks = {
            asyncio.create_task(self._witness(w, note, text, tree_size)): w for w in self._witnesses
        }
        got: dict[str, Signature] = {}
        deadline = time.monotonic() + self._timeout
        try:
            pending = set(tasks)
            while pending and not self.policy.satisfied_by(set(got)):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                done, pending = await asyncio.wait(
                    pending, timeout=remaining, return_when=asyncio.FIRST_COMPLETED
                )
                for task in done:
                    witness = tasks[task]
                    exc = task.exception()
                    if exc is None:
                        got[witness.name] = task.result()
                    else:
                        log.warning(
                            "witness did not cosign",
                            witness=witness.name,
                            tree_size=tree_size,
                            error=f"{type(exc).__name__}: {exc}",
                        )
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        if not self.policy.satisfied_by(set(got)):
            raise WitnessingFailed(
                f"checkpoint of size {tree_size}: cosignatures from "
                f"{sorted(got) or 'no witness'}; required {self.policy.describe_quorum()}"
            )
        cosigned = add_signatures(note, [got[w.name] for w in self._witnesses if w.name in got])
        log.info("checkpoint cosigned", tree_size=tree_size, witnesses=sorted(got))
        return cosigned

    async def _witness(
        self, witness: PolicyWitness, note: bytes, text: str, tree_size: int
    ) -> Signature:
        for attempt in range(2):
            old = self._sizes.get(witness.name, 0)
            if old > tree_size:
                raise _Refused(f"the witness knows size {old}, beyond {tree_size}")
            proof = await self._proof(old, tree_size) if 0 < old < tree_size else []
            status, ctype, body = await self._post(witness, old, proof, note)
            if status == 200:
                signature = _cosignature(witness, text, body)
                self._sizes[witness.name] = tree_size
                return signature
            if status == 409 and ctype == SIZE_CONTENT_TYPE and attempt == 0:
                known = _size(body)
                if known is None or known == old:
                    raise _Refused(f"409 with size {body[:40]!r}")
                self._sizes[witness.name] = known
                continue
            raise _Refused(f"HTTP {status}: {body[:200].decode('utf-8', 'replace')}")
        raise _Refused("still 409 after catching it up")

    async def _post(
        self, witness: PolicyWitness, old: int, proof: Sequence[bytes], note: bytes
    ) -> tuple[int, str, bytes]:
        assert witness.url is not None
        body = f"old {old}\n".encode() + b"".join(base64.b64encode(h) + b"\n" for h in proof)
        url = witness.url.rstrip("/") + "/add-checkpoint"
        try:
            async with self._session.post(
                url, data=body + b"\n" + note, timeout=ClientTimeout(total=self._timeout)
            ) as resp:
                data = await resp.content.read(MAX_RESPONSE)
                return resp.status, resp.content_type, data
        except (ClientError, TimeoutError) as exc:
            raise _Refused(f"{url}: {type(exc).__name__}: {exc}") from exc


def _size(body: bytes) -> int | None:
    text = body.decode("ascii", "replace")
    if not text.endswith("\n") or not text[:-1].isdigit():
        return None
    return int(text[:-1])


def _cosignature(witness: PolicyWitness, text: str, body: bytes) -> Signature:
    """The witness's valid cosignature among the lines of ``body``."""
    verifier = witness.verifier
    try:
        _, signatures = split_note(text.encode() + b"\n" + body)
    except FormatError as exc:
        raise _Refused(f"not signature lines: {exc}") from exc
    for sig in signatures:
        if (
            sig.name == verifier.name
            and sig.key_id == verifier.key_id
            and verifier.verify(text.encode(), sig.signature)
        ):
            return sig
    raise _Refused("no valid cosignature by the witness's key in the answer")
