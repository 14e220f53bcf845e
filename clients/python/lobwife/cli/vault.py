"""``lobwife vault ...``: the vault sync's state, and a sync now.

``vault sync`` asks for a cycle (TriggerSync) and, with ``--wait``, waits until one has ended
and says whether it succeeded (the server's ``last_sync`` moved) or not. ``vault import`` (existing
vault files into tasks) is not built yet: docs/vault.md.
"""

from __future__ import annotations

import argparse
import sys
import time

from lobwife.cli._args import Subcommands, leaf, positive_float
from lobwife.cli._output import _json, _print_json, format_fields, message_to_dict
from lobwife.client import Client


def register(commands: Subcommands, common: argparse.ArgumentParser) -> None:
    vault = commands.add_parser("vault", help="the vault sync", parents=[common])
    actions = vault.add_subparsers(dest="action", metavar="ACTION", required=True)
    leaf(actions, common, "status", cmd_status, "whether the sync is on, running, and when it last succeeded")
    p = leaf(actions, common, "sync", cmd_sync, "ask for a sync now")
    p.add_argument(
        "--wait",
        type=positive_float,
        metavar="SECONDS",
        help="wait up to this long for a cycle to succeed (exit 1 if none did)",
    )


def cmd_status(ns: argparse.Namespace, client: Client) -> int:
    status = client.sync_status()
    if _json(ns):
        _print_json(message_to_dict(status), sys.stdout)
    else:
        sys.stdout.write(format_fields(status))
    return 0


def cmd_sync(ns: argparse.Namespace, client: Client) -> int:
    before = client.sync_status()
    if not before.enabled:
        print("error: vault sync is not enabled on this server (VAULT_PATH / --vault)", file=sys.stderr)
        return 1
    resp = client.trigger_sync()
    if ns.wait is None:
        sys.stdout.write(f"{resp.status}\n")
        return 0
    deadline = time.monotonic() + ns.wait
    while time.monotonic() < deadline:
        now = client.sync_status()
        if now.last_sync.ToNanoseconds() > before.last_sync.ToNanoseconds() and not now.running:
            sys.stdout.write(f"synced at {now.last_sync.ToJsonString()}\n")
            return 0
        time.sleep(0.5)
    print(f"error: no sync succeeded within {ns.wait:g} s (see the lobwife-vault-sync job's runs)", file=sys.stderr)
    return 1
