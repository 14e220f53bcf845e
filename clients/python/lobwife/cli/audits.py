"""``lobwife audits ...``: audit findings: report one, list them, show one with its events, resolve it.

``audits create`` is what an audit job runs for each thing it finds: a finding already open with
the same fingerprint is counted (``counted: finding 12, seen 3 times``), a resolved one reopened.
"""

from __future__ import annotations

import argparse
import sys
from functools import partial

from lobwife import enums
from lobwife.cli._args import Subcommands, leaf, page_size_option, time_arg
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
from lobwife.client import Client
from lobwife.v1 import audits_pb2

TITLE_WIDTH = 60
HEADERS = ("ID", "SEVERITY", "STATUS", "CATEGORY", "SUBJECT", "SEEN", "LAST SEEN", "TITLE")
EVENT_HEADERS = ("TIME", "KIND", "ACTOR", "DETAIL")

_SEVERITIES = [n for n in enums.short_names(audits_pb2.Severity.DESCRIPTOR).values() if n]
_STATUSES = [n for n in enums.short_names(audits_pb2.FindingStatus.DESCRIPTOR).values() if n]


def _word(enum: enums.EnumDescriptor, value: int) -> str:
    return enums.short_name(enum, value) or "-"


def finding_row(f: audits_pb2.Finding) -> list[str]:
    return [
        str(f.id),
        _word(audits_pb2.Severity.DESCRIPTOR, f.severity),
        _word(audits_pb2.FindingStatus.DESCRIPTOR, f.status),
        f.category,
        f.subject or "-",
        str(f.count),
        format_timestamp(f.last_seen_at),
        _truncate(f.title, TITLE_WIDTH),
    ]


def register(commands: Subcommands, common: argparse.ArgumentParser) -> None:
    audits = commands.add_parser("audits", help="audit findings", parents=[common])
    actions = audits.add_subparsers(dest="action", metavar="ACTION", required=True)

    p = leaf(actions, common, "create", cmd_create, "report a finding (an open one with its fingerprint is counted)")
    p.add_argument("category", metavar="CATEGORY", help="the audit type: security, pr-review, cost, ...")
    p.add_argument("title", metavar="TITLE")
    p.add_argument("--severity", choices=_SEVERITIES, help="default medium")
    p.add_argument("--detail", help="what was found (up to 64 KiB; - reads it from stdin)")
    p.add_argument("--subject", help="T42, org/repo, job:NAME or free text")
    p.add_argument("--source", help="the audit job or reviewer reporting it")
    p.add_argument("--fingerprint", help="what makes two reports one finding (default: category, subject, title)")
    p.add_argument("--request-id", help="makes a retried report count once")

    p = leaf(actions, common, "list", cmd_list, "list findings, newest first")
    p.add_argument("--status", choices=_STATUSES)
    p.add_argument("--min-severity", choices=_SEVERITIES, help="at least this severe")
    p.add_argument("--category")
    p.add_argument("--subject")
    p.add_argument("--task", dest="task_ref", metavar="T42", help="the findings about this task")
    p.add_argument("--since", type=time_arg, help="seen at or after: an ISO 8601 time, or 2h, 3d ago")
    page_size_option(p)
    p.add_argument("--page-token", help="continue from a previous page")
    p.add_argument("--all", action="store_true", help="fetch every page")

    p = leaf(actions, common, "get", cmd_get, "show a finding and its events")
    p.add_argument("id", type=int, metavar="ID")

    p = leaf(actions, common, "resolve", cmd_resolve, "resolve a finding (or --wont-fix, or --reopen)")
    p.add_argument("id", type=int, metavar="ID")
    p.add_argument("resolution", nargs="?", default=None, metavar="RESOLUTION", help="how, in a line")
    p.add_argument("--note", help="a longer note")
    p.add_argument("--actor", help="who (default: the caller's identity)")
    how = p.add_mutually_exclusive_group()
    how.add_argument("--wont-fix", action="store_true", help="it stays as it is, on purpose")
    how.add_argument("--reopen", action="store_true", help="open it again")


def cmd_create(ns: argparse.Namespace, client: Client) -> int:
    detail = sys.stdin.read() if ns.detail == "-" else ns.detail
    resp = client.create_finding(
        ns.category,
        ns.title,
        severity=ns.severity,
        detail=detail,
        subject=ns.subject,
        source=ns.source,
        fingerprint=ns.fingerprint,
        request_id=ns.request_id,
    )
    f = resp.finding
    if _json(ns):
        _print_json({**message_to_dict(f), "created": resp.created, "reopened": resp.reopened}, sys.stdout)
    elif resp.created:
        sys.stdout.write(f"created finding {f.id}\n")
    elif resp.reopened:
        sys.stdout.write(f"reopened finding {f.id} (seen {f.count} times)\n")
    else:
        sys.stdout.write(f"counted: finding {f.id}, seen {f.count} times\n")
    return 0


def cmd_list(ns: argparse.Namespace, client: Client) -> int:
    filters = {
        "status": ns.status,
        "min_severity": ns.min_severity,
        "category": ns.category,
        "subject": ns.subject,
        "task_ref": ns.task_ref,
        "since": ns.since,
    }
    found, next_token = fetch_page(
        ns, partial(client.iter_findings, **filters), partial(client.list_findings, **filters), lambda p: p.findings
    )
    return print_page(ns, "findings", found, next_token, HEADERS, finding_row)


def cmd_get(ns: argparse.Namespace, client: Client) -> int:
    resp = client.get_finding(ns.id)
    if _json(ns):
        _print_json(message_to_dict(resp), sys.stdout)
        return 0
    sys.stdout.write(format_fields(resp.finding))
    if resp.events:
        rows = [[format_timestamp(e.created_at), e.kind, e.actor or "-", e.detail] for e in resp.events]
        sys.stdout.write("\n" + format_table(EVENT_HEADERS, rows))
    return 0


def cmd_resolve(ns: argparse.Namespace, client: Client) -> int:
    status = "open" if ns.reopen else "wont_fix" if ns.wont_fix else "resolved"
    f = client.resolve_finding(ns.id, resolution=ns.resolution, note=ns.note, status=status, actor=ns.actor)
    if _json(ns):
        _print_json(message_to_dict(f), sys.stdout)
    else:
        sys.stdout.write(f"finding {f.id}: {_word(audits_pb2.FindingStatus.DESCRIPTOR, f.status)}\n")
    return 0
