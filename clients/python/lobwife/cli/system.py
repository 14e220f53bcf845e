"""``lobwife health``: the server's own health document, for people and scripts."""

from __future__ import annotations

import argparse
import sys

from lobwife.cli._args import Subcommands
from lobwife.cli._output import _json, _print_json, format_fields, message_to_dict
from lobwife.client import Client


def register(commands: Subcommands, common: argparse.ArgumentParser) -> None:
    help = "show the server's health: status, version, uptime, running jobs, database"
    p = commands.add_parser("health", help=help, description=help, parents=[common])
    p.set_defaults(func=cmd_health, parser=p)


def cmd_health(ns: argparse.Namespace, client: Client) -> int:
    """Exit 0 when the server says ``ok``, 1 when it is ``degraded`` (a script's check)."""
    health = client.health()
    if _json(ns):
        _print_json(message_to_dict(health), sys.stdout)
    else:
        sys.stdout.write(format_fields(health))
    return 0 if health.status == "ok" else 1
