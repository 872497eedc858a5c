"""``firmlog``: keys, entries, submission, device verification, mirroring, inspection.

The command-line contract of DESIGN.md section 8 (options may be added,
never renamed)::

    firmlog keygen NAME
    firmlog vendor admit --operator-key OP.key --vendor V --key VKEY [--key ...] [--threshold K]
    firmlog release create --key K.key [--key K2.key] --vendor V --product P --version X
            --security-version N --image FILE [--channel C] [--source-uri U --source-commit C]
            [--builder B] [--build-time T] [--reproducible] [--hardware-revision R ...]
            [--sbom FILE] [--fix CVE ...] [--changelog TEXT]
    firmlog revoke --key K.key ... --vendor V --release ID --reason R [--advisory A]
    firmlog rotate-keys --key K.key ... --vendor V --new-key VKEY ... [--threshold K] --serial N
    firmlog submit --log URL FILE
    firmlog verify --image FILE --bundle FILE --policy FILE --vendor-key VKEY [...]
            [--threshold K] [--product P] [--installed-security-version N] [--state FILE]
            [--log URL] [--gossip URL ...]
    firmlog mirror --log URL --log-key VKEY --dir DIR
    firmlog mirror --verify --log-key VKEY --dir DIR
    firmlog inspect FILE
    firmlog evidence verify FILE --log-key VKEY
    firmlog log info --log URL [--log-key VKEY]
    firmlog search --log URL [--vendor V] [--product P] [--version X] [--cve CVE]
            [--digest HEX] [--order asc|desc] [--limit N] [--cursor C] [--all]
    firmlog get --log URL (--index N | --id HEX) [--log-key VKEY]
            [--out-entry FILE] [--out-bundle FILE]

``--json`` (verify, submit, inspect, mirror, log info, search, get) prints one
JSON document on stdout instead of the text for people: ``{"ok": true, ...}``,
or on failure ``{"ok": false, "error", "kind", "exit_code"}`` (the message is on
stderr too; the exit code is the same). ``FIRMLOG_LOG`` and ``FIRMLOG_LOG_KEY``
are the defaults of ``--log`` and ``--log-key`` wherever they exist.
"""

from __future__ import annotations

import argparse
import base64
import datetime
import hashlib
import json
import os
import re
import sys
import time
import urllib.parse
from collections.abc import Callable, Sequence
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from firmlog.client.bundle import HEADER as BUNDLE_HEADER
from firmlog.client.bundle import ProofBundle
from firmlog.client.checkpoint import Checkpoint, open_checkpoint
from firmlog.client.cosignature import (
    cosignature_timestamp,
    generate_witness_key,
    parse_witness_signer_key,
)
from firmlog.client.entries import (
    Build,
    Entry,
    EntryBody,
    Image,
    KeySet,
    Release,
    Revocation,
    VendorAdmission,
    entry_json,
    parse_entry,
    sign_entry,
)
from firmlog.client.errors import (
    EvidenceFormatError,
    FirmlogError,
    FormatError,
    HTTPStatusError,
    SignatureError,
    SplitViewError,
    TransportError,
    UpdateRefused,
    VerificationError,
)
from firmlog.client.evidence import SplitViewEvidence
from firmlog.client.keys import (
    SIG_COSIGNATURE_V1,
    SIG_ED25519,
    Ed25519Signer,
    Ed25519Verifier,
    check_key_name,
    generate_key,
    parse_signer_key,
    parse_verifier_key,
    split_signer_key,
)
from firmlog.client.merkle import leaf_hash, verify_inclusion
from firmlog.client.note import Signature, split_note
from firmlog.client.policy import Policy, parse_policy

if TYPE_CHECKING:
    from firmlog.client.online import LogClient

__all__ = ["EXIT_OK", "EXIT_REFUSED", "EXIT_TRANSPORT", "EXIT_USAGE", "main"]

EXIT_OK = 0
EXIT_REFUSED = 1
EXIT_USAGE = 2
EXIT_TRANSPORT = 3

EXIT_CODES = """\
exit codes:
  0  success (for verify: the image may be installed)
  1  refused: verification failed, or the log rejected the entry
  2  usage or input error (bad option, unreadable or malformed file)
  3  transport error (the log could not be reached or answered with an error)
"""

_CHUNK_SIZE = 1 << 20
_HEX64 = re.compile("[0-9a-f]{64}")
_CVE = re.compile("CVE-[0-9]{4}-[0-9]{4,19}")
ENV_LOG = "FIRMLOG_LOG"
ENV_LOG_KEY = "FIRMLOG_LOG_KEY"


class UsageError(Exception):
    """Bad input on the command line or in a file it names: exit 2."""


# -- small helpers -------------------------------------------------------------------


def _read(path: str, what: str) -> bytes:
    try:
        if path == "-":
            return sys.stdin.buffer.read()
        return Path(path).read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read {what} {path}: {exc.strerror or exc}") from exc


def _signer(path: str) -> Ed25519Signer:
    text = _read(path, "key file").decode("utf-8", "replace").strip()
    try:
        return parse_signer_key(text)
    except FormatError as exc:
        raise UsageError(f"{path}: not a signer key: {exc}") from exc


def _signers(paths: Sequence[str]) -> list[Ed25519Signer]:
    return [_signer(p) for p in paths]


def _vkey(value: str, option: str) -> str:
    try:
        return parse_verifier_key(value).vkey
    except FormatError as exc:
        raise UsageError(f"{option}: {exc}") from exc


def _sha256_file(path: str) -> tuple[str, int]:
    """SHA-256 (hex) and size of a file, read in chunks."""
    hasher = hashlib.sha256()
    size = 0
    try:
        with open(path, "rb") as f:
            while chunk := f.read(_CHUNK_SIZE):
                hasher.update(chunk)
                size += len(chunk)
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror or exc}") from exc
    return hasher.hexdigest(), size


def _output(data: bytes, path: str | None) -> None:
    if path is None or path == "-":
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
    else:
        try:
            Path(path).write_bytes(data)
        except OSError as exc:
            raise UsageError(f"cannot write {path}: {exc.strerror or exc}") from exc


def _sign(body: EntryBody, key_paths: Sequence[str], output: str | None) -> int:
    signers = _signers(key_paths)
    note = sign_entry(body, signers)
    _output(note, output)
    return EXIT_OK


def _err(message: str) -> None:
    print(f"firmlog: {message}", file=sys.stderr)


def _emit(doc: dict[str, Any]) -> None:
    """The one JSON document of a --json run, on stdout."""
    print(json.dumps(doc, indent=2, ensure_ascii=False))


def _json_failure(
    args: argparse.Namespace, code: int, message: str, kind: str, **extra: Any
) -> int:
    """With --json, the failure as a JSON object on stdout (the message is on stderr)."""
    if getattr(args, "json", False):
        _emit({"ok": False, "error": message, "kind": kind, "exit_code": code, **extra})
    return code


