"""A minimal device update agent built on firmlog-client.

It installs an image only if the firmware transparency log proves that the
image's release manifest is logged, signed by the vendor, meant for this
device and not a rollback, and that the log still shows the device the same
history it saw before::

    python examples/update_agent.py --log http://127.0.0.1:8080 --policy device.policy \\
        --vendor-key "acme.example/release+1234abcd+AW..." --release release.note \\
        --image firmware.bin --state state.json --install-to /firmware/slot-b.bin

The state file (see ``firmlog.client.verify.DeviceState``) holds the product,
the installed security version and the last checkpoint the device verified.
Exit codes: 0 installed, 1 refused, 2 bad input, 3 log unreachable.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

from firmlog.client.errors import (
    FormatError,
    SplitViewError,
    TransportError,
    UpdateRefused,
    VerificationError,
)
from firmlog.client.merkle import leaf_hash
from firmlog.client.online import (
    LogClient,
    check_not_revoked,
    fetch_bundle,
    load_state,
    save_state,
)
from firmlog.client.policy import parse_policy
from firmlog.client.verify import PinnedVendorKeys, verify_update


def update(args: argparse.Namespace) -> None:
    policy = parse_policy(Path(args.policy).read_bytes())
    vendor = PinnedVendorKeys.parse(args.vendor_key, threshold=args.threshold)
    state = load_state(args.state)
    release_note = Path(args.release).read_bytes()

    # 1. Online: the bundle for this release, looked up by its leaf hash; its
    #    checkpoint must extend the one we stored (proof built from the log's tiles).
    log = LogClient(args.log)
    bundle = fetch_bundle(log, leaf_hash(release_note), policy, state.checkpoint)

    # 2. Copy the image next to its destination, then verify that copy offline:
    #    what we verify is exactly what we install.
    target = Path(args.install_to)
    staged = target.with_name(f".{target.name}.staged")
    shutil.copyfile(args.image, staged)
    try:
        verified = verify_update(staged, bundle, policy, vendor, state)
        # 3. Online again: has the vendor revoked this release since?
        check_not_revoked(log, verified, vendor)
        # 4. Install: an atomic rename, only after every check passed.
        os.replace(staged, target)
    finally:
        staged.unlink(missing_ok=True)

    # 5. Remember the new security version and the newest checkpoint.
    save_state(args.state, state.after_install(verified))
    release = verified.release
    print(
        f"installed {release.vendor} {release.product} {release.version} "
        f"(security version {release.security_version}, log index {verified.leaf_index})"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description="Install a firmware image the log vouches for.")
    parser.add_argument("--log", required=True, help="the log's base URL")
    parser.add_argument("--policy", required=True, help="tlog-policy file")
    parser.add_argument("--vendor-key", action="append", required=True, help="pinned vkey")
    parser.add_argument("--threshold", type=int, default=1, help="vendor keys that must sign")
    parser.add_argument("--release", required=True, help="the signed release manifest")
    parser.add_argument("--image", required=True, help="the firmware image")
    parser.add_argument("--state", required=True, help="the device state file")
    parser.add_argument("--install-to", required=True, help="where the image goes")
    args = parser.parse_args()
    try:
        update(args)
    except UpdateRefused as exc:
        print(f"refused at step {exc.step!r}: {exc.detail}", file=sys.stderr)
        return 1
    except SplitViewError as exc:
        print(f"the log shows a split view; report this evidence:\n{exc}", file=sys.stderr)
        for note in (exc.old_note, exc.new_note):
            sys.stderr.write(note.decode("utf-8", "replace") + "\n")
        return 1
    except VerificationError as exc:  # the log's checkpoint: signature, quorum
        print(f"refused: {exc}", file=sys.stderr)
        return 1
    except TransportError as exc:
        print(f"cannot reach the log: {exc}", file=sys.stderr)
        return 3
    except (FormatError, OSError, ValueError) as exc:
        print(f"bad input: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
