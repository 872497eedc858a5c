"""c2sp.org/tlog-policy: which logs and witnesses to trust, and the quorum.

::

    log <vkey> [url]
    witness <name> <vkey> [url]
    group <name> all|any|<k> <member>...
    quorum <name>|none

The parser follows the spec: lines end in newline (a last line without one
is accepted), items are separated by spaces and tabs only, blank lines and
``#`` comment lines are ignored, the only control characters allowed are tab
and newline, octets with the high bit set are opaque (bytes that are not
UTF-8 are kept with ``surrogateescape``). Names (witnesses and groups share
one namespace, ``none`` is reserved) must be defined on a preceding line
before a group or the quorum uses them, and each name is listed as a group
member at most once in the whole policy. Two logs or two witnesses wrapping
the same public key are duplicates. Log keys are Ed25519 (type 0x01) vkeys;
witness keys are cosignature/v1 vkeys (type 0x04, or 0x01 as published by the
public witness network). Exactly one quorum line. Limits: 256 logs, 256
witnesses, 256 groups (the spec asks for at least 32), 1 MiB of text.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from firmlog.client.checkpoint import Checkpoint, SignedCheckpoint, check_log_signature
from firmlog.client.cosignature import (
    CosignatureVerifier,
    cosignature_timestamp,
    parse_witness_verifier_key,
)
from firmlog.client.encoding import show
from firmlog.client.errors import KeyFormatError, PolicyFormatError, QuorumError, SignatureError
from firmlog.client.keys import Ed25519Verifier, KeyRing, Verifier, parse_verifier_key
from firmlog.client.note import DEFAULT_MAX_NOTE_SIZE, Signature, split_note, verify_note_signatures

__all__ = [
    "DEFAULT_MAX_FUTURE_SKEW",
    "MAX_POLICY_GROUPS",
    "MAX_POLICY_LOGS",
    "MAX_POLICY_SIZE",
    "MAX_POLICY_WITNESSES",
    "Policy",
    "PolicyGroup",
    "PolicyLog",
    "PolicyWitness",
    "VerifiedCheckpoint",
    "parse_policy",
]

DEFAULT_MAX_FUTURE_SKEW = 300  # seconds a cosignature may be dated ahead of the verifier's clock
MAX_POLICY_LOGS = 256
MAX_POLICY_WITNESSES = 256
MAX_POLICY_GROUPS = 256
MAX_POLICY_SIZE = 1 << 20
NONE = "none"

_BAD_OCTETS = re.compile(b"[^\t\n\x20-\x7e\x80-\xff]")
_BAD_CHARS = re.compile("[\x00-\x08\x0b-\x1f\x7f]")
_TOKEN_BAD = re.compile("[\x00-\x20\x7f]")
_SEPARATOR = re.compile("[ \t]+")
_THRESHOLD = re.compile("[1-9][0-9]{0,8}")


@dataclass(frozen=True, slots=True)
class PolicyLog:
    verifier: Ed25519Verifier
    url: str | None = None


@dataclass(frozen=True, slots=True)
class PolicyWitness:
    name: str
    verifier: CosignatureVerifier
    url: str | None = None


@dataclass(frozen=True, slots=True)
class PolicyGroup:
    name: str
    threshold: int
    members: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class VerifiedCheckpoint:
    """A checkpoint signed by a policy log and cosigned to quorum."""

    signed: SignedCheckpoint
    witnesses: tuple[str, ...]  # names of witnesses with valid cosignatures
    timestamps: dict[str, int]  # witness name -> cosignature time


def _token_problem(value: str) -> str | None:
    if not isinstance(value, str) or not value:
        return "must be a non-empty str"
    if _TOKEN_BAD.search(value):
        return f"must not contain whitespace or control characters, got {show(value)}"
    return None


@dataclass(frozen=True, slots=True)
class Policy:
    """A parsed trust policy.

    The constructor checks the structural rules :func:`parse_policy` checks,
    with the same code, given the items in the order of the fields
    (ValueError otherwise): names unique and not ``none``, group members
    defined before (every witness, and groups earlier in ``groups``) and
    listed at most once overall, 1 <= threshold <= members, no duplicate
    keys, the quorum defined.
    """

    logs: tuple[PolicyLog, ...]
    witnesses: tuple[PolicyWitness, ...]
    groups: tuple[PolicyGroup, ...]
    quorum: str  # a witness name, a group name, or "none"
    _logs_by_origin: dict[str, tuple[Ed25519Verifier, ...]] = field(
        init=False, repr=False, compare=False
    )
    _witness_by_key: dict[tuple[str, int], str] = field(init=False, repr=False, compare=False)
    # origin -> every verifier a checkpoint of that origin is opened with (its
    # log keys and the witness keys), indexed once instead of at each checkpoint.
    _note_verifiers: dict[str, KeyRing[Verifier]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        rules = _Rules()
        for log in self.logs:
            rules.log(log)
        for witness in self.witnesses:
            rules.new_name(witness.name, "witness")
            rules.witness(witness)
        for group in self.groups:
            rules.new_name(group.name, "group")
            rules.group(group)
        rules.quorum(self.quorum)
        self._index()

    @classmethod
    def _checked(
        cls,
        logs: tuple[PolicyLog, ...],
        witnesses: tuple[PolicyWitness, ...],
        groups: tuple[PolicyGroup, ...],
        quorum: str,
    ) -> Policy:
        """The policy of items :class:`_Rules` has checked already (parse_policy)."""
        policy = object.__new__(cls)
        object.__setattr__(policy, "logs", logs)
        object.__setattr__(policy, "witnesses", witnesses)
        object.__setattr__(policy, "groups", groups)
        object.__setattr__(policy, "quorum", quorum)
        policy._index()
        return policy

    def _index(self) -> None:
        by_origin: dict[str, list[Ed25519Verifier]] = {}
        for log in self.logs:
            by_origin.setdefault(log.verifier.name, []).append(log.verifier)
        witness_verifiers = [w.verifier for w in self.witnesses]
        object.__setattr__(
            self, "_logs_by_origin", {name: tuple(vs) for name, vs in by_origin.items()}
        )
        object.__setattr__(
            self,
            "_witness_by_key",
            {(w.verifier.name, w.verifier.key_id): w.name for w in self.witnesses},
        )
        # Key names and IDs are unique across logs and witnesses (a rule), so
        # indexing cannot fail.
        object.__setattr__(
            self,
            "_note_verifiers",
            {
                origin: KeyRing[Verifier]((*logs, *witness_verifiers))
                for origin, logs in by_origin.items()
            },
        )

    def to_text(self) -> str:
        """The policy as tlog-policy text; :func:`parse_policy` gives back an equal Policy."""
        lines: list[str] = []
        for log in self.logs:
            lines.append(" ".join(["log", log.verifier.vkey, *([log.url] if log.url else [])]))
        for w in self.witnesses:
            lines.append(
                " ".join(["witness", w.name, w.verifier.vkey, *([w.url] if w.url else [])])
            )
        for group in self.groups:
            lines.append(" ".join(["group", group.name, _threshold_text(group), *group.members]))
        lines.append(f"quorum {self.quorum}")
        return "\n".join(lines) + "\n"

    def _satisfied(self, witnesses: set[str] | frozenset[str]) -> dict[str, bool]:
        """Whether each group is satisfied (groups only refer to earlier names)."""
        sat: dict[str, bool] = {}
        for group in self.groups:
            count = 0
            for member in group.members:
                if sat.get(member, member in witnesses):
                    count += 1
            sat[group.name] = count >= group.threshold
        return sat

    def satisfied_by(self, witnesses: set[str]) -> bool:
        """Whether a set of witness names that cosigned meets the quorum."""
        if self.quorum == NONE:
            return True
        sat = self._satisfied(witnesses)
        return sat.get(self.quorum, self.quorum in witnesses)

    def describe_quorum(self) -> str:
        """The quorum rule in words, e.g. ``Q = all of (X = 2 of (X1, X2, X3), Y1)``."""
        groups = {g.name: g for g in self.groups}

        def describe(name: str) -> str:
            group = groups.get(name)
            if group is None:
                return name
            if group.threshold == len(group.members):
                count = "all"
            elif group.threshold == 1:
                count = "any"
            else:
                count = str(group.threshold)
            return f"{name} = {count} of ({', '.join(describe(m) for m in group.members)})"

        return "none (no cosignatures required)" if self.quorum == NONE else describe(self.quorum)

    def verify_checkpoint(
        self,
        data: bytes,
        *,
        now: int | None = None,
        max_age: int | None = None,
        max_future_skew: int = DEFAULT_MAX_FUTURE_SKEW,
        split: tuple[str, Sequence[Signature]] | None = None,
    ) -> VerifiedCheckpoint:
        """Open a checkpoint note signed by one of the policy's logs, then check the quorum.

        Cosignatures dated more than ``max_future_skew`` seconds after ``now``
        or (if ``max_age`` is set) older than ``now - max_age`` do not count.
        Raises SignatureError (no policy log signed it), QuorumError (which
        witnesses signed, which were required), Note/CheckpointFormatError.
        A cosignature by a policy witness key that does not verify rejects the
        checkpoint (SignatureError), as the signed-note rules say.

        ``split`` is the note as :func:`~firmlog.client.note.split_note`
        already split it (e.g. parsing a bundle), so as not to split it again;
        it must be what ``split_note(data)`` returns.
        """
        _check_window(max_age, max_future_skew)
        if split is None or len(data) > DEFAULT_MAX_NOTE_SIZE:  # split_note refuses it
            split = split_note(data)
        text, signatures = split
        checkpoint = Checkpoint.parse(text)
        logs = self._logs_by_origin.get(checkpoint.origin)
        if logs is None:
            known = sorted(self._logs_by_origin)
            raise SignatureError(
                f"checkpoint origin {checkpoint.origin!r} is not a log of the policy: "
                f"expected one of {known}"
            )
        note = verify_note_signatures(text, signatures, self._note_verifiers[checkpoint.origin])
        check_log_signature(checkpoint, note, logs)
        signed = SignedCheckpoint(checkpoint, note, bytes(data))
        if now is None:
            now = int(time.time())
        timestamps: dict[str, int] = {}
        rejected: dict[str, str] = {}
        for sig in signed.note.verified:
            name = self._witness_by_key.get((sig.name, sig.key_id))
            if name is None:
                continue  # the log's own signature
            ts = cosignature_timestamp(sig.signature)
            if ts > now + max_future_skew:
                rejected[name] = (
                    f"{name} (dated {ts}, more than {max_future_skew} s after now={now})"
                )
            elif max_age is not None and ts < now - max_age:
                rejected[name] = f"{name} (dated {ts}, older than max_age={max_age} s)"
            elif ts > timestamps.get(name, -1):
                timestamps[name] = ts
        if rejected:
            for name in timestamps:
                rejected.pop(name, None)  # another cosignature by this witness counted
        valid = [w.name for w in self.witnesses if w.name in timestamps]
        if not self.satisfied_by(set(valid)):
            not_counted = f"; not counted: {', '.join(rejected.values())}" if rejected else ""
            raise QuorumError(
                f"checkpoint {checkpoint.origin!r} at size {checkpoint.tree_size} does not meet "
                f"the policy quorum: required {self.describe_quorum()}; valid cosignatures "
                f"from {valid if valid else 'no witness'}{not_counted}"
            )
        return VerifiedCheckpoint(signed, tuple(valid), {n: timestamps[n] for n in valid})


def _check_window(max_age: int | None, max_future_skew: int) -> None:
    if max_future_skew < 0:
        raise ValueError(f"max_future_skew must be >= 0, got {max_future_skew}")
    if max_age is not None and max_age < 0:
        raise ValueError(f"max_age must be >= 0, got {max_age}")


def _threshold_text(group: PolicyGroup) -> str:
    if group.threshold == len(group.members):
        return "all"
    if group.threshold == 1:
        return "any"
    return str(group.threshold)


class _Rules:
    """The structural rules of a policy, each checked here and nowhere else.

    Items come one at a time, in order: :func:`parse_policy` gives them line
    by line (``line`` is the line's number, errors are PolicyFormatError
    naming it and the earlier line a conflict is with), Policy's constructor
    in the order of its fields (``line`` is None, errors are ValueError).
    A name is defined by the item that defines it, for the items after it.
    """

    def __init__(self) -> None:
        self.line: int | None = None
        self.names: dict[str, int | None] = {}  # witness or group name -> line defined
        self.member_of: dict[str, tuple[str, int | None]] = {}  # name -> (group, line)
        self.log_keys: dict[bytes, int | None] = {}
        self.witness_keys: dict[bytes, int | None] = {}
        self.key_ids: dict[tuple[str, int], int | None] = {}

    def error(self, message: str) -> ValueError:
        if self.line is None:
            return ValueError(message)
        return PolicyFormatError(f"policy line {self.line}: {message}")

    def key_ident(self, name: str, key_id: int) -> None:
        ident = (name, key_id)
        if ident in self.key_ids:
            if self.line is None:
                raise self.error(f"two keys share the key name and key ID {name}+{key_id:08x}")
            raise self.error(
                f"key {name}+{key_id:08x} has the same key name and key ID as the key on "
                f"line {self.key_ids[ident]}"
            )
        self.key_ids[ident] = self.line

    def url(self, what: str, url: str | None) -> None:
        problem = None if url is None else _token_problem(url)
        if problem is not None:
            raise self.error(f"{what}: URL {problem}")

    def log(self, log: PolicyLog) -> None:
        verifier = log.verifier
        if verifier.public_key in self.log_keys:
            if self.line is None:
                raise self.error(f"duplicate log key {verifier.vkey}")
            raise self.error(
                f"duplicate log: same public key as the log on line "
                f"{self.log_keys[verifier.public_key]}"
            )
        self.key_ident(verifier.name, verifier.key_id)
        self.log_keys[verifier.public_key] = self.line
        self.url(f"log {verifier.vkey}", log.url)

    def new_name(self, name: str, what: str) -> None:
        """``name`` may name a new witness or group (``what``)."""
        problem = _token_problem(name)
        if problem is not None:
            raise self.error(f"name {problem}")
        if name == NONE:
            kind = "witness or group" if self.line is None else what
            raise self.error(f"'none' is reserved and cannot name a {kind}")
        if name in self.names:
            if self.line is None:
                raise self.error(f"name {name!r} is defined twice")
            raise self.error(f"name {show(name)} is already defined on line {self.names[name]}")

    def witness(self, witness: PolicyWitness) -> None:
        """After :meth:`new_name`."""
        name, verifier = witness.name, witness.verifier
        if verifier.public_key in self.witness_keys:
            if self.line is None:
                raise self.error(f"witness {name!r}: duplicate witness key {verifier.vkey}")
            raise self.error(
                f"duplicate witness {show(name)}: same public key as the witness on line "
                f"{self.witness_keys[verifier.public_key]}"
            )
        self.key_ident(verifier.name, verifier.key_id)
        self.witness_keys[verifier.public_key] = self.line
        self.url(f"witness {name!r}", witness.url)
        self.names[name] = self.line

    def group(self, group: PolicyGroup, threshold_text: str | None = None) -> None:
        """After :meth:`new_name`. ``threshold_text`` is how the policy text
        wrote the threshold (parse_policy reads what is not all, any or a
        decimal as 0)."""
        name, members = group.name, group.members
        if not members:
            raise self.error(f"group {name!r} has no members")
        for member in members:
            if member not in self.names:
                if self.line is None:
                    raise self.error(
                        f"group {name!r}: member {member!r} is not a witness or an earlier group"
                    )
                if member == NONE:
                    raise self.error(f"group {show(name)}: 'none' cannot be a group member")
                raise self.error(
                    f"group {show(name)}: member {show(member)} is not defined on a preceding line"
                )
            if member in self.member_of:
                if self.line is None:
                    raise self.error(
                        f"group {name!r}: {member!r} is already a group member; "
                        "each name can be listed as a member at most once"
                    )
                other, line = self.member_of[member]
                where = "this group" if other == name else f"group {show(other)} on line {line}"
                raise self.error(
                    f"group {show(name)}: {show(member)} is already a member of {where}; "
                    "each name can be listed as a group member at most once"
                )
            self.member_of[member] = (name, self.line)
        if not 1 <= group.threshold <= len(members):
            if threshold_text is None:
                raise self.error(
                    f"group {name!r}: threshold must be between 1 and "
                    f"{len(members)}, got {group.threshold}"
                )
            raise self.error(
                f"group {show(name)}: threshold must be 'all', 'any' or a decimal k with "
                f"1 <= k <= {len(members)} (the number of members), got {show(threshold_text)}"
            )
        self.names[name] = self.line

    def quorum(self, name: str) -> None:
        if name != NONE and name not in self.names:
            if self.line is None:
                raise self.error(f"quorum {name!r} is not a witness, a group or 'none'")
            raise self.error(
                f"quorum {show(name)} is not 'none' or a witness or group defined on a "
                "preceding line"
            )


class _Parser:
    """Line-by-line state of :func:`parse_policy`: the syntax of each line and
    the limits here, the structural rules in :class:`_Rules`."""

    def __init__(self) -> None:
        self.rules = _Rules()
        self.logs: list[PolicyLog] = []
        self.witnesses: list[PolicyWitness] = []
        self.groups: list[PolicyGroup] = []
        self.quorum: str | None = None
        self.quorum_line = 0

    def parse_line(self, line: int, tokens: list[str]) -> None:
        self.rules.line = line
        keyword, args = tokens[0], tokens[1:]
        if keyword == "log":
            self.log(args)
        elif keyword == "witness":
            self.witness(args)
        elif keyword == "group":
            self.group(args)
        elif keyword == "quorum":
            self.set_quorum(args)
        else:
            raise self.rules.error(
                f"unknown keyword {show(keyword)}: expected log, witness, group or quorum"
            )

    def log(self, args: list[str]) -> None:
        error = self.rules.error
        if len(args) not in (1, 2):
            raise error(f"expected 'log <vkey> [<url>]', got {len(args)} items after 'log'")
        if len(self.logs) >= MAX_POLICY_LOGS:
            raise error(f"too many logs: at most {MAX_POLICY_LOGS}")
        try:
            verifier = parse_verifier_key(args[0])
        except KeyFormatError as exc:
            raise error(f"invalid log key: {exc}") from None
        log = PolicyLog(verifier, args[1] if len(args) == 2 else None)
        self.rules.log(log)
        self.logs.append(log)

    def witness(self, args: list[str]) -> None:
        error = self.rules.error
        if len(args) not in (2, 3):
            raise error(
                f"expected 'witness <name> <vkey> [<url>]', got {len(args)} items after 'witness'"
            )
        if len(self.witnesses) >= MAX_POLICY_WITNESSES:
            raise error(f"too many witnesses: at most {MAX_POLICY_WITNESSES}")
        name = args[0]
        self.rules.new_name(name, "witness")
        try:
            verifier = parse_witness_verifier_key(args[1])
        except KeyFormatError as exc:
            raise error(f"invalid key for witness {show(name)}: {exc}") from None
        witness = PolicyWitness(name, verifier, args[2] if len(args) == 3 else None)
        self.rules.witness(witness)
        self.witnesses.append(witness)

    def group(self, args: list[str]) -> None:
        error = self.rules.error
        if len(args) < 3:
            raise error(
                "expected 'group <name> all|any|<k> <member>...' with at least one member, "
                f"got {len(args)} items after 'group'"
            )
        if len(self.groups) >= MAX_POLICY_GROUPS:
            raise error(f"too many groups: at most {MAX_POLICY_GROUPS}")
        name, threshold_text, members = args[0], args[1], tuple(args[2:])
        self.rules.new_name(name, "group")
        if threshold_text == "all":
            threshold = len(members)
        elif threshold_text == "any":
            threshold = 1
        elif _THRESHOLD.fullmatch(threshold_text):
            threshold = int(threshold_text)
        else:
            threshold = 0  # not a threshold: the rules refuse it
        group = PolicyGroup(name, threshold, members)
        self.rules.group(group, threshold_text)
        self.groups.append(group)

    def set_quorum(self, args: list[str]) -> None:
        error = self.rules.error
        if len(args) != 1:
            raise error(f"expected 'quorum <name>', got {len(args)} items after 'quorum'")
        if self.quorum is not None:
            raise error(
                f"second quorum line (the first is on line {self.quorum_line}); "
                "a policy has exactly one"
            )
        self.rules.quorum(args[0])
        self.quorum = args[0]
        self.quorum_line = self.rules.line or 0


def parse_policy(text: str | bytes) -> Policy:
    """Strict parse per the spec. PolicyFormatError names the line and the problem."""
    if isinstance(text, bytes | bytearray | memoryview):
        raw = bytes(text)
        if len(raw) > MAX_POLICY_SIZE:
            raise PolicyFormatError(
                f"policy too large: expected at most {MAX_POLICY_SIZE} bytes, got {len(raw)}"
            )
        bad_octet = _BAD_OCTETS.search(raw)
        if bad_octet is not None:
            line = raw.count(b"\n", 0, bad_octet.start()) + 1
            raise PolicyFormatError(_octet_message(line, bad_octet.group()[0]))
        text = raw.decode("utf-8", errors="surrogateescape")
    elif isinstance(text, str):
        if len(text) > MAX_POLICY_SIZE:
            raise PolicyFormatError(
                f"policy too large: expected at most {MAX_POLICY_SIZE} characters, got {len(text)}"
            )
        bad_char = _BAD_CHARS.search(text)
        if bad_char is not None:
            line = text.count("\n", 0, bad_char.start()) + 1
            raise PolicyFormatError(_octet_message(line, ord(bad_char.group())))
    else:
        raise TypeError(f"policy must be str or bytes, got {type(text).__name__}")
    parser = _Parser()
    for number, raw_line in enumerate(text.split("\n"), 1):
        stripped = raw_line.strip(" \t")
        if not stripped or stripped.startswith("#"):
            continue
        parser.parse_line(number, _SEPARATOR.split(stripped))
    if parser.quorum is None:
        raise PolicyFormatError("policy has no quorum line: expected exactly one")
    return Policy._checked(
        tuple(parser.logs), tuple(parser.witnesses), tuple(parser.groups), parser.quorum
    )


def _octet_message(line: int, octet: int) -> str:
    hint = " (CRLF line endings?)" if octet == 0x0D else ""
    return (
        f"policy line {line}: octet 0x{octet:02x} is not allowed{hint}; "
        "only tab, newline, 0x20-0x7e and 0x80-0xff are"
    )