def _log_key(value: str, option: str = "--log-key") -> Ed25519Verifier:
    try:
        return parse_verifier_key(value)
    except FormatError as exc:
        raise UsageError(f"{option}: {exc}") from exc


def _checkpoint_json(cp: Checkpoint) -> dict[str, Any]:
    return {"origin": cp.origin, "tree_size": cp.tree_size, "root_hash": cp.root_hash.hex()}


# -- commands -------------------------------------------------------------------------


def cmd_keygen(args: argparse.Namespace) -> int:
    name: str = args.name
    try:
        check_key_name(name)
    except FormatError as exc:
        raise UsageError(str(exc)) from exc
    path = Path(args.out) if args.out else Path(name.replace("/", "_") + ".key")
    if args.witness:
        witness = generate_witness_key(name)
        skey, vkey = witness.skey, witness.verifier.vkey
    else:
        signer = generate_key(name)
        skey, vkey = signer.skey, signer.verifier.vkey
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise UsageError(f"{path} exists: refusing to overwrite a key") from None
    except OSError as exc:
        raise UsageError(f"cannot create {path}: {exc.strerror or exc}") from exc
    try:
        os.fchmod(fd, 0o600)  # whatever the umask
        os.write(fd, (skey + "\n").encode("ascii"))
        os.fsync(fd)
    finally:
        os.close(fd)
    print(f"wrote the signer key to {path} (keep it secret); its verifier key:", file=sys.stderr)
    print(vkey)
    return EXIT_OK


def cmd_vendor_admit(args: argparse.Namespace) -> int:
    keys = tuple(_vkey(k, "--key") for k in args.key)
    body = VendorAdmission(vendor=args.vendor, keys=keys, threshold=args.threshold)
    return _sign(body, [args.operator_key], args.output)


def _build_time(value: str | None) -> str:
    if value is not None:
        return value
    now = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
    return now.strftime("%Y-%m-%dT%H:%M:%SZ")


def cmd_release_create(args: argparse.Namespace) -> int:
    if (args.source_uri is None) != (args.source_commit is None):
        raise UsageError("--source-uri and --source-commit go together: give both or neither")
    digest, size = _sha256_file(args.image)
    sbom = _sha256_file(args.sbom)[0] if args.sbom else None
    body = Release(
        vendor=args.vendor,
        product=args.product,
        hardware_revisions=tuple(args.hardware_revision),
        version=args.version,
        security_version=args.security_version,
        channel=args.channel,
        image=Image(sha256=digest, size=size),
        build=Build(
            time=_build_time(args.build_time),
            source_uri=args.source_uri,
            source_commit=args.source_commit,
            builder=args.builder,
            reproducible=args.reproducible,
        ),
        sbom_sha256=sbom,
        fixes=tuple(args.fix),
        changelog=args.changelog,
    )
    return _sign(body, args.key, args.output)


def cmd_revoke(args: argparse.Namespace) -> int:
    body = Revocation(
        vendor=args.vendor,
        release_id=args.release,
        reason=args.reason,
        advisory=args.advisory,
    )
    return _sign(body, args.key, args.output)


def cmd_rotate_keys(args: argparse.Namespace) -> int:
    keys = tuple(_vkey(k, "--new-key") for k in args.new_key)
    body = KeySet(vendor=args.vendor, keys=keys, threshold=args.threshold, serial=args.serial)
    return _sign(body, args.key, args.output)


def cmd_submit(args: argparse.Namespace) -> int:
    entry = _read(args.file, "entry")
    client = _client(args.log, args.timeout)
    try:
        bundle = client.submit(entry)
    except HTTPStatusError as exc:
        if 400 <= exc.status < 500:
            message = f"the log rejected the entry (HTTP {exc.status}): {exc.message}"
            _err(message)
            return _json_failure(args, EXIT_REFUSED, message, "Rejected", status=exc.status)
        raise
    parsed = ProofBundle.parse(bundle)
    if args.json:
        if args.output is not None:
            _output(bundle, args.output)
        _emit({"ok": True, **_bundle_json(parsed, bundle)})
    else:
        _output(bundle, args.output)
    print(f"logged at index {parsed.index}", file=sys.stderr)
    return EXIT_OK


def _bundle_json(parsed: ProofBundle, raw: bytes) -> dict[str, Any]:
    """An entry's bundle for --json: where it is logged, what it is, the bundle itself."""
    cp = Checkpoint.parse(split_note(parsed.checkpoint)[0])
    entry: Entry | None = None
    if parsed.extra is not None:
        try:
            entry = parse_entry(parsed.extra)
        except FormatError:
            entry = None
    return {
        "index": parsed.index,
        "checkpoint": _checkpoint_json(cp),
        "id": entry.identity.hex() if entry is not None else None,
        "leaf_hash": leaf_hash(parsed.extra).hex() if parsed.extra is not None else None,
        "type": entry.type if entry is not None else None,
        "entry": entry_json(entry.body) if entry is not None else None,
        "bundle": raw.decode("utf-8"),
    }


def _client(url: str, timeout: float) -> LogClient:
    from firmlog.client.online import LogClient

    try:
        return LogClient(url, timeout=timeout)
    except ValueError as exc:
        raise UsageError(f"--log: {exc}") from exc


def _policy(path: str) -> Policy:
    try:
        return parse_policy(_read(path, "policy"))
    except FormatError as exc:
        raise UsageError(f"{path}: {exc}") from exc


