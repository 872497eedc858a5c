"""First start of the compose deployment (deploy/compose.yaml), run once by its
``init`` service before the log servers and the monitors start.

It creates, if missing, the log's data dir (log key, config.toml, log.pub and
operator.pub; the operator's signer key goes to ``--operator-key-out``,
outside every server volume), each monitor's witness key, and the witness
policy the log servers collect cosignatures by::

    python3 init.py --data-dir /var/lib/firmlog --origin log.example/firmlog \\
        --operator-key-out /var/lib/firmlog-offline/operator.key \\
        --monitor monitor1=/monitors/monitor1=http://monitor1:8081 ... --quorum 2 \\
        --owner 10001:10001

It uses the programs' own first-start functions, so the files are exactly
those ``firmlog-server serve`` and ``firmlog-monitor run`` would create. Run
again, it changes nothing and prints the same keys.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from firmlog.client.policy import parse_policy
from firmlog.monitor.datadir import init_data_dir as init_monitor_dir
from firmlog.server.datadir import init_data_dir, load_operator_keys
from firmlog.service.files import write_new

POLICY_FILE = "witnesses.policy"


def _monitor(value: str) -> tuple[str, Path, str]:
    parts = value.split("=", 2)
    if len(parts) != 3 or not all(parts):
        raise argparse.ArgumentTypeError(f"expected NAME=DIR=URL, got {value!r}")
    return parts[0], Path(parts[1]), parts[2]


def _owner(value: str) -> tuple[int, int]:
    uid, sep, gid = value.partition(":")
    if not (sep and uid.isdigit() and gid.isdigit()):
        raise argparse.ArgumentTypeError(f"expected UID:GID in digits, got {value!r}")
    return int(uid), int(gid)


def _chown_tree(directory: Path, uid: int, gid: int) -> None:
    os.chown(directory, uid, gid)
    for path in directory.rglob("*"):
        os.chown(path, uid, gid, follow_symlinks=False)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Create the keys of a firmlog compose deployment.")
    p.add_argument("--data-dir", type=Path, required=True, help="the log servers' data dir")
    p.add_argument("--origin", required=True, help="the log's origin")
    p.add_argument("--operator-key-out", type=Path, required=True, help="new operator key file")
    p.add_argument("--monitor", type=_monitor, action="append", default=[], help="NAME=DIR=URL")
    p.add_argument("--quorum", type=int, default=1, help="monitors that must cosign")
    p.add_argument(
        "--owner", type=_owner, help="UID:GID to give every file created (when run as root)"
    )
    args = p.parse_args(argv)
    if not 0 <= args.quorum <= len(args.monitor):
        p.error(f"--quorum must be 0..{len(args.monitor)} (the number of --monitor), "
                f"got {args.quorum}")  # fmt: skip

    log = init_data_dir(args.data_dir, args.origin).log
    operators = load_operator_keys(args.data_dir, (), f"{log.name}/operator", args.operator_key_out)
    lines = [f"log {log.verifier.vkey}"]
    for name, directory, url in args.monitor:
        witness = init_monitor_dir(directory, f"{name}.{log.name}/witness").signer
        lines.append(f"witness {name} {witness.verifier.vkey} {url}")
    if args.monitor:
        if args.quorum:
            names = " ".join(name for name, _, _ in args.monitor)
            lines += [f"group monitors {args.quorum} {names}", "quorum monitors"]
        else:
            lines.append("quorum none")
        policy = "\n".join(lines) + "\n"
        parse_policy(policy.encode())  # never write a policy the server would refuse
        write_new(args.data_dir / POLICY_FILE, policy, mode=0o644)
    if args.owner is not None:
        dirs = [args.data_dir, args.operator_key_out.parent, *(d for _, d, _ in args.monitor)]
        for directory in dirs:
            _chown_tree(directory, *args.owner)
    print(f"log key:      {log.verifier.vkey}")
    for key in operators.verifiers:
        print(f"operator key: {key.vkey}")
    if operators.generated is not None:
        print(f"the operator's signer key is in {operators.generated}: copy it offline, "
              "then delete it (OPERATIONS.md)")  # fmt: skip
    print((args.data_dir / POLICY_FILE).read_text() if args.monitor else "no witnesses")
    return 0


if __name__ == "__main__":
    sys.exit(main())
