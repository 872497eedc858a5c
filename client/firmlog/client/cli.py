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
    firmlog inspect FILE
    firmlog evidence verify FILE --log-key VKEY
"""

from __future__ import annotations

import argparse
import base64
import datetime
import hashlib
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from firmlog.client.bundle import HEADER as BUNDLE_HEADER
from firmlog.client.bundle import ProofBundle
from firmlog.client.checkpoint import Checkpoint
from firmlog.client.cosignature import cosignature_timestamp, generate_witness_key
from firmlog.client.entries import (
    Build,
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
    SplitViewError,
    TransportError,
    UpdateRefused,
    VerificationError,
)
from firmlog.client.evidence import SplitViewEvidence
from firmlog.client.keys import (
    Ed25519Signer,
    check_key_name,
    generate_key,
    parse_signer_key,
    parse_verifier_key,
)
from firmlog.client.merkle import leaf_hash
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
            _err(f"the log rejected the entry (HTTP {exc.status}): {exc.message}")
            return EXIT_REFUSED
        raise
    parsed = ProofBundle.parse(bundle)
    _output(bundle, args.output)
    print(f"logged at index {parsed.index}", file=sys.stderr)
    return EXIT_OK


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
        return EXIT_REFUSED
    except OSError as exc:
        raise UsageError(f"cannot read image {args.image}: {exc.strerror or exc}") from exc
    if args.gossip:
        refused = _gossip(args.gossip, update.checkpoint_note, args.timeout)
        if refused is not None:
            print(f"firmlog verify: REFUSED at step 'gossip': {refused}", file=sys.stderr)
            print("do not install this image", file=sys.stderr)
            return EXIT_REFUSED
    r = update.release
    cp = update.checkpoint.signed.checkpoint
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

    try:
        log_key = parse_verifier_key(args.log_key)
    except FormatError as exc:
        raise UsageError(f"--log-key: {exc}") from exc
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
        return EXIT_REFUSED
    cp = result.checkpoint
    print(
        f"mirrored {cp.origin} at tree size {cp.tree_size} into {args.dir} "
        f"(was {result.previous_size}; {result.fetched} files fetched, {result.reused} reused)",
        file=sys.stderr,
    )
    return EXIT_OK


# -- evidence -----------------------------------------------------------------------


def cmd_evidence_verify(args: argparse.Namespace) -> int:
    try:
        log_key = parse_verifier_key(args.log_key)
    except FormatError as exc:
        raise UsageError(f"--log-key: {exc}") from exc
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
        raise UsageError("this is a signer key: not shown (it is secret)")
    return _inspect_checkpoint(data, "checkpoint")


def cmd_inspect(args: argparse.Namespace) -> int:
    data = _read(args.file, "file")
    try:
        lines = _inspect(data)
    except FormatError as exc:
        raise UsageError(
            f"{args.file}: not a well-formed bundle, entry, checkpoint, policy or device "
            f"state: {exc}"
        ) from exc
    print("\n".join(lines))
    return EXIT_OK


# -- the parser -------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    fmt = argparse.RawDescriptionHelpFormatter
    p = argparse.ArgumentParser(
        prog="firmlog",
        description="firmlog: a transparency log for firmware releases (client tools).",
        epilog=EXIT_CODES,
        formatter_class=fmt,
    )
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
        sp.set_defaults(func=func)
        return sp

    def output(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("-o", "--output", metavar="FILE", help="write here instead of stdout")

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
    s.add_argument("--out", metavar="FILE", help="key file (default NAME.key, '/' as '_')")
    s.add_argument("--witness", action="store_true", help="a witness cosignature key (type 0x04)")

    vendor = command("vendor", _no_subcommand, "vendor admission")
    vsub = vendor.add_subparsers(dest="subcommand", required=True, metavar="SUBCOMMAND")
    s = command(
        "admit",
        cmd_vendor_admit,
        "print a firmlog/vendor/v1 entry signed by the operator",
        parent=vsub,
    )
    s.add_argument("--operator-key", required=True, metavar="OP.key")
    s.add_argument("--vendor", required=True, metavar="V", help="e.g. acme.example")
    s.add_argument("--key", action="append", required=True, metavar="VKEY")
    s.add_argument("--threshold", type=int, default=1, metavar="K", help="default 1")
    output(s)

    release = command("release", _no_subcommand, "release manifests")
    rsub = release.add_subparsers(dest="subcommand", required=True, metavar="SUBCOMMAND")
    s = command(
        "create", cmd_release_create, "print a signed firmlog/release/v1 entry", parent=rsub
    )
    signing_keys(s)
    s.add_argument("--vendor", required=True, metavar="V")
    s.add_argument("--product", required=True, metavar="P")
    s.add_argument("--version", required=True, metavar="X")
    s.add_argument("--security-version", required=True, type=int, metavar="N")
    s.add_argument("--image", required=True, metavar="FILE", help="hashed, never uploaded")
    s.add_argument("--channel", default="stable", metavar="C", help="default stable")
    s.add_argument("--source-uri", metavar="U")
    s.add_argument("--source-commit", metavar="C")
    s.add_argument("--builder", default="unspecified", metavar="B")
    s.add_argument("--build-time", metavar="T", help="YYYY-MM-DDTHH:MM:SSZ (default now)")
    s.add_argument("--reproducible", action="store_true")
    s.add_argument("--hardware-revision", action="append", default=[], metavar="R")
    s.add_argument("--sbom", metavar="FILE", help="its SHA-256 goes into the manifest")
    s.add_argument("--fix", action="append", default=[], metavar="CVE")
    s.add_argument("--changelog", default="", metavar="TEXT")
    output(s)

    s = command("revoke", cmd_revoke, "print a signed firmlog/revocation/v1 entry")
    signing_keys(s)
    s.add_argument("--vendor", required=True, metavar="V")
    s.add_argument(
        "--release",
        required=True,
        metavar="ID",
        help="the release's identity: hex SHA-256 of its signed text (firmlog inspect shows it)",
    )
    s.add_argument("--reason", required=True, metavar="R")
    s.add_argument("--advisory", default="", metavar="A")
    output(s)

    s = command("rotate-keys", cmd_rotate_keys, "print a signed firmlog/keys/v1 entry")
    signing_keys(s)
    s.add_argument("--vendor", required=True, metavar="V")
    s.add_argument("--new-key", action="append", required=True, metavar="VKEY")
    s.add_argument("--threshold", type=int, default=1, metavar="K", help="default 1")
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
    s.add_argument("--log", required=True, metavar="URL")
    s.add_argument("file", metavar="FILE", help="the signed entry ('-': stdin)")
    s.add_argument("--timeout", type=float, default=30.0, metavar="S")
    output(s)

    s = command("verify", cmd_verify, "decide whether a device may install an image (offline)")
    s.epilog = _steps_help() + "\n" + EXIT_CODES
    s.add_argument("--image", required=True, metavar="FILE")
    s.add_argument("--bundle", required=True, metavar="FILE")
    s.add_argument("--policy", required=True, metavar="FILE")
    s.add_argument("--vendor-key", action="append", required=True, metavar="VKEY")
    s.add_argument("--threshold", type=int, default=1, metavar="K", help="default 1")
    s.add_argument("--vendor", metavar="V", help="the vendor the keys belong to")
    s.add_argument("--product", metavar="P", help="this device's product (or from --state)")
    s.add_argument("--installed-security-version", type=int, metavar="N", help="default 0")
    s.add_argument("--hardware-revision", metavar="R")
    s.add_argument("--state", metavar="FILE", help="device state (product, version, checkpoint)")
    s.add_argument("--now", type=int, metavar="UNIX", help="the time (default: the clock)")
    s.add_argument("--max-cosignature-age", type=int, metavar="S")
    s.add_argument(
        "--log",
        metavar="URL",
        help="online: also refuse a release the vendor has revoked in this log",
    )
    s.add_argument(
        "--gossip",
        action="append",
        default=[],
        metavar="URL",
        help="a monitor to push the accepted checkpoint to; its proof of a split view refuses",
    )
    s.add_argument("--timeout", type=float, default=30.0, metavar="S")

    s = command("mirror", cmd_mirror, "mirror a log into DIR (tlog-tiles layout), verifying all")
    s.add_argument("--log", required=True, metavar="URL")
    s.add_argument("--log-key", required=True, metavar="VKEY")
    s.add_argument("--dir", required=True, metavar="DIR")
    s.add_argument("--parallel", type=int, default=4, metavar="N", help="downloads at a time")
    s.add_argument("--timeout", type=float, default=30.0, metavar="S")

    s = command("inspect", cmd_inspect, "pretty-print a bundle, entry, checkpoint or policy")
    s.add_argument("file", metavar="FILE", help="'-': stdin")

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
    s.add_argument("--log-key", required=True, metavar="VKEY")
    return p


def _steps_help() -> str:
    from firmlog.client.verify import STEP_DESCRIPTIONS

    lines = ["checks, in order (a refusal names the first that fails):"]
    lines += [f"  {step:<19} {text}" for step, text in STEP_DESCRIPTIONS.items()]
    return "\n".join(lines) + "\n"


def _no_subcommand(args: argparse.Namespace) -> int:  # pragma: no cover - argparse requires one
    raise UsageError("missing subcommand")


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.func(args)
    except UsageError as exc:
        _err(str(exc))
        return EXIT_USAGE
    except UpdateRefused as exc:
        _err(f"REFUSED at step {exc.step!r}: {exc.detail}")
        return EXIT_REFUSED
    except VerificationError as exc:
        _err(f"verification failed: {exc}")
        return EXIT_REFUSED
    except TransportError as exc:
        _err(f"transport error: {exc}")
        return EXIT_TRANSPORT
    except (FormatError, ValueError) as exc:
        _err(str(exc))
        return EXIT_USAGE
    except FirmlogError as exc:  # pragma: no cover - every branch of the tree is above
        _err(str(exc))
        return EXIT_USAGE
    except OSError as exc:
        _err(str(exc))
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