def cmd_verify(args: argparse.Namespace) -> int:
    from firmlog.client.online import load_state
    from firmlog.client.verify import DeviceState, PinnedVendorKeys, verify_update

    policy = _policy(args.policy)
    bundle = _read(args.bundle, "bundle")
    try:
        vendor_keys = PinnedVendorKeys.parse(args.vendor_key, args.threshold, args.vendor)
    except (FormatError, ValueError) as exc:
        raise UsageError(f"--vendor-key/--threshold: {exc}") from exc
    if args.state is not None:
        try:
            state = load_state(args.state)
        except OSError as exc:
            raise UsageError(f"cannot read state {args.state}: {exc.strerror or exc}") from exc
        except FormatError as exc:
            raise UsageError(str(exc)) from exc
    elif args.product is None:
        raise UsageError("give --product (or --state, a device state file naming it)")
    else:
        state = DeviceState(product=args.product)
    state = DeviceState(
        product=args.product if args.product is not None else state.product,
        installed_security_version=(
            args.installed_security_version
            if args.installed_security_version is not None
            else state.installed_security_version
        ),
        checkpoint=state.checkpoint,
        hardware_revision=(
            args.hardware_revision
            if args.hardware_revision is not None
            else state.hardware_revision
        ),
    )
    if not os.path.isfile(args.image):
        raise UsageError(f"cannot read image {args.image}: not a file")
    try:
        update = verify_update(
            args.image,
            bundle,
            policy,
            vendor_keys,
            state,
            now=args.now,
            max_cosignature_age=args.max_cosignature_age,
        )
        if args.log is not None:
            from firmlog.client.online import LogClient, check_not_revoked

            check_not_revoked(LogClient(args.log, timeout=args.timeout), update, vendor_keys)
    except UpdateRefused as exc:
        print(f"firmlog verify: REFUSED at step {exc.step!r}: {exc.detail}", file=sys.stderr)
        print("do not install this image", file=sys.stderr)
        if isinstance(exc.__cause__, SplitViewError):
            _print_evidence(exc.__cause__)
        return _refused_json(args, exc.step, exc.detail)
    except OSError as exc:
        raise UsageError(f"cannot read image {args.image}: {exc.strerror or exc}") from exc
    if args.gossip:
        refused = _gossip(args.gossip, update.checkpoint_note, args.timeout)
        if refused is not None:
            print(f"firmlog verify: REFUSED at step 'gossip': {refused}", file=sys.stderr)
            print("do not install this image", file=sys.stderr)
            return _refused_json(args, "gossip", refused)
    r = update.release
    cp = update.checkpoint.signed.checkpoint
    if args.json:
        _emit(
            {
                "ok": True,
                "release": entry_json(r),
                "id": update.entry.identity.hex(),
                "leaf_hash": update.leaf_hash.hex(),
                "leaf_index": update.leaf_index,
                "checkpoint": _checkpoint_json(cp),
                "vendor_keys": list(update.vendor_keys),
                "witnesses": list(update.witnesses),
                "quorum": policy.describe_quorum(),
                "installed_security_version": state.installed_security_version,
                "revocation_checked": args.log,
            }
        )
        return EXIT_OK
    witnesses = ", ".join(update.witnesses) or "none"
    lines = [
        "OK: the image may be installed",
        f"  release     {r.vendor} {r.product} {r.version} (channel {r.channel})",
        f"  security    version {r.security_version} "
        f"(installed: {state.installed_security_version})",
        f"  image       sha256 {r.image.sha256}, {r.image.size} bytes",
        f"  signed by   {', '.join(update.vendor_keys)}",
        f"  logged      {cp.origin}, index {update.leaf_index} of tree size {cp.tree_size}",
        f"  leaf hash   {update.leaf_hash.hex()}",
        f"  witnesses   {witnesses} (quorum: {policy.describe_quorum()})",
    ]
    if args.log is not None:
        lines.append(f"  revocation  none signed by the vendor in {args.log}")
    if r.fixes:
        lines.append(f"  fixes       {', '.join(r.fixes)}")
    print("\n".join(lines))
    return EXIT_OK


def _refused_json(args: argparse.Namespace, step: str, detail: str) -> int:
    message = f"REFUSED at step {step!r}: {detail}"
    return _json_failure(args, EXIT_REFUSED, message, "UpdateRefused", step=step, detail=detail)


def _gossip(monitors: Sequence[str], note: bytes, timeout: float) -> str | None:
    """Push the accepted checkpoint to each monitor (POST /v1/gossip). A monitor that
    proves it part of a split view (409) refuses the image: what it said; a monitor
    that is down or cannot check it now is only a warning (None)."""
    from firmlog.client.online import LogClient

    for url in monitors:
        try:
            client = LogClient(url, timeout=timeout)
        except ValueError as exc:
            raise UsageError(f"--gossip: {exc}") from exc
        try:
            client.post("v1/gossip", note)
        except HTTPStatusError as exc:
            if exc.status == 409:
                return f"the monitor {url} proved a split view with this checkpoint: {exc}"
            print(f"firmlog verify: warning: gossip to {url}: {exc}", file=sys.stderr)
        except TransportError as exc:
            print(f"firmlog verify: warning: gossip to {url}: {exc}", file=sys.stderr)
    return None


def _print_evidence(exc: SplitViewError) -> None:
    print("split-view evidence (both signed checkpoints):", file=sys.stderr)
    for label, note in (("first", exc.old_note), ("second", exc.new_note)):
        print(f"--- {label} ---", file=sys.stderr)
        print(note.decode("utf-8", "replace"), end="", file=sys.stderr)


def cmd_mirror(args: argparse.Namespace) -> int:
    from firmlog.client.mirror import mirror_log

    log_key = _log_key(args.log_key)
    if args.verify:
        return _verify_mirror(args, log_key)
    if args.log is None:
        args.parser.error("the following arguments are required: --log")
    client = _client(args.log, args.timeout)
    tty = sys.stderr.isatty()
    last = [0.0]

    def progress(done: int, total: int) -> None:
        now = time.monotonic()
        if done == total or now - last[0] >= (0.2 if tty else 2.0):
            last[0] = now
            end = "\r" if tty and done < total else "\n"
            print(f"mirror: {done}/{total} tiles verified", end=end, file=sys.stderr, flush=True)

    try:
        result = mirror_log(client, log_key, args.dir, progress=progress, parallel=args.parallel)
    except SplitViewError as exc:
        _err(str(exc))
        _print_evidence(exc)
        return _json_failure(
            args,
            EXIT_REFUSED,
            str(exc),
            type(exc).__name__,
            evidence=[
                exc.old_note.decode("utf-8", "replace"),
                exc.new_note.decode("utf-8", "replace"),
            ],
        )
    cp = result.checkpoint
    print(
        f"mirrored {cp.origin} at tree size {cp.tree_size} into {args.dir} "
        f"(was {result.previous_size}; {result.fetched} files fetched, {result.reused} reused)",
        file=sys.stderr,
    )
    if args.json:
        _emit(
            {
                "ok": True,
                "dir": args.dir,
                "checkpoint": _checkpoint_json(cp),
                "previous_size": result.previous_size,
                "fetched": result.fetched,
                "reused": result.reused,
            }
        )
    return EXIT_OK


def _verify_mirror(args: argparse.Namespace, log_key: Ed25519Verifier) -> int:
    """mirror --verify: check every file of DIR again, from the files alone."""
    from firmlog.client.mirror import verify_mirror

    if not os.path.isdir(args.dir):
        raise UsageError(f"--dir {args.dir}: no such directory (nothing was mirrored there)")
    check = verify_mirror(args.dir, log_key)
    cp = check.checkpoint
    if args.json:
        _emit(
            {
                "ok": not check.problems,
                "dir": args.dir,
                "checkpoint": _checkpoint_json(cp) if cp is not None else None,
                "tiles": check.tiles,
                "entry_bundles": check.entry_bundles,
                "problems": [{"path": p.path, "problem": p.problem} for p in check.problems],
            }
        )
    for p in check.problems:
        _err(f"mirror {args.dir}: {p.path}: {p.problem}")
    if check.problems:
        _err(f"mirror {args.dir}: {len(check.problems)} problem(s) found")
        return EXIT_REFUSED
    assert cp is not None  # no problem: the checkpoint was read
    if not args.json:
        print(
            f"mirror {args.dir} verified: {cp.origin} at tree size {cp.tree_size}, checkpoint "
            f"signed by the log key; {check.tiles} tiles and {check.entry_bundles} entry "
            "bundles hash up to its root"
        )
    return EXIT_OK


