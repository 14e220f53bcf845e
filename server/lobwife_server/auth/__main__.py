"""``python -m lobwife_server.auth mint|rotate|table``: tokens and keys from the state folder (local file access
is the bootstrap of trust; ``lobwife auth mint`` calls the same functions), and the rule table for docs/auth.md."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lobwife_server.auth.keys import DEFAULT_GRACE, KeyFileError, rotate
from lobwife_server.auth.policy import Role, markdown_table
from lobwife_server.auth.settings import parse_duration
from lobwife_server.auth.tokens import DEFAULT_TTL, mint_from_state_dir


def _duration(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m lobwife_server.auth", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    m = sub.add_parser("mint", help="print a token signed with the state folder's key")
    m.add_argument("--state-dir", type=Path, required=True)
    m.add_argument("--role", required=True, choices=[r.value for r in Role])
    m.add_argument("--task", help="the task a task token is bound to (42 or T42)")
    m.add_argument("--subject", help="who the token names (default: the role, or task-T42)")
    m.add_argument("--ttl", type=_duration, default=DEFAULT_TTL, help="how long it is valid (default 1h)")
    m.add_argument("--signing-key", type=Path, help="the server's --auth-signing-key, if it was given one")
    r = sub.add_parser("rotate", help="make a new current signing key; the old one verifies for --grace more")
    r.add_argument("--state-dir", type=Path, required=True)
    r.add_argument("--grace", type=_duration, default=DEFAULT_GRACE, help="default 24h")
    t = sub.add_parser("table", help="print the rule table as markdown (docs/auth.md), or rewrite it in --write FILE")
    t.add_argument("--write", type=Path, help="replace the table between the rules:begin/end markers of this file")
    args = p.parse_args(argv)
    try:
        if args.command == "table":
            return _table(args.write)
        if args.command == "mint":
            print(
                mint_from_state_dir(
                    args.state_dir, args.role, args.task, args.subject, args.ttl, key_file=args.signing_key
                )
            )
        else:
            ring = rotate(args.state_dir, args.grace)
            print(ring.current.kid)
    except (ValueError, KeyFileError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


BEGIN, END = "<!-- rules:begin (generated from auth/policy.py) -->", "<!-- rules:end -->"


def _table(path: Path | None) -> int:
    table = markdown_table()
    if path is None:
        print(table)
        return 0
    text = path.read_text()
    start, end = text.index(BEGIN) + len(BEGIN), text.index(END)
    path.write_text(text[:start] + "\n" + table + "\n" + text[end:])
    return 0


if __name__ == "__main__":
    sys.exit(main())
