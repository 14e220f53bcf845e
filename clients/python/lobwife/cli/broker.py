"""``lobwife broker ...``: the GitHub token broker: its state, registrations, tokens and their audit.

``broker token REF`` prints the token alone on stdout, so ``GH_TOKEN=$(lobwife broker token T42)``
works; when it expires and which repositories it covers go to stderr (or, with ``--json``, all
of it to stdout). A token is printed nowhere else: not on stderr, not in an error.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from functools import partial

import grpc

from lobwife.cli._args import Subcommands, leaf, page_size_option
from lobwife.cli._output import (
    _json,
    _print_json,
    _truncate,
    fetch_page,
    format_fields,
    format_table,
    format_timestamp,
    message_to_dict,
    print_page,
)
from lobwife.client import Client, LobwifeError
from lobwife.v1 import broker_pb2

# Widest REPOS and DETAIL cells; --json has them whole.
REPOS_WIDTH = 60
DETAIL_WIDTH = 60

REGISTRATION_HEADERS = ("REF", "STATUS", "TASK", "TYPE", "TOKENS", "REGISTERED", "LAST USED", "REPOS")
AUDIT_HEADERS = ("TIME", "ACTION", "TASK", "IDENTITY", "TOKEN SHA256", "REUSED", "REPOS", "DETAIL")


def registration_row(ref: str, reg: broker_pb2.Registration) -> list[str]:
    return [
        ref,
        reg.status or "-",
        reg.task or "-",
        reg.lobster_type or "-",
        str(reg.token_count),
        format_timestamp(reg.registered_at),
        format_timestamp(reg.last_used_at),
        _truncate(", ".join(reg.repos), REPOS_WIDTH) or "-",
    ]


def audit_row(entry: broker_pb2.TokenAuditEntry) -> list[str]:
    return [
        format_timestamp(entry.timestamp),
        entry.action,
        entry.task_id or "-",
        entry.identity or "-",
        # A prefix of the token's SHA-256 (what the audit keeps), never the token.
        entry.token_sha256_prefix or "-",
        "yes" if entry.reused else "-",
        _truncate(", ".join(entry.repos), REPOS_WIDTH) or "-",
        _truncate(entry.detail.replace("\n", " "), DETAIL_WIDTH) if entry.detail else "",
    ]


def register(commands: Subcommands, common: argparse.ArgumentParser) -> None:
    broker = commands.add_parser("broker", help="the GitHub token broker", parents=[common])
    actions = broker.add_subparsers(dest="action", metavar="ACTION", required=True)

    leaf(actions, common, "status", cmd_status, "show the broker's state and every registration")

    p = leaf(actions, common, "register", cmd_register, "register the repositories a task may get tokens for")
    p.add_argument("ref", metavar="REF", help="T42, or a task's slug, name or assignee")
    p.add_argument("repos", metavar="REPO", nargs="+", help="owner/repo")
    p.add_argument("--lobster-type", metavar="TYPE", help="the worker kind, which sets the token's permissions")

    p = leaf(actions, common, "deregister", cmd_deregister, "end a task's registration (its tokens are refused)")
    p.add_argument("ref", metavar="REF")

    p = leaf(actions, common, "token", cmd_token, "print a GitHub token for a registered task (the token alone)")
    p.add_argument("ref", metavar="REF")

    p = leaf(actions, common, "service-token", cmd_service_token, "print a GitHub token for a service (all repos)")
    p.add_argument("service", metavar="SERVICE", help="who it is for, e.g. lobboss (audited)")

    p = leaf(actions, common, "audit", cmd_audit, "show the token audit log, newest first")
    p.add_argument("--task", dest="ref", metavar="REF", help="only this task reference")
    page_size_option(p)
    p.add_argument("--page-token", help="continue from a previous page")
    p.add_argument("--all", action="store_true", help="fetch every page")

    leaf(actions, common, "expire", cmd_expire, "expire the registrations idle longer than the server's limit")


def cmd_status(ns: argparse.Namespace, client: Client) -> int:
    summary = client.health().broker
    try:
        registrations: dict[str, broker_pb2.Registration] | None = dict(client.broker_registrations())
    except LobwifeError as e:
        if e.code != grpc.StatusCode.PERMISSION_DENIED:
            raise
        # A task's or a job's credential: the summary is public, the list is not theirs to read.
        registrations = None
        print("registrations not shown: listing them needs a reader, service or admin credential", file=sys.stderr)
    out = sys.stdout
    if _json(ns):
        listed = (
            None if registrations is None else {ref: message_to_dict(reg) for ref, reg in sorted(registrations.items())}
        )
        _print_json({"broker": message_to_dict(summary), "registrations": listed}, out)
        return 0
    out.write(format_fields(summary))
    if registrations is None:
        return 0
    if registrations:
        rows = [registration_row(ref, reg) for ref, reg in sorted(registrations.items())]
        out.write("\n" + format_table(REGISTRATION_HEADERS, rows))
    else:
        print("no registrations", file=sys.stderr)
    return 0


def cmd_register(ns: argparse.Namespace, client: Client) -> int:
    resp = client.broker_register(ns.ref, ns.repos, lobster_type=ns.lobster_type)
    if _json(ns):
        _print_json(message_to_dict(resp), sys.stdout)
    else:
        sys.stdout.write(f"registered {resp.task_id}: {', '.join(ns.repos)}\n")
    return 0


def cmd_deregister(ns: argparse.Namespace, client: Client) -> int:
    resp = client.broker_deregister(ns.ref)
    if _json(ns):
        _print_json(message_to_dict(resp), sys.stdout)
    else:
        sys.stdout.write(f"deregistered {resp.task_id}\n")
    return 0


def cmd_token(ns: argparse.Namespace, client: Client) -> int:
    resp = client.issue_task_token(ns.ref)
    _print_token(ns, resp, resp.repos)
    return 0


def cmd_service_token(ns: argparse.Namespace, client: Client) -> int:
    resp = client.issue_service_token(ns.service)
    _print_token(ns, resp, ())
    return 0


def _print_token(
    ns: argparse.Namespace,
    resp: broker_pb2.IssueTaskTokenResponse | broker_pb2.IssueServiceTokenResponse,
    repos: Sequence[str],
) -> None:
    if _json(ns):
        _print_json(message_to_dict(resp), sys.stdout)
        return
    sys.stdout.write(resp.token + "\n")
    sys.stdout.flush()
    scope = f" for {', '.join(repos)}" if repos else ""
    print(f"expires {format_timestamp(resp.expires_at)}{scope}", file=sys.stderr)


def cmd_audit(ns: argparse.Namespace, client: Client) -> int:
    entries, next_token = fetch_page(
        ns,
        partial(client.iter_token_audit, task_ref=ns.ref),
        partial(client.list_token_audit, task_ref=ns.ref),
        lambda p: p.entries,
    )
    return print_page(ns, "entries", entries, next_token, AUDIT_HEADERS, audit_row, "no audit entries")


def cmd_expire(ns: argparse.Namespace, client: Client) -> int:
    expired = client.expire_registrations()
    if _json(ns):
        _print_json({"expired": expired}, sys.stdout)
    else:
        sys.stdout.write(f"expired {expired} registration{'' if expired == 1 else 's'}\n")
    return 0