# -- evidence -----------------------------------------------------------------------


def cmd_evidence_verify(args: argparse.Namespace) -> int:
    log_key = _log_key(args.log_key)
    data = _read(args.file, "evidence")
    try:
        item = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UsageError(f"evidence is not JSON: {exc}") from exc
    try:
        proven = SplitViewEvidence.from_json(item).verify(log_key)
    except EvidenceFormatError as exc:
        raise UsageError(str(exc)) from exc
    print(f"split view proven: {proven}")
    return EXIT_OK


# -- reading a log: log info, search, get ------------------------------------------------


def _get_json(client: LogClient, path: str) -> Any:
    data = client.get(path)
    try:
        return json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise TransportError(f"{client.base_url}/{path}: the answer is not JSON: {exc}") from exc


def _bad_answer(client: LogClient, path: str, what: str) -> TransportError:
    return TransportError(f"{client.base_url}/{path}: unexpected answer: {what}")


def cmd_log_info(args: argparse.Namespace) -> int:
    from firmlog.client.errors import PolicyFormatError

    pinned = _log_key(args.log_key) if args.log_key is not None else None
    client = _client(args.log, args.timeout)
    info = _get_json(client, "v1/log")
    if not (
        isinstance(info, dict)
        and isinstance(info.get("origin"), str)
        and isinstance(info.get("log_key"), str)
        and isinstance(info.get("operator_keys"), list)
        and all(isinstance(k, str) for k in info["operator_keys"])
        and (info.get("witness_policy") is None or isinstance(info["witness_policy"], str))
    ):
        raise _bad_answer(
            client, "v1/log", "expected origin, log_key, operator_keys, witness_policy"
        )
    try:
        reported = parse_verifier_key(info["log_key"])
    except FormatError as exc:
        raise _bad_answer(client, "v1/log", f"log_key: {exc}") from exc
    if pinned is not None and pinned.vkey != reported.vkey:
        raise SignatureError(
            f"the log says its key is {reported.vkey}, not the --log-key {pinned.vkey}"
        )
    note = client.checkpoint()
    cp = open_checkpoint(note, pinned or reported).checkpoint
    if cp.origin != info["origin"]:
        raise SignatureError(
            f"the log says its origin is {info['origin']!r}, its checkpoint says {cp.origin!r}"
        )
    witnesses: dict[str, Any] | None = None
    policy_problem = None
    if info["witness_policy"] is not None:
        try:
            witnesses = _policy_json(parse_policy(info["witness_policy"]))
        except PolicyFormatError as exc:
            policy_problem = str(exc)
    if args.json:
        _emit(
            {
                "ok": True,
                "url": client.base_url,
                "origin": cp.origin,
                "tree_size": cp.tree_size,
                "root_hash": cp.root_hash.hex(),
                "log_key": reported.vkey,
                "log_key_pinned": pinned is not None,
                "operator_keys": info["operator_keys"],
                "witness_policy": info["witness_policy"],
                "witnesses": witnesses["witnesses"] if witnesses is not None else [],
                "quorum": witnesses["quorum"] if witnesses is not None else None,
                "checkpoint": note.decode("utf-8", "replace"),
            }
        )
        return EXIT_OK
    how = (
        "--log-key" if pinned is not None else "the key the log names (not pinned: give --log-key)"
    )
    lines = [
        f"log         {cp.origin}",
        f"  url         {client.base_url}",
        f"  tree size   {cp.tree_size}",
        f"  root hash   {cp.root_hash.hex()}",
        f"  log key     {reported.vkey}",
        f"              (checkpoint signature verified with {how})",
    ]
    lines += [f"  operator    {k}" for k in info["operator_keys"]]
    if info["witness_policy"] is None:
        lines.append("  witnesses   none (the log collects no cosignatures)")
    elif witnesses is None:
        lines.append(f"  witnesses   the log's witness policy does not parse: {policy_problem}")
    else:
        for w in witnesses["witnesses"]:
            lines.append(
                f"  witness     {w['name']} {w['key']}" + (f" {w['url']}" if w["url"] else "")
            )
        lines.append(f"  quorum      {witnesses['quorum']}")
    print("\n".join(lines))
    return EXIT_OK


def _digest_arg(value: str) -> str:
    digest = value.lower()
    if not _HEX64.fullmatch(digest):
        raise UsageError(f"--digest: expected a SHA-256 digest (64 hex digits), got {value!r}")
    return digest


def cmd_search(args: argparse.Namespace) -> int:
    query: dict[str, str] = {}
    for name, value in (
        ("vendor", args.vendor),
        ("product", args.product),
        ("version", args.version),
    ):
        if value is not None:
            query[name] = value
    if args.digest is not None:
        query["image_sha256"] = _digest_arg(args.digest)
    if args.cve is not None:
        cve = args.cve.upper()
        if not _CVE.fullmatch(cve):
            raise UsageError(f"--cve: expected an id like CVE-2024-3094, got {args.cve!r}")
        query["cve"] = cve
    if args.limit < 1:
        raise UsageError(f"--limit: expected at least 1, got {args.limit}")
    query["order"] = args.order
    query["limit"] = str(args.limit)
    cursor: str | None = args.cursor
    client = _client(args.log, args.timeout)
    releases: list[dict[str, Any]] = []
    while True:
        page = dict(query, cursor=cursor) if cursor is not None else query
        path = "v1/releases?" + urllib.parse.urlencode(page)
        try:
            answer = _get_json(client, path)
        except HTTPStatusError as exc:
            if exc.status == 400:
                raise UsageError(f"the log refused the search: {exc.message}") from exc
            raise
        if not (
            isinstance(answer, dict)
            and isinstance(answer.get("releases"), list)
            and all(
                isinstance(r, dict) and isinstance(r.get("release"), dict)
                for r in answer["releases"]
            )
            and (answer.get("next_cursor") is None or isinstance(answer["next_cursor"], str))
        ):
            raise _bad_answer(client, "v1/releases", "expected releases and next_cursor")
        releases += answer["releases"]
        cursor = answer["next_cursor"]
        if cursor is None or not args.all:
            break
    if args.json:
        _emit({"ok": True, "releases": releases, "next_cursor": cursor})
        return EXIT_OK
    if not releases:
        print("no release matches", file=sys.stderr)
    else:
        header = ("INDEX", "VENDOR", "PRODUCT", "VERSION", "SECVER", "CHANNEL", "REVOKED", "ID")
        rows = [header]
        for item in releases:
            r = item["release"]
            rows.append(
                (
                    str(item.get("index", "?")),
                    str(r.get("vendor", "?")),
                    str(r.get("product", "?")),
                    str(r.get("version", "?")),
                    str(r.get("security_version", "?")),
                    str(r.get("channel", "?")),
                    "yes" if item.get("revoked_by") else "no",
                    str(item.get("id", "?")),
                )
            )
        widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
        for row in rows:
            print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    if cursor is not None:
        print(f"more results: --cursor {cursor}", file=sys.stderr)
    return EXIT_OK


