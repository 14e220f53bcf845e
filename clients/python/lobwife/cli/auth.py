"""``lobwife auth mint|whoami``: bearer tokens, minted from the server's state folder or by the server, and
who the server takes a token for.

``mint --state-dir DIR`` signs with the state folder's key in this process (local file access is
the bootstrap of trust): it needs the server package (``lobwife[server]``), imported only then.
``mint --server`` asks the server's ``MintToken`` RPC instead, with an admin ``--token``. Either
way the token alone goes to stdout, so ``TOKEN=$(lobwife auth mint ...)`` works; its expiry and
subject go to stderr (or, with ``--json``, everything to stdout).
"""

from __future__ import annotations

import argparse
import base64
import binascii
import importlib
import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from lobwife import enums
from lobwife.cli._args import Subcommands, duration_arg, leaf
from lobwife.cli._output import _json, _print_json, format_fields, message_to_dict
from lobwife.client import Client
from lobwife.v1 import auth_pb2

#: The roles by short name (admin, service, task, reader), from the contract.
ROLES = tuple(name for name in enums.short_names(auth_pb2.Role.DESCRIPTOR).values() if name is not None)
SERVER_AUTH_MISSING = (
    "minting from the state folder needs the server package: pip install 'lobwife[server]'"
    " (or mint through the server: lobwife auth mint --server --role ... with an admin --token or LOBWIFE_TOKEN)"
)


def register(commands: Subcommands, common: argparse.ArgumentParser) -> None:
    auth = commands.add_parser("auth", help="bearer tokens: mint one, or ask who a token is", parents=[common])
    actions = auth.add_subparsers(dest="action", metavar="ACTION", required=True)

    p = leaf(actions, common, "mint", cmd_mint, "print a new bearer token (the token alone on stdout)")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument(
        "--state-dir", type=Path, metavar="DIR", help="sign with this server state folder's key, here (no server call)"
    )
    where.add_argument(
        "--server", action="store_true", help="ask the server at --addr (MintToken: needs an admin --token)"
    )
    p.add_argument("--role", required=True, choices=ROLES)
    p.add_argument("--task", metavar="ID", help="the task a task token is bound to (42 or T42)")
    p.add_argument("--subject", metavar="NAME", help="who the token names (default: the role, or task-T42)")
    p.add_argument(
        "--ttl", type=duration_arg, metavar="DURATION", help="how long it is valid: 30m, 8h, 7d (default 1h)"
    )
    p.add_argument(
        "--signing-key", type=Path, metavar="FILE", help="with --state-dir: the server's --auth-signing-key, if given"
    )
    # Only --server talks to a server; main() asks before connecting.
    p.set_defaults(offline=lambda ns: not ns.server)

    leaf(actions, common, "whoami", cmd_whoami, "show who the server takes this client's token for")


def cmd_mint(ns: argparse.Namespace, client: Client | None) -> int:
    if ns.signing_key is not None and ns.state_dir is None:
        ns.parser.error("--signing-key goes with --state-dir")
    if ns.role == "task" and not ns.task:
        ns.parser.error("--task: a task token must name its task")
    if ns.role != "task" and ns.task:
        ns.parser.error(f"--task: only a task token names a task, not a {ns.role} token")
    if client is not None:
        resp = client.mint_token(ns.role, task=ns.task, subject=ns.subject, ttl=ns.ttl)
        minted = message_to_dict(resp)
    else:
        local = _mint_locally(ns)
        if local is None:
            return 2
        minted = local
    if _json(ns):
        _print_json(minted, sys.stdout)
    else:
        sys.stdout.write(minted["token"] + "\n")
        sys.stdout.flush()
        print(f"subject {minted['subject']}, expires {minted['expires_at']}", file=sys.stderr)
    return 0


def _mint_locally(ns: argparse.Namespace) -> dict[str, Any] | None:
    """Mint with ``lobwife_server.auth`` (the server's own code); None after saying why it cannot."""
    try:
        auth = importlib.import_module("lobwife_server.auth")
        keys = importlib.import_module("lobwife_server.auth.keys")
    except ModuleNotFoundError as e:
        # The server package, or one of its dependencies (PyJWT, cryptography), is not installed.
        # A module missing inside the server package is a bug: let it show.
        if e.name and e.name.startswith("lobwife_server.") and e.name not in ("lobwife_server.auth",):
            raise
        print(f"error: {SERVER_AUTH_MISSING}", file=sys.stderr)
        print(f"(missing module: {e.name})", file=sys.stderr)
        return None
    kwargs: dict[str, Any] = {"key_file": ns.signing_key}
    if ns.ttl is not None:
        kwargs["ttl"] = ns.ttl
    try:
        token = auth.mint_from_state_dir(ns.state_dir, ns.role, ns.task, ns.subject, **kwargs)
    except (ValueError, keys.KeyFileError, OSError) as e:
        # Their messages name the field or the file, never key material.
        print(f"error: {e}", file=sys.stderr)
        return None
    header, claims = _jwt_parts(token)
    expires = datetime.fromtimestamp(int(claims.get("exp", 0)), tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {"token": token, "expires_at": expires, "key_id": header.get("kid", ""), "subject": claims.get("sub", "")}


def _jwt_parts(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The header and claims of a JWT we just minted (read, not verified: only to show them)."""
    try:
        header, payload = (json.loads(base64.urlsafe_b64decode(p + "=" * (-len(p) % 4))) for p in token.split(".")[:2])
    except (ValueError, binascii.Error):
        return {}, {}
    return (header, payload) if isinstance(header, dict) and isinstance(payload, dict) else ({}, {})


def cmd_whoami(ns: argparse.Namespace, client: Client | None) -> int:
    assert client is not None
    who = client.whoami()
    if _json(ns):
        _print_json(message_to_dict(who), sys.stdout)
    else:
        sys.stdout.write(format_fields(who))
    return 0
