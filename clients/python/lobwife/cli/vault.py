"""``lobwife vault ...``: the vault sync's state, and a sync now.

``vault sync`` asks for a cycle (TriggerSync; ``--full``: a full rebuild) and, with ``--wait``,
waits until one has succeeded (the server's ``last_sync`` moved, and with ``--full`` no full
rebuild is pending any more) or the cycle it asked for failed, and says which. ``vault import PATH``
reads the old fleet's task files into tasks, once (idempotent; ``--dry-run`` changes nothing), with the
server package's importer (``lobwife_server.vault.importer``), loaded only then: docs/vault.md.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
from pathlib import Path
from typing import Any

from lobwife.cli._args import Subcommands, leaf, positive_float
from lobwife.cli._output import _json, _print_json, format_fields, message_to_dict
from lobwife.cli.serve import SERVER_MISSING
from lobwife.client import Client
from lobwife.v1.jobs_pb2 import GetSyncStatusResponse


def register(commands: Subcommands, common: argparse.ArgumentParser) -> None:
    vault = commands.add_parser("vault", help="the vault sync", parents=[common])
    actions = vault.add_subparsers(dest="action", metavar="ACTION", required=True)
    leaf(actions, common, "status", cmd_status, "whether the sync is on, running, and when it last succeeded")
    p = leaf(actions, common, "sync", cmd_sync, "ask for a sync now")
    p.add_argument(
        "--full",
        action="store_true",
        help="a full rebuild: rewrite every task file (the keys lobwife owns), remove stale copies",
    )
    p.add_argument(
        "--wait",
        type=positive_float,
        metavar="SECONDS",
        help="wait up to this long for a cycle to succeed (exit 1 if none did)",
    )
    p = leaf(actions, common, "import", cmd_import, "read the old fleet's vault task files into tasks (once)")
    p.add_argument("path", metavar="PATH", help="the vault's top folder (the one holding 010-tasks/)")
    p.add_argument("--dry-run", action="store_true", help="say what would be created; change nothing")


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
    resp = client.trigger_sync(full=ns.full)
    if ns.wait is None:
        sys.stdout.write(f"{resp.status}\n")
        return 0
    deadline = time.monotonic() + ns.wait
    now = before
    while time.monotonic() < deadline:
        now = client.sync_status()
        ended = now.last_attempt.ToNanoseconds() > before.last_attempt.ToNanoseconds() and not now.running
        succeeded = now.last_sync.ToNanoseconds() > before.last_sync.ToNanoseconds()
        if ended and succeeded and not (ns.full and (now.full_pending or not now.last_full)):
            sys.stdout.write(f"synced at {now.last_sync.ToJsonString()}{_counts(now)}\n")
            return 0
        # With no cycle under way when it was asked, the first cycle to end is the one asked for.
        if ended and now.last_error and not before.running:
            print(f"error: the sync failed: {now.last_error}", file=sys.stderr)
            return 1
        time.sleep(0.5)
    why = f" (the last cycle failed: {now.last_error})" if now.last_error else ""
    print(f"error: no sync succeeded within {ns.wait:g} s{why}; see the lobwife-vault-sync job's runs", file=sys.stderr)
    return 1


def _counts(s: GetSyncStatusResponse) -> str:
    full = ", a full rebuild" if s.last_full else ""
    commit = s.last_commit[:12] or "none"
    return (
        f"{full}: {s.last_written} written, {s.last_moved} moved, {s.last_removed} removed,"
        f" {s.last_skipped} skipped; commit {commit}, pushed {str(s.last_pushed).lower()}"
    )


# --- vault import --------------------------------------------------------------------------------


def _importer() -> Any | None:
    """The server package's importer, loaded only now (as ``lobwife serve`` loads the server): a
    client-only install has neither it nor PyYAML. None, said on stderr, when it is missing."""
    try:
        return importlib.import_module("lobwife_server.vault.importer")
    except ModuleNotFoundError as e:
        # The server package, one of its third-party dependencies, or a server too old for the
        # importer. Any other module missing inside the server package is a bug: let it show.
        own = ("lobwife_server.vault", "lobwife_server.vault.importer")
        if e.name and e.name.startswith("lobwife_server.") and e.name not in own:
            raise
        print(SERVER_MISSING, file=sys.stderr)
        print(f"(missing module: {e.name})", file=sys.stderr)
        return None


def _safe(text: str) -> str:
    """Text for one terminal line: a file name may hold a line break, an escape or undecodable bytes."""
    return text if text.isprintable() else text.encode("unicode_escape").decode("ascii")


def _import_line(o: Any) -> str:
    line = f"{_safe(o.path)}: {o.result}"
    if o.task_id and o.result in ("created", "already imported", "already a task"):
        line += f" {o.task_id}"
    if o.request is not None:
        status = message_to_dict(o.request)["status"]
        line += f" {json.dumps(o.request.name, ensure_ascii=False)} ({status})"
    if o.reason:
        line += f" ({o.reason})"
    return _safe(line + "".join(f"; note: {n}" for n in o.notes))


def cmd_import(ns: argparse.Namespace, client: Client) -> int:
    importer = _importer()
    if importer is None:
        return 2
    try:
        found = importer.scan(Path(ns.path))
    except importer.VaultImportError as e:
        print(f"error: PATH: {e}", file=sys.stderr)
        return 2
    as_json = _json(ns)
    outcomes = []
    for o in importer.run(client, found, dry_run=ns.dry_run):
        outcomes.append(o)
        if not as_json:
            sys.stdout.write(_import_line(o) + "\n")
            sys.stdout.flush()
    counts: dict[str, int] = importer.summary(outcomes)
    if as_json:
        files = [
            {
                "path": _safe(o.path),
                "result": o.result,
                "task_id": o.task_id,
                "reason": _safe(o.reason) if o.reason else None,
                "notes": [_safe(n) for n in o.notes],
                "request": message_to_dict(o.request) if o.request is not None else None,
            }
            for o in outcomes
        ]
        _print_json({"dry_run": ns.dry_run, "files": files, "summary": counts}, sys.stdout)
    else:
        said = ", ".join(f"{n} {result}" for result, n in counts.items() if n) or "no task files"
        prefix = "dry run, nothing changed: " if ns.dry_run else ""
        sys.stdout.write(f"{prefix}{len(outcomes)} files: {said}\n")
    return 1 if counts["failed"] else 0