def _index_arg(value: str) -> int:
    if not value.isdecimal() or not value.isascii():
        raise argparse.ArgumentTypeError(f"expected an entry index (0, 1, 2, ...), got {value!r}")
    return int(value)


def cmd_get(args: argparse.Namespace) -> int:
    log_key = _log_key(args.log_key) if args.log_key is not None else None
    ref: int | str
    if args.id is not None:
        ref = hex_id = args.id.lower()
        if not _HEX64.fullmatch(hex_id):
            raise UsageError(
                f"--id: expected an entry's id or leaf hash (64 hex digits), got {args.id!r}"
            )
        what = f"--id {ref}"
    else:
        ref = args.index
        what = f"--index {ref}"
    client = _client(args.log, args.timeout)
    try:
        raw = client.bundle(ref)
    except HTTPStatusError as exc:
        if exc.status in (400, 404):
            raise UsageError(f"{what}: {exc.message}") from exc
        raise
    bundle = ProofBundle.parse(raw)
    if bundle.extra is None:
        raise VerificationError(f"the log's bundle for {what} carries no entry (no extra line)")
    if isinstance(ref, int) and bundle.index != ref:
        raise VerificationError(f"asked for entry {ref}, the log answered entry {bundle.index}")
    if log_key is not None:
        cp = open_checkpoint(bundle.checkpoint, log_key).checkpoint
    else:
        cp = Checkpoint.parse(split_note(bundle.checkpoint)[0])
    entry_leaf = leaf_hash(bundle.extra)
    verify_inclusion(entry_leaf, bundle.index, cp.tree_size, bundle.proof, cp.root_hash)
    entry: Entry | None = None
    try:
        entry = parse_entry(bundle.extra)
    except FormatError:
        entry = None
    if isinstance(ref, str) and ref not in (
        entry_leaf.hex(),
        entry.identity.hex() if entry is not None else None,
    ):
        raise VerificationError(
            f"asked for {what}, the log answered entry {bundle.index} (another)"
        )
    if args.out_entry is not None:
        _output(bundle.extra, args.out_entry)
    if args.out_bundle is not None:
        _output(raw, args.out_bundle)
    if args.json:
        _emit({"ok": True, **_bundle_json(bundle, raw), "log_key_verified": log_key is not None})
        return EXIT_OK
    checked = (
        "checkpoint signed by --log-key, inclusion verified"
        if log_key is not None
        else "inclusion verified against its checkpoint; its signature NOT checked (no --log-key)"
    )
    lines = [
        f"entry {bundle.index} of {cp.origin} at tree size {cp.tree_size}",
        f"  proof       {checked}",
    ]
    if entry is not None:
        lines += _inspect_entry(bundle.extra, "entry")
    else:
        lines += [
            f"entry: {len(bundle.extra)} bytes, not a firmlog entry",
            f"  leaf hash   {entry_leaf.hex()}",
        ]
    print("\n".join(lines))
    return EXIT_OK


# -- inspect ------------------------------------------------------------------------


def _describe_signature(sig: Signature) -> str:
    kind = f"{len(sig.signature)}-byte signature"
    if len(sig.signature) == 64:
        kind = "Ed25519"
    elif len(sig.signature) == 72:
        ts = cosignature_timestamp(sig.signature)
        when = datetime.datetime.fromtimestamp(ts, datetime.UTC) if ts < 2**35 else None
        kind = f"cosignature/v1, time {ts}" + (f" ({when:%Y-%m-%dT%H:%M:%SZ})" if when else "")
    return f"{sig.key} ({kind})"


def _signature_lines(signatures: Sequence[Signature]) -> list[str]:
    out = [f"  signatures ({len(signatures)}, not verified):"]
    out += [f"    {_describe_signature(s)}" for s in signatures]
    return out


def _inspect_checkpoint(note: bytes, title: str) -> list[str]:
    text, signatures = split_note(note)
    cp = Checkpoint.parse(text)
    lines = [
        title,
        f"  origin      {cp.origin}",
        f"  tree size   {cp.tree_size}",
        f"  root hash   {cp.root_hash.hex()} ({base64.b64encode(cp.root_hash).decode()})",
    ]
    lines += [f"  extension   {ext}" for ext in cp.extensions]
    return lines + _signature_lines(signatures)


def _inspect_entry(raw: bytes, title: str) -> list[str]:
    entry = parse_entry(raw)
    body = json.dumps(entry_json(entry.body), indent=2, ensure_ascii=False)
    lines = [
        f"{title}: {entry.type}",
        f"  id          {entry.identity.hex()}",
        f"  leaf hash   {entry.leaf_hash.hex()}",
    ]
    lines += ["  " + line for line in body.splitlines()]
    return lines + _signature_lines(entry.signatures)


def _inspect_policy(policy: Policy) -> list[str]:
    lines = ["trust policy (c2sp.org/tlog-policy)"]
    for log in policy.logs:
        lines.append(f"  log         {log.verifier.vkey}" + (f" {log.url}" if log.url else ""))
    for w in policy.witnesses:
        lines.append(f"  witness     {w.name} {w.verifier.vkey}" + (f" {w.url}" if w.url else ""))
    lines.append(f"  quorum      {policy.describe_quorum()}")
    return lines


def _inspect(data: bytes) -> list[str]:
    if data.startswith(BUNDLE_HEADER.encode() + b"\n"):
        bundle = ProofBundle.parse(data)
        lines = [
            "proof bundle (c2sp.org/tlog-proof@v1)",
            f"  index       {bundle.index}",
            f"  proof       {len(bundle.proof)} hashes",
        ]
        lines += _inspect_checkpoint(bundle.checkpoint, "checkpoint")
        if bundle.extra is None:
            lines.append("entry: none (no extra line)")
        else:
            try:
                lines += _inspect_entry(bundle.extra, "entry")
            except FormatError as exc:
                lines.append(f"extra: {len(bundle.extra)} bytes, not a firmlog entry: {exc}")
                lines.append(f"  leaf hash   {leaf_hash(bundle.extra).hex()}")
        return lines
    if data.startswith(b"firmlog/"):
        return _inspect_entry(data, "entry")
    if data.lstrip().startswith(b"{"):
        from firmlog.client.verify import DeviceState

        state = DeviceState.from_json(data)
        lines = [
            "device state",
            f"  product     {state.product}",
            f"  installed security version {state.installed_security_version}",
        ]
        if state.hardware_revision is not None:
            lines.append(f"  hardware revision {state.hardware_revision}")
        if state.checkpoint is not None:
            lines += _inspect_checkpoint(state.checkpoint, "stored checkpoint")
        return lines
    first = next(
        (ln.split()[0] for ln in data.splitlines() if ln.strip() and not ln.startswith(b"#")),
        b"",
    )
    if first in (b"log", b"witness", b"group", b"quorum"):
        return _inspect_policy(parse_policy(data))
    if data.startswith(b"PRIVATE+KEY+"):
        key = _signer_key_doc(data)
        return [
            "signer key (its private part is not shown)",
            f"  name        {key['name']}",
            f"  key id      {key['key_id']}",
            f"  type        {key['key_type']}",
            f"  vkey        {key['verifier_key']}",
        ]
    return _inspect_checkpoint(data, "checkpoint")


def _signer_key_doc(data: bytes) -> dict[str, Any]:
    """A signer key file's public half: never a byte of the private key."""
    text = data.decode("utf-8", "replace").strip()
    _, _, key_type, _ = split_signer_key(
        text, "signer key", types=(SIG_ED25519, SIG_COSIGNATURE_V1)
    )
    if key_type == SIG_ED25519:
        signer = parse_signer_key(text)
        name, key_id, vkey = signer.name, signer.key_id, signer.verifier.vkey
        kind = "Ed25519 (0x01)"
    else:
        witness = parse_witness_signer_key(text)
        name, key_id, vkey = witness.name, witness.key_id, witness.verifier.vkey
        kind = "cosignature/v1 (0x04)"
    return {"name": name, "key_id": f"{key_id:08x}", "key_type": kind, "verifier_key": vkey}


def _signatures_json(signatures: Sequence[Signature]) -> list[dict[str, Any]]:
    out = []
    for sig in signatures:
        kind, ts = "unknown", None
        if len(sig.signature) == 64:
            kind = "ed25519"
        elif len(sig.signature) == 72:
            kind, ts = "cosignature/v1", cosignature_timestamp(sig.signature)
        out.append({"name": sig.name, "key_id": f"{sig.key_id:08x}", "type": kind, "time": ts})
    return out


def _checkpoint_note_json(note: bytes) -> dict[str, Any]:
    text, signatures = split_note(note)
    cp = Checkpoint.parse(text)
    return {
        **_checkpoint_json(cp),
        "extensions": list(cp.extensions),
        "signatures": _signatures_json(signatures),
        "signatures_verified": False,
    }


def _entry_json(raw: bytes) -> dict[str, Any]:
    entry = parse_entry(raw)
    return {
        "type": entry.type,
        "id": entry.identity.hex(),
        "leaf_hash": entry.leaf_hash.hex(),
        "body": entry_json(entry.body),
        "signatures": _signatures_json(entry.signatures),
        "signatures_verified": False,
    }


def _inspect_json(data: bytes) -> dict[str, Any]:
    """What :func:`_inspect` shows, as one JSON object with a ``file_type``."""
    if data.startswith(BUNDLE_HEADER.encode() + b"\n"):
        bundle = ProofBundle.parse(data)
        entry: dict[str, Any] | None = None
        if bundle.extra is not None:
            try:
                entry = _entry_json(bundle.extra)
            except FormatError:
                entry = None
        return {
            "file_type": "proof-bundle",
            "index": bundle.index,
            "proof": [base64.b64encode(h).decode("ascii") for h in bundle.proof],
            "checkpoint": _checkpoint_note_json(bundle.checkpoint),
            "extra_leaf_hash": leaf_hash(bundle.extra).hex() if bundle.extra is not None else None,
            "entry": entry,
        }
    if data.startswith(b"firmlog/"):
        return {"file_type": "entry", **_entry_json(data)}
    if data.lstrip().startswith(b"{"):
        from firmlog.client.verify import DeviceState

        state = DeviceState.from_json(data)
        return {
            "file_type": "device-state",
            "product": state.product,
            "installed_security_version": state.installed_security_version,
            "hardware_revision": state.hardware_revision,
            "checkpoint": (
                _checkpoint_note_json(state.checkpoint) if state.checkpoint is not None else None
            ),
        }
    first = next(
        (ln.split()[0] for ln in data.splitlines() if ln.strip() and not ln.startswith(b"#")),
        b"",
    )
    if first in (b"log", b"witness", b"group", b"quorum"):
        return {"file_type": "policy", **_policy_json(parse_policy(data))}
    if data.startswith(b"PRIVATE+KEY+"):
        return {"file_type": "signer-key", **_signer_key_doc(data)}
    return {"file_type": "checkpoint", **_checkpoint_note_json(data)}


def _policy_json(policy: Policy) -> dict[str, Any]:
    return {
        "logs": [{"key": log.verifier.vkey, "url": log.url} for log in policy.logs],
        "witnesses": [
            {"name": w.name, "key": w.verifier.vkey, "url": w.url} for w in policy.witnesses
        ],
        "quorum": policy.describe_quorum(),
    }


def cmd_inspect(args: argparse.Namespace) -> int:
    data = _read(args.file, "file")
    try:
        if args.json:
            _emit({"ok": True, **_inspect_json(data)})
            return EXIT_OK
        lines = _inspect(data)
    except FormatError as exc:
        raise UsageError(
            f"{args.file}: not a well-formed bundle, entry, checkpoint, policy or device "
            f"state: {exc}"
        ) from exc
    print("\n".join(lines))
    return EXIT_OK


# -- the parser -------------------------------------------------------------------


def _shown_default(value: object) -> str:
    if value is None or value == []:
        return "none"
    if value is False:
        return "off"
    return str(value)


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Every option's help ends with its default, or says that it is required."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if (
            not action.option_strings
            or action.default is argparse.SUPPRESS
            or "default" in text
            or "required" in text
        ):
            return text
        if action.required:
            return f"{text} (required)".lstrip()
        shown = _shown_default(action.default).replace("%", "%%")
        return f"{text} (default: {shown})".lstrip()


def _version() -> str:
    try:
        return metadata.version("firmlog-client")
    except metadata.PackageNotFoundError:  # pragma: no cover - run from a source tree
        return "unknown"


def _env(name: str) -> str | None:
    return os.environ.get(name) or None


def build_parser() -> argparse.ArgumentParser:
    """The ``firmlog`` command line (defaults of --log and --log-key from the environment)."""
    fmt = _HelpFormatter
    p = argparse.ArgumentParser(
        prog="firmlog",
        description="firmlog: a transparency log for firmware releases (client tools).",
        epilog=EXIT_CODES,
        formatter_class=fmt,
    )
    p.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(
        name: str,
        func: Callable[[argparse.Namespace], int],
        summary: str,
        parent: argparse._SubParsersAction[argparse.ArgumentParser] = sub,
    ) -> argparse.ArgumentParser:
        sp = parent.add_parser(
            name, help=summary, description=summary, epilog=EXIT_CODES, formatter_class=fmt
        )
        sp.set_defaults(func=func, parser=sp)
        return sp

    def output(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("-o", "--output", metavar="FILE", help="write here instead of stdout")

    def json_flag(sp: argparse.ArgumentParser) -> None:
        sp.add_argument(
            "--json",
            action="store_true",
            help="print one JSON document on stdout; on failure {ok: false, error, kind, "
            "exit_code}",
        )

    def timeout(sp: argparse.ArgumentParser) -> None:
        sp.add_argument(
            "--timeout", type=float, default=30.0, metavar="S", help="seconds per request"
        )

    def from_env(
        sp: argparse.ArgumentParser,
        flag: str,
        metavar: str,
        name: str,
        help_text: str,
        required: bool,
    ) -> None:
        """An option whose default is the environment variable ``name``."""
        env = _env(name)
        sp.add_argument(
            flag,
            metavar=metavar,
            default=env,
            required=required and env is None,
            help=f"{help_text} (default: ${name}" + (", required when unset)" if required else ")"),
        )

    def log_url(sp: argparse.ArgumentParser, help_text: str, required: bool = True) -> None:
        from_env(sp, "--log", "URL", ENV_LOG, help_text, required)

    def log_key(sp: argparse.ArgumentParser, help_text: str, required: bool = True) -> None:
        from_env(sp, "--log-key", "VKEY", ENV_LOG_KEY, help_text, required)

    def signing_keys(sp: argparse.ArgumentParser) -> None:
        sp.add_argument(
            "--key",
            action="append",
            required=True,
            metavar="K.key",
            help="a signer key file (repeat for k-of-n)",
        )

    s = command("keygen", cmd_keygen, "create a signer key NAME.key (mode 0600); print its vkey")
    s.add_argument("name", metavar="NAME", help="the key name, e.g. acme.example/release")
    s.add_argument("--out", metavar="FILE", help="key file (default: NAME.key, '/' as '_')")
    s.add_argument("--witness", action="store_true", help="a witness cosignature key (type 0x04)")

    vendor = command("vendor", _no_subcommand, "vendor admission")
    vsub = vendor.add_subparsers(dest="subcommand", required=True, metavar="SUBCOMMAND")
    s = command(
        "admit",
        cmd_vendor_admit,
        "print a firmlog/vendor/v1 entry signed by the operator",
        parent=vsub,
    )
    s.add_argument("--operator-key", required=True, metavar="OP.key", help="the operator's key")
    s.add_argument("--vendor", required=True, metavar="V", help="e.g. acme.example")
    s.add_argument(
        "--key", action="append", required=True, metavar="VKEY", help="a vendor key (repeat)"
    )
    s.add_argument("--threshold", type=int, default=1, metavar="K", help="signatures required")
    output(s)

    release = command("release", _no_subcommand, "release manifests")
    rsub = release.add_subparsers(dest="subcommand", required=True, metavar="SUBCOMMAND")
    s = command(
        "create", cmd_release_create, "print a signed firmlog/release/v1 entry", parent=rsub
    )
    signing_keys(s)
    s.add_argument("--vendor", required=True, metavar="V", help="the vendor, e.g. acme.example")
    s.add_argument("--product", required=True, metavar="P", help="the device model")
    s.add_argument("--version", required=True, metavar="X", help="the release's version")
    s.add_argument(
        "--security-version",
        required=True,
        type=int,
        metavar="N",
        help="anti-rollback counter: a device refuses anything below what it runs",
    )
    s.add_argument("--image", required=True, metavar="FILE", help="hashed, never uploaded")
    s.add_argument("--channel", default="stable", metavar="C", help="release channel")
    s.add_argument("--source-uri", metavar="U", help="where the source is (with --source-commit)")
    s.add_argument("--source-commit", metavar="C", help="the commit built (with --source-uri)")
    s.add_argument("--builder", default="unspecified", metavar="B", help="who or what built it")
    s.add_argument("--build-time", metavar="T", help="YYYY-MM-DDTHH:MM:SSZ (default: now)")
    s.add_argument("--reproducible", action="store_true", help="the build is reproducible")
    s.add_argument(
        "--hardware-revision",
        action="append",
        default=[],
        metavar="R",
        help="a hardware revision it is for (repeat; none: all)",
    )
    s.add_argument("--sbom", metavar="FILE", help="its SHA-256 goes into the manifest")
    s.add_argument(
        "--fix", action="append", default=[], metavar="CVE", help="a CVE it fixes (repeat)"
    )
    s.add_argument("--changelog", default="", metavar="TEXT", help="what changed")
    output(s)

    s = command("revoke", cmd_revoke, "print a signed firmlog/revocation/v1 entry")
    signing_keys(s)
    s.add_argument("--vendor", required=True, metavar="V", help="the vendor of the release")
    s.add_argument(
        "--release",
        required=True,
        metavar="ID",
        help="the release's identity: hex SHA-256 of its signed text (firmlog inspect shows it)",
    )
    s.add_argument("--reason", required=True, metavar="R", help="why it is withdrawn")
    s.add_argument("--advisory", default="", metavar="A", help="an advisory id or URL")
    output(s)

    s = command("rotate-keys", cmd_rotate_keys, "print a signed firmlog/keys/v1 entry")
    signing_keys(s)
    s.add_argument("--vendor", required=True, metavar="V", help="the vendor whose keys change")
    s.add_argument(
        "--new-key", action="append", required=True, metavar="VKEY", help="a new key (repeat)"
    )
    s.add_argument("--threshold", type=int, default=1, metavar="K", help="signatures required")
    s.add_argument(
        "--serial",
        type=int,
        required=True,
        metavar="N",
        help="the serial of the key set this creates: one more than the current set's "
        "(the admission's set is 1; GET /v1/vendors/V shows the current serial)",
    )
    output(s)

    s = command("submit", cmd_submit, "submit a signed entry; print its .tlog-proof bundle")
    log_url(s, "the log's base URL")
    s.add_argument("file", metavar="FILE", help="the signed entry ('-': stdin)")
    timeout(s)
    output(s)
    json_flag(s)

    s = command("verify", cmd_verify, "decide whether a device may install an image (offline)")
    s.epilog = _steps_help() + "\n" + EXIT_CODES
    s.add_argument("--image", required=True, metavar="FILE", help="the firmware image")
    s.add_argument("--bundle", required=True, metavar="FILE", help="its .tlog-proof bundle")
    s.add_argument("--policy", required=True, metavar="FILE", help="the trust policy")
    s.add_argument(
        "--vendor-key",
        action="append",
        required=True,
        metavar="VKEY",
        help="a pinned vendor key (repeat)",
    )
    s.add_argument("--threshold", type=int, default=1, metavar="K", help="vendor signatures needed")
    s.add_argument("--vendor", metavar="V", help="the vendor the keys belong to")
    s.add_argument("--product", metavar="P", help="this device's product (or from --state)")
    s.add_argument(
        "--installed-security-version",
        type=int,
        metavar="N",
        help="what the device runs (default: from --state, else 0)",
    )
    s.add_argument("--hardware-revision", metavar="R", help="this device's hardware revision")
    s.add_argument("--state", metavar="FILE", help="device state (product, version, checkpoint)")
    s.add_argument("--now", type=int, metavar="UNIX", help="the time (default: the clock)")
    s.add_argument("--max-cosignature-age", type=int, metavar="S", help="refuse older cosignatures")
    log_url(s, "online: also refuse a release the vendor has revoked in this log", False)
    s.add_argument(
        "--gossip",
        action="append",
        default=[],
        metavar="URL",
        help="a monitor to push the accepted checkpoint to; its proof of a split view refuses",
    )
    timeout(s)
    json_flag(s)

    s = command("mirror", cmd_mirror, "mirror a log into DIR (tlog-tiles layout), verifying all")
    log_url(s, "the log's base URL (not needed with --verify)", False)
    log_key(s, "the log's verifier key")
    s.add_argument("--dir", required=True, metavar="DIR", help="the mirror")
    s.add_argument(
        "--verify",
        action="store_true",
        help="fetch nothing: check every file of DIR again (checkpoint signature, tiles, "
        "entry bundles) and exit 1 if anything is wrong",
    )
    s.add_argument("--parallel", type=int, default=4, metavar="N", help="downloads at a time")
    timeout(s)
    json_flag(s)

    s = command("inspect", cmd_inspect, "pretty-print a bundle, entry, checkpoint, policy or key")
    s.add_argument("file", metavar="FILE", help="'-': stdin")
    json_flag(s)

    evidence = command("evidence", _no_subcommand, "split-view evidence")
    esub = evidence.add_subparsers(dest="subcommand", required=True, metavar="SUBCOMMAND")
    s = command(
        "verify",
        cmd_evidence_verify,
        "exit 0 only if FILE (an item of a monitor's /v1/evidence) proves the log signed "
        "two inconsistent trees",
        parent=esub,
    )
    s.add_argument("file", metavar="FILE", help="'-': stdin")
    log_key(s, "the log's verifier key")

    logs = command("log", _no_subcommand, "a log's identity and state")
    lsub = logs.add_subparsers(dest="subcommand", required=True, metavar="SUBCOMMAND")
    s = command(
        "info",
        cmd_log_info,
        "show a log's origin, tree size, keys and witnesses (GET /v1/log, /checkpoint)",
        parent=lsub,
    )
    log_url(s, "the log's base URL")
    log_key(s, "refuse a checkpoint not signed by this key", False)
    timeout(s)
    json_flag(s)

    s = command("search", cmd_search, "search the log's releases (GET /v1/releases)")
    log_url(s, "the log's base URL")
    s.add_argument("--vendor", metavar="V", help="only this vendor's releases")
    s.add_argument("--product", metavar="P", help="only this product's")
    s.add_argument("--version", metavar="X", help="only this version")
    s.add_argument("--cve", metavar="CVE", help="only releases that fix this CVE")
    s.add_argument("--digest", metavar="HEX", help="only releases of this image SHA-256")
    s.add_argument(
        "--order", choices=("asc", "desc"), default="asc", help="asc: oldest first; desc: newest"
    )
    s.add_argument("--limit", type=int, default=100, metavar="N", help="results per page")
    s.add_argument("--cursor", metavar="C", help="continue after a page (its next_cursor)")
    s.add_argument("--all", action="store_true", help="follow next_cursor to the last page")
    timeout(s)
    json_flag(s)

    s = command("get", cmd_get, "fetch an entry and its .tlog-proof bundle, checking its proof")
    log_url(s, "the log's base URL")
    which = s.add_mutually_exclusive_group(required=True)
    which.add_argument("--index", type=_index_arg, metavar="N", help="the entry's index")
    which.add_argument("--id", metavar="HEX", help="the entry's id or leaf hash")
    log_key(s, "also check the bundle's checkpoint is signed by this key", False)
    s.add_argument("--out-entry", metavar="FILE", help="write the signed entry here")
    s.add_argument("--out-bundle", metavar="FILE", help="write the .tlog-proof bundle here")
    timeout(s)
    json_flag(s)
    return p


def _steps_help() -> str:
    from firmlog.client.verify import STEP_DESCRIPTIONS

    lines = ["checks, in order (a refusal names the first that fails):"]
    lines += [f"  {step:<19} {text}" for step, text in STEP_DESCRIPTIONS.items()]
    return "\n".join(lines) + "\n"


def _no_subcommand(args: argparse.Namespace) -> int:  # pragma: no cover - argparse requires one
    raise UsageError("missing subcommand")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    extra: dict[str, Any] = {}
    error: Exception
    try:
        code = int(args.func(args))
        sys.stdout.flush()  # here, where a reader that went away is caught
        return code
    except BrokenPipeError:
        return _reader_went_away()
    except UsageError as exc:
        code, message, error = EXIT_USAGE, str(exc), exc
    except UpdateRefused as exc:
        code, message, error = EXIT_REFUSED, f"REFUSED at step {exc.step!r}: {exc.detail}", exc
        extra = {"step": exc.step, "detail": exc.detail}
    except VerificationError as exc:
        code, message, error = EXIT_REFUSED, f"verification failed: {exc}", exc
    except TransportError as exc:
        code, message, error = EXIT_TRANSPORT, f"transport error: {exc}", exc
    except (FormatError, ValueError) as exc:
        code, message, error = EXIT_USAGE, str(exc), exc
    except FirmlogError as exc:  # pragma: no cover - every branch of the tree is above
        code, message, error = EXIT_USAGE, str(exc), exc
    except OSError as exc:
        code, message, error = EXIT_USAGE, str(exc), exc
    except KeyboardInterrupt:
        return 130
    _err(message)
    try:
        code = _json_failure(args, code, message, type(error).__name__, **extra)
        sys.stdout.flush()
        return code
    except BrokenPipeError:
        return _reader_went_away()


def _reader_went_away() -> int:
    """What a command does when the reader of its output went away (``| head``): stop
    quietly, as Unix tools do, with the status of a SIGPIPE (141)."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())  # so that the exit's flush of stdout cannot fail
    os.close(devnull)
    return 128 + 13


if __name__ == "__main__":
    sys.exit(main())
