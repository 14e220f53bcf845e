"""The ``lobwife`` command: run the server, read and change tasks, and run cron jobs over gRPC.

    lobwife serve --state-dir /var/lib/lobwife          # the server (needs lobwife[server])
    lobwife tasks create "Fix the flaky test" --repo org/repo
    lobwife tasks list --status active
    lobwife tasks update T42 --status completed --clear-assigned-to
    lobwife tasks watch                                 # one line per change, until Ctrl-C
    lobwife jobs list                                   # cron jobs: last and next runs
    lobwife jobs trigger flush-logs                     # prints the run id
    lobwife jobs logs flush-logs --follow               # live output of the current or next run
    lobwife jobs next flush-logs --count 10             # fire times in the job's zone and UTC

Global options (``--addr``, ``--timeout``, ``--token``, ``--json``) go before or after
the command. ``--addr`` defaults to ``$LOBWIFE_ADDR`` or 127.0.0.1:50051, ``--token``
to ``$LOBWIFE_TOKEN``. A command first waits up to ``--connect-timeout`` seconds (default 2)
for the server to answer, then gives up with a hint. Exit status: 0 on success, 1 when the
server refused or failed the call (``error: NOT_FOUND: Task T9 not found`` on stderr), 2 for
usage errors, 3 when no lobwife server answers at the address.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import queue
import re
import shlex
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import UTC, datetime, timedelta, tzinfo
from typing import TYPE_CHECKING, Any, Generic, TextIO, TypeAlias, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import grpc
from google.protobuf import descriptor, duration_pb2, json_format, message, timestamp_pb2

from lobwife import __version__, enums
from lobwife.client import (
    DEFAULT_ADDR,
    Client,
    LobwifeError,
    TaskUpdate,
    channel_options,
    parse_status,
    status_name,
)
from lobwife.v1 import jobs_pb2, tasks_pb2

SERVER_MISSING = "the server is not installed: pip install 'lobwife[server]'"

# Longest NAME shown in a table; the full name is in `tasks get` and --json.
NAME_WIDTH = 60
# Backoff of `tasks watch` reconnecting after the server went away: seconds.
WATCH_RECONNECT_MIN_S = 0.5
WATCH_RECONNECT_MAX_S = 5.0
# Widest SCHEDULE and REASON cells in the jobs tables; `jobs get` and --json have them whole.
SCHEDULE_WIDTH = 40
REASON_WIDTH = 60
# `jobs runs` shows this many unless told otherwise; the server's largest page.
RUNS_DEFAULT_LIMIT = 20
RUNS_PAGE_MAX = 500
# `jobs next`: the server previews at most 100 fire times.
NEXT_DEFAULT_COUNT = 5
NEXT_MAX_COUNT = 100
# `jobs get` shows this many lines of the last output.
OUTPUT_TAIL_LINES = 20
# `jobs logs` without RUN_ID looks this far back for a finished run.
LOGS_SCAN_MAX = 1000
# While following a run not yet seen on the watch: how often to check it has not already ended.
FOLLOW_IDLE_CHECK_S = 2.0

if TYPE_CHECKING:
    # The runtime descriptors are upb's, which the stubs type apart from the
    # pure-Python ones; both have the same interface, so these names cover either.
    from google._upb import _message as _upb_message

    Descriptor: TypeAlias = descriptor.Descriptor | _upb_message.Descriptor
    EnumDescriptor: TypeAlias = descriptor.EnumDescriptor | _upb_message.EnumDescriptor
    FieldDescriptor: TypeAlias = descriptor.FieldDescriptor | _upb_message.FieldDescriptor

_FD = descriptor.FieldDescriptor
_INT64_TYPES = frozenset({_FD.TYPE_INT64, _FD.TYPE_UINT64, _FD.TYPE_SINT64, _FD.TYPE_FIXED64, _FD.TYPE_SFIXED64})


# --- output: JSON ----------------------------------------------------------------------


def message_to_dict(msg: message.Message) -> dict[str, Any]:
    """protojson with the API's JSON conventions: snake_case names, every field present,
    64-bit integers as numbers and enums by short lowercase name (``"active"``)."""
    data = json_format.MessageToDict(msg, preserving_proto_field_name=True, always_print_fields_with_no_presence=True)
    _apply_conventions(msg.DESCRIPTOR, data)
    return data


def _apply_conventions(desc: Descriptor, data: dict[str, Any]) -> None:
    for field in desc.fields:
        if field.name not in data:
            continue
        value = data[field.name]
        repeated = isinstance(value, list)
        items = value if repeated else [value]
        if field.enum_type is not None:
            items = [_short_enum(field.enum_type, v) for v in items]
        elif field.type in _INT64_TYPES:
            items = [int(v) for v in items]
        elif field.message_type is not None and not field.message_type.full_name.startswith("google.protobuf."):
            if field.message_type.GetOptions().map_entry:
                continue
            for item in items:
                _apply_conventions(field.message_type, item)
        data[field.name] = items if repeated else items[0]


def _short_enum(enum: EnumDescriptor, value: object) -> object:
    # json_format gives the value's full name; the short name is lobwife.enums' (as the gateway's).
    if not isinstance(value, str):
        return value  # an unknown number stays a number
    known = enum.values_by_name.get(value)
    return enums.short_name(enum, known.number) if known is not None else value.lower()


def _print_json(data: object, out: TextIO, *, compact: bool = False) -> None:
    if compact:
        out.write(json.dumps(data, ensure_ascii=False, separators=(",", ":")) + "\n")
    else:
        out.write(json.dumps(data, ensure_ascii=False, indent=2) + "\n")
    out.flush()


# --- output: text ----------------------------------------------------------------------


def format_timestamp(ts: timestamp_pb2.Timestamp) -> str:
    """``2025-01-02T15:04:05Z`` (UTC, whole seconds), or ``-`` when unset."""
    if ts.seconds == 0 and ts.nanos == 0:
        return "-"
    return datetime.fromtimestamp(ts.seconds, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def format_table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """Columns padded to their widest cell, two spaces apart, no trailing blanks."""
    table = [list(headers), *[list(row) for row in rows]]
    widths = [max(len(row[i]) for row in table) for i in range(len(headers))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in table]
    return "\n".join(lines) + "\n"


def _truncate(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


TASK_HEADERS = ("ID", "STATUS", "TYPE", "PRIORITY", "ASSIGNED", "NAME", "CREATED")


def task_row(task: tasks_pb2.Task) -> list[str]:
    return [
        task.task_id or f"T{task.id}",
        status_name(task.status),
        task.type or "-",
        task.priority or "-",
        task.assigned_to if task.HasField("assigned_to") and task.assigned_to else "-",
        _truncate(task.name, NAME_WIDTH),
        format_timestamp(task.created_at),
    ]


EVENT_HEADERS = ("ID", "CREATED", "TYPE", "ACTOR", "DETAIL")


def event_row(event: tasks_pb2.TaskEvent) -> list[str]:
    return [
        str(event.id),
        format_timestamp(event.created_at),
        event.event_type,
        event.actor or "-",
        event.detail.replace("\n", " ") if event.detail else "",
    ]


def format_fields(msg: message.Message, *, skip: Iterable[str] = ()) -> str:
    """One ``key: value`` line per field of ``msg`` in proto order, keys aligned."""
    skipped = set(skip)
    pairs: list[tuple[str, str]] = []
    for field in msg.DESCRIPTOR.fields:
        if field.name in skipped:
            continue
        pairs.append((field.name, _field_text(msg, field)))
    width = max(len(k) for k, _ in pairs) + 1
    return "".join(f"{(k + ':').ljust(width)} {v}\n" for k, v in pairs)


def _field_text(msg: message.Message, field: FieldDescriptor) -> str:
    value = getattr(msg, field.name)
    if field.is_repeated:
        return ", ".join(str(v) for v in value) or "-"
    if field.has_presence and not msg.HasField(field.name):
        return "-"
    if isinstance(value, timestamp_pb2.Timestamp):
        return format_timestamp(value)
    if field.enum_type is not None:
        return enum_text(field.enum_type, value)
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, message.Message):
        return json.dumps(message_to_dict(value))
    return str(value) if value != "" else "-"


def format_task(task: tasks_pb2.Task) -> str:
    # `id` is the number behind `task_id` (T42); showing both says the same twice.
    return format_fields(task, skip=("id",))


def format_change(change: tasks_pb2.WatchTasksResponse) -> str:
    """One line per watched change: time, cursor, task, event, status, name, detail."""
    event, task = change.event, change.task
    parts = [
        format_timestamp(event.created_at),
        f"#{change.cursor}",
        task.task_id or f"T{event.task_id}",
        event.event_type,
        f"[{status_name(task.status)}]",
        json.dumps(task.name, ensure_ascii=False),
    ]
    if event.actor:
        parts.append(f"by {event.actor}")
    if event.detail:
        parts.append(f"— {event.detail}")
    return " ".join(parts)


# --- argument types --------------------------------------------------------------------


def status_arg(text: str) -> int:
    try:
        return parse_status(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e).removeprefix("status: ")) from None


_DURATION = re.compile(r"^(\d+)([smhdw])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def time_arg(text: str, *, now: Callable[[], datetime] = lambda: datetime.now(UTC)) -> datetime:
    """An ISO 8601 time (naive means UTC) or an age such as ``30m``, ``2h``, ``7d``."""
    match = _DURATION.match(text.strip())
    if match:
        return now() - timedelta(**{_UNITS[match[2]]: int(match[1])})
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"invalid time {text!r}: use ISO 8601 (2025-01-31, 2025-01-31T12:00:00Z) or an age (30m, 2h, 7d)"
        ) from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, not {value}")
    return value


def non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative, not {value}")
    return value


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, not {text}")
    return value


# --- the parser ------------------------------------------------------------------------

# Fields `tasks update --clear FIELD` can clear: the task's optional fields.
CLEARABLE = ("slug", "model", "assigned_to", "repos", "discord_thread_id", "estimate_minutes", "workflow")


def _global_options() -> argparse.ArgumentParser:
    # SUPPRESS defaults: the options can be given before and after the command, and
    # a later parser that did not see an option must not overwrite an earlier value.
    common = argparse.ArgumentParser(add_help=False)
    group = common.add_argument_group("global options")
    group.add_argument(
        "--addr", default=argparse.SUPPRESS, help=f"server address (env LOBWIFE_ADDR, default {DEFAULT_ADDR})"
    )
    group.add_argument(
        "--timeout", type=positive_float, default=argparse.SUPPRESS, help="deadline per call in seconds (default 10)"
    )
    group.add_argument(
        "--connect-timeout",
        type=positive_float,
        default=argparse.SUPPRESS,
        metavar="SECONDS",
        help=f"give up when no server answers within this (default {CONNECT_TIMEOUT_S:g})",
    )
    group.add_argument("--token", default=argparse.SUPPRESS, help="bearer token (env LOBWIFE_TOKEN)")
    group.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print JSON")
    return common


def build_parser() -> argparse.ArgumentParser:
    common = _global_options()
    parser = argparse.ArgumentParser(
        prog="lobwife", description="lobwife: the fleet's control plane.", parents=[common]
    )
    parser.add_argument("--version", action="version", version=f"lobwife {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    # Everything after `serve` belongs to the server, which parses it itself.
    commands.add_parser(
        "serve",
        help="run the server (flags: --state-dir --grpc-port --http-port --host --log-level --grace)",
        add_help=False,
    )

    tasks = commands.add_parser("tasks", help="read and change tasks", parents=[common])
    actions = tasks.add_subparsers(dest="action", metavar="ACTION", required=True)

    def leaf(name: str, func: Callable[[argparse.Namespace, Client], int], help: str) -> argparse.ArgumentParser:
        p = actions.add_parser(name, help=help, description=help, parents=[common])
        p.set_defaults(func=func, parser=p)
        return p

    p = leaf("create", cmd_create, "create a task")
    p.add_argument("name", metavar="NAME")
    p.add_argument("--type", help="kind of work (default swe)")
    p.add_argument("--status", type=status_arg, help="initial status (default queued)")
    p.add_argument("--priority", help="default normal")
    p.add_argument("--model")
    p.add_argument("--assign", "--assigned-to", dest="assigned_to", metavar="WORKER")
    p.add_argument("--repo", dest="repos", action="append", metavar="OWNER/REPO", help="repeatable")
    p.add_argument("--discord-thread-id")
    p.add_argument("--estimate-minutes", type=non_negative_int)
    p.add_argument("--requires-qa", action="store_true", default=None)
    p.add_argument("--workflow")
    p.add_argument("--slug")
    p.add_argument("--actor", help="who is creating it")
    p.add_argument("--request-id", help="idempotency key (default: a fresh uuid4)")

    p = leaf("get", cmd_get, "show one task")
    p.add_argument("task_id", metavar="ID", help="42 or T42")

    p = leaf("list", cmd_list, "list tasks, newest first")
    p.add_argument("--status", type=status_arg)
    p.add_argument("--type")
    p.add_argument("--assigned-to", metavar="WORKER")
    # One name with its alias, as over HTTP: `?since=` is the field created_after, `?until=` created_before.
    p.add_argument(
        "--since",
        "--created-after",
        dest="since",
        type=time_arg,
        metavar="TIME",
        help="created at or after (ISO 8601, or an age: 2h, 7d)",
    )
    p.add_argument(
        "--until",
        "--created-before",
        dest="until",
        type=time_arg,
        metavar="TIME",
        help="created before (ISO 8601, or an age)",
    )
    p.add_argument("--limit", type=positive_int, help="page size (server default 100, at most 500)")
    p.add_argument("--page-token", help="continue from a previous page")
    p.add_argument("--all", action="store_true", help="fetch every page")

    p = leaf("update", cmd_update, "change a task's fields (only those given)")
    p.add_argument("task_id", metavar="ID")
    p.add_argument("--name")
    p.add_argument("--type")
    p.add_argument("--slug")
    p.add_argument("--status", type=status_arg)
    p.add_argument("--priority")
    p.add_argument("--model")
    assign = p.add_mutually_exclusive_group()
    assign.add_argument("--assigned-to", "--assign", dest="assigned_to", metavar="WORKER")
    assign.add_argument("--clear-assigned-to", action="store_true", help="unassign")
    p.add_argument("--repo", dest="repos", action="append", metavar="OWNER/REPO", help="replaces the list; repeatable")
    p.add_argument("--discord-thread-id")
    p.add_argument("--estimate-minutes", type=non_negative_int)
    p.add_argument("--requires-qa", action=argparse.BooleanOptionalAction, default=None)
    p.add_argument("--workflow")
    p.add_argument(
        "--clear",
        action="append",
        choices=CLEARABLE,
        default=[],
        metavar="FIELD",
        help=f"clear a field; repeatable ({', '.join(CLEARABLE)})",
    )
    p.add_argument("--actor")

    p = leaf("cancel", cmd_cancel, "cancel a task")
    p.add_argument("task_id", metavar="ID")
    p.add_argument("--reason")
    p.add_argument("--actor")

    p = leaf("events", cmd_events, "show a task's events, newest first")
    p.add_argument("task_id", metavar="ID")
    p.add_argument("--limit", type=positive_int, help="show at most this many (default all)")

    p = leaf("log", cmd_log, "append an event to a task")
    p.add_argument("task_id", metavar="ID")
    p.add_argument("event_type", metavar="EVENT_TYPE")
    p.add_argument("--detail")
    p.add_argument("--actor")

    p = leaf("register", cmd_register, "register the repositories a task may get GitHub tokens for")
    p.add_argument("task_id", metavar="ID")
    p.add_argument("repos", metavar="REPO", nargs="+", help="owner/repo")
    p.add_argument("--lobster-type")
    p.add_argument("--actor")

    p = leaf("watch", cmd_watch, "print one line per task change until Ctrl-C")
    p.add_argument("--after", type=non_negative_int, default=0, metavar="CURSOR", help="resume after this cursor")
    p.add_argument("--task", dest="task_id", metavar="ID", help="only this task")

    jobs = commands.add_parser("jobs", help="read, run and pause cron jobs", parents=[common])
    job_actions = jobs.add_subparsers(dest="action", metavar="ACTION", required=True)

    def job_leaf(name: str, func: Callable[[argparse.Namespace, Client], int], help: str) -> argparse.ArgumentParser:
        p = job_actions.add_parser(name, help=help, description=help, parents=[common])
        p.set_defaults(func=func, parser=p)
        return p

    job_leaf("list", cmd_jobs_list, "list jobs with their last and next runs")

    p = job_leaf("get", cmd_jobs_get, "show one job: definition, state and the tail of its last output")
    p.add_argument("name", metavar="NAME")

    p = job_leaf("trigger", cmd_jobs_trigger, "start a run now and print its run id")
    p.add_argument("name", metavar="NAME")

    p = job_leaf("enable", cmd_jobs_enable, "resume a job's schedule (missed slots are not run)")
    p.add_argument("name", metavar="NAME")

    p = job_leaf("disable", cmd_jobs_disable, "pause a job's schedule (a run in progress goes on)")
    p.add_argument("name", metavar="NAME")

    p = job_leaf("runs", cmd_jobs_runs, "show a job's runs, newest first")
    p.add_argument("name", metavar="NAME")
    how_many = p.add_mutually_exclusive_group()
    how_many.add_argument(
        "--limit", type=positive_int, default=RUNS_DEFAULT_LIMIT, help=f"show at most N (default {RUNS_DEFAULT_LIMIT})"
    )
    how_many.add_argument("--all", action="store_true", help="show every run")

    p = job_leaf("logs", cmd_jobs_logs, "print the output of a run (default: the newest finished run)")
    p.add_argument("name", metavar="NAME")
    p.add_argument("run_id", metavar="RUN_ID", nargs="?", type=positive_int, help="default: the newest finished run")
    p.add_argument(
        "-f",
        "--follow",
        action="store_true",
        help="stream the live output of the current or next run (or of RUN_ID) until it finishes",
    )

    p = job_leaf("next", cmd_jobs_next, "show a job's next fire times, in its time zone and in UTC")
    p.add_argument("name", metavar="NAME")
    p.add_argument(
        "--count",
        type=next_count,
        default=NEXT_DEFAULT_COUNT,
        metavar="N",
        help=f"how many (default {NEXT_DEFAULT_COUNT}, at most {NEXT_MAX_COUNT})",
    )
    return parser


# --- commands --------------------------------------------------------------------------


def _json(ns: argparse.Namespace) -> bool:
    return bool(getattr(ns, "json", False))


def cmd_create(ns: argparse.Namespace, client: Client) -> int:
    task = client.create_task(
        ns.name,
        type=ns.type,
        status=ns.status,
        priority=ns.priority,
        model=ns.model,
        assigned_to=ns.assigned_to,
        repos=ns.repos,
        discord_thread_id=ns.discord_thread_id,
        estimate_minutes=ns.estimate_minutes,
        requires_qa=ns.requires_qa,
        workflow=ns.workflow,
        slug=ns.slug,
        actor=ns.actor,
        request_id=ns.request_id,
    )
    _show_task(ns, task)
    return 0


def cmd_get(ns: argparse.Namespace, client: Client) -> int:
    _show_task(ns, client.get_task(ns.task_id))
    return 0


def _show_task(ns: argparse.Namespace, task: tasks_pb2.Task) -> None:
    if _json(ns):
        _print_json(message_to_dict(task), sys.stdout)
    else:
        sys.stdout.write(format_task(task))


def cmd_list(ns: argparse.Namespace, client: Client) -> int:
    filters: dict[str, Any] = {
        "status": ns.status,
        "type": ns.type,
        "assigned_to": ns.assigned_to,
        "created_after": ns.since,
        "created_before": ns.until,
        "page_size": ns.limit,
    }
    next_token = ""
    if ns.all:
        tasks = list(client.iter_tasks(**filters))
    else:
        page = client.list_tasks(page_token=ns.page_token, **filters)
        tasks, next_token = list(page.tasks), page.next_page_token
    out = sys.stdout
    if _json(ns):
        _print_json({"tasks": [message_to_dict(t) for t in tasks], "next_page_token": next_token}, out)
        return 0
    if tasks:
        out.write(format_table(TASK_HEADERS, [task_row(t) for t in tasks]))
    else:
        print("no tasks", file=sys.stderr)
    if next_token:
        print(f"more: --page-token {next_token} (or --all)", file=sys.stderr)
    return 0


def cmd_update(ns: argparse.Namespace, client: Client) -> int:
    fields: dict[str, Any] = {}
    for name in (
        "name",
        "type",
        "slug",
        "status",
        "priority",
        "model",
        "assigned_to",
        "repos",
        "discord_thread_id",
        "estimate_minutes",
        "requires_qa",
        "workflow",
    ):
        value = getattr(ns, name)
        if value is not None:
            fields[name] = value
    cleared = set(ns.clear) | ({"assigned_to"} if ns.clear_assigned_to else set())
    both = sorted(cleared & fields.keys())
    if both:
        ns.parser.error(f"cannot both set and clear: {', '.join(both)}")
    for name in cleared:
        fields[name] = None
    if not fields:
        ns.parser.error("nothing to update: give at least one field option")
    update: TaskUpdate = fields  # type: ignore[assignment]  # keys checked by argparse above
    resp = client.update_task(ns.task_id, actor=ns.actor, **update)
    out = sys.stdout
    if _json(ns):
        _print_json(message_to_dict(resp), out)
    elif resp.updated:
        out.write(f"updated {resp.task_id}: {', '.join(resp.updated)}\n")
    else:
        out.write(f"{resp.task_id} unchanged\n")
    return 0


def cmd_cancel(ns: argparse.Namespace, client: Client) -> int:
    resp = client.cancel_task(ns.task_id, actor=ns.actor, reason=ns.reason)
    if _json(ns):
        _print_json(message_to_dict(resp), sys.stdout)
    else:
        sys.stdout.write(f"cancelled {resp.task_id}\n")
    return 0


def cmd_events(ns: argparse.Namespace, client: Client) -> int:
    events: list[tasks_pb2.TaskEvent] = []
    page_size = min(ns.limit, 1000) if ns.limit else None
    for event in client.iter_events(ns.task_id, page_size=page_size):
        events.append(event)
        if ns.limit and len(events) >= ns.limit:
            break
    out = sys.stdout
    if _json(ns):
        _print_json({"events": [message_to_dict(e) for e in events]}, out)
    elif events:
        out.write(format_table(EVENT_HEADERS, [event_row(e) for e in events]))
    else:
        print("no events", file=sys.stderr)
    return 0


def cmd_log(ns: argparse.Namespace, client: Client) -> int:
    event = client.add_event(ns.task_id, ns.event_type, detail=ns.detail, actor=ns.actor)
    if _json(ns):
        _print_json(message_to_dict(event), sys.stdout)
    else:
        sys.stdout.write(f"logged {event.event_type} on T{event.task_id} (event {event.id})\n")
    return 0


def cmd_register(ns: argparse.Namespace, client: Client) -> int:
    task = client.register_repos(ns.task_id, ns.repos, lobster_type=ns.lobster_type, actor=ns.actor)
    if _json(ns):
        _print_json(message_to_dict(task), sys.stdout)
    else:
        sys.stdout.write(f"registered {task.task_id}: {', '.join(task.broker_repos) or '-'}\n")
    return 0


def cmd_watch(ns: argparse.Namespace, client: Client, *, sleep: Callable[[float], None] = time.sleep) -> int:
    """Print changes until Ctrl-C. When the server goes away (a restart, a rollout) the
    watch resumes after the last cursor it printed, so no change is lost or repeated."""
    cursor: int = ns.after
    out = sys.stdout
    backoff = WATCH_RECONNECT_MIN_S
    try:
        while True:
            try:
                for change in client.watch_tasks(after_cursor=cursor, task_id=ns.task_id):
                    cursor = change.cursor
                    backoff = WATCH_RECONNECT_MIN_S
                    if _json(ns):
                        _print_json(message_to_dict(change), out, compact=True)
                    else:
                        out.write(format_change(change) + "\n")
                        out.flush()
                reason = "the server ended the stream"
            except LobwifeError as e:
                if e.code != grpc.StatusCode.UNAVAILABLE:
                    raise
                reason = e.message
            print(f"watch interrupted ({reason}); resuming after cursor {cursor}", file=sys.stderr, flush=True)
            sleep(backoff)
            backoff = min(backoff * 2, WATCH_RECONNECT_MAX_S)
    except KeyboardInterrupt:
        # Ctrl-C is how a watch is meant to end: no traceback, success.
        return 0


# --- jobs ------------------------------------------------------------------------------

_RunStatus = jobs_pb2.RunStatus
# A run in one of these states is over; its output is stored.
FINAL_STATUSES = frozenset(
    {
        _RunStatus.RUN_STATUS_SUCCESS,
        _RunStatus.RUN_STATUS_FAILED,
        _RunStatus.RUN_STATUS_TIMEOUT,
        _RunStatus.RUN_STATUS_ERROR,
        _RunStatus.RUN_STATUS_SKIPPED,
        _RunStatus.RUN_STATUS_ABANDONED,
    }
)


def enum_text(enum: EnumDescriptor, value: int) -> str:
    """The short lowercase name of an enum value (``success``), ``-`` when unspecified."""
    if value not in enum.values_by_number:
        return str(value)  # a number this client's contract lacks stays a number
    return enums.short_name(enum, value) or "-"


def format_seconds(seconds: float) -> str:
    """A duration for people: ``0.52s``, ``12.3s``, ``45s``, ``1m30s``, ``2h``, ``1d6h``."""
    # Fractions only below a minute, and only where rounding keeps the number under the next unit.
    if seconds != int(seconds):
        if seconds < 9.995:
            return f"{seconds:.2f}s"
        if seconds < 59.95:
            return f"{seconds:.1f}s"
    total = round(seconds)
    if total < 60:
        return f"{total}s"
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        count, total = divmod(total, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)


def format_duration(d: duration_pb2.Duration) -> str:
    return format_seconds(d.ToNanoseconds() / 1e9)


def _schedule_text(job: jobs_pb2.Job) -> str:
    text = job.schedule or "-"
    # A cron expression means nothing without its zone; intervals and one-off times do not have one.
    if job.WhichOneof("trigger") == "cron" and job.time_zone and job.time_zone != "UTC":
        text += f" ({job.time_zone})"
    return text


JOB_HEADERS = ("NAME", "ENABLED", "SCHEDULE", "LAST STATUS", "LAST RUN", "NEXT RUN", "RUNS/FAILS", "SOURCE")


def job_row(job: jobs_pb2.Job) -> list[str]:
    """A row of ``jobs list``; LAST STATUS says ``running`` while a run is in progress."""
    return [
        job.name,
        "yes" if job.enabled else "no",
        _truncate(_schedule_text(job), SCHEDULE_WIDTH),
        "running" if job.running else enum_text(_RunStatus.DESCRIPTOR, job.last_status),
        format_timestamp(job.last_run),
        format_timestamp(job.next_run),
        f"{job.run_count}/{job.fail_count}",
        enum_text(jobs_pb2.JobSource.DESCRIPTOR, job.source),
    ]


RUN_HEADERS = ("RUN", "TRIGGER", "STATUS", "SLOT", "STARTED", "DURATION", "EXIT", "ATTEMPT", "REASON")


def run_row(run: jobs_pb2.JobRun) -> list[str]:
    return [
        str(run.run_id),
        enum_text(jobs_pb2.RunTrigger.DESCRIPTOR, run.trigger),
        enum_text(_RunStatus.DESCRIPTOR, run.status),
        format_timestamp(run.scheduled_at),
        format_timestamp(run.started_at),
        format_seconds(run.duration) if run.HasField("duration") else "-",
        str(run.exit_code) if run.HasField("exit_code") else "-",
        str(run.attempt),
        _truncate(" ".join(run.reason.split()), REASON_WIDTH) if run.reason else "",
    ]


def format_retry(retry: jobs_pb2.RetryPolicy) -> str:
    if retry.max_retries <= 0:
        return "none"
    n = retry.max_retries
    return (
        f"{n} {'retry' if n == 1 else 'retries'}, backoff {format_duration(retry.initial_backoff)}"
        f" x{retry.multiplier:g} per retry up to {format_duration(retry.max_backoff)}, jitter {retry.jitter * 100:g}%"
    )


def output_tail(output: str, lines: int = OUTPUT_TAIL_LINES) -> tuple[list[str], int]:
    """The last ``lines`` lines of ``output`` and how many lines it has in all."""
    all_lines = output.splitlines()
    return all_lines[-lines:], len(all_lines)


def format_job(job: jobs_pb2.Job, *, tail: int = OUTPUT_TAIL_LINES) -> str:
    """``jobs get``: one ``key: value`` line per fact, keys aligned, then the last output's tail.

    Environment values are not printed (they are often secrets); ``--json`` has them.
    """
    command = shlex.join(job.command) if job.command else "-"
    pairs: list[tuple[str, str]] = [
        ("name", job.name),
        ("description", job.description or "-"),
        ("source", enum_text(jobs_pb2.JobSource.DESCRIPTOR, job.source)),
        ("enabled", "yes" if job.enabled else "no"),
        ("running", "yes" if job.running else "no"),
        ("schedule", job.schedule or "-"),
        ("time_zone", job.time_zone or "UTC"),
        ("command", command),
    ]
    # The legacy `script` field repeats the command's last word unless it names a script file.
    if job.script and (not job.command or job.command[-1] != job.script):
        pairs.append(("script", job.script))
    pairs += [
        ("working_dir", job.working_dir or "-"),
        ("env", ", ".join(sorted(job.env)) + " (values: --json)" if job.env else "-"),
        ("concurrency", enum_text(jobs_pb2.ConcurrencyPolicy.DESCRIPTOR, job.concurrency)),
        ("timeout", format_duration(job.timeout)),
        ("retry", format_retry(job.retry)),
        ("start_jitter", format_duration(job.start_jitter)),
        (
            "catch_up",
            f"{enum_text(jobs_pb2.CatchUpPolicy.DESCRIPTOR, job.catch_up)}"
            f" (window {format_duration(job.catch_up_window)})",
        ),
        ("run_on_startup", "yes" if job.run_on_startup else "no"),
        ("last_run", format_timestamp(job.last_run)),
        ("last_status", enum_text(_RunStatus.DESCRIPTOR, job.last_status)),
        ("last_duration", format_seconds(job.last_duration) if job.HasField("last_duration") else "-"),
        ("runs", f"{job.run_count} ({job.fail_count} failed)"),
        ("next_run", format_timestamp(job.next_run)),
    ]
    lines: list[str] = []
    if not job.HasField("last_output"):
        pairs.append(("last_output", "-"))
    elif not job.last_output:
        pairs.append(("last_output", "(empty)"))
    else:
        shown, total = output_tail(job.last_output, tail)
        pairs.append(("last_output", f"(last {len(shown)} of {total} lines)" if total > len(shown) else ""))
        lines = [f"  {line}" for line in shown]
    width = max(len(k) for k, _ in pairs) + 1
    text = "".join(f"{(k + ':').ljust(width)} {v}".rstrip() + "\n" for k, v in pairs)
    return text + "".join(line.rstrip() + "\n" for line in lines)


def _zone(name: str) -> tzinfo | None:
    try:
        return ZoneInfo(name or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        return None


def format_local(ts: timestamp_pb2.Timestamp, zone: tzinfo) -> str:
    """``2026-03-29T03:00:00+02:00 CEST``: the time in ``zone``, with its offset and abbreviation."""
    local = datetime.fromtimestamp(ts.seconds, tz=zone)
    return f"{local.isoformat()} {local.tzname() or ''}".rstrip()


def next_rows(job: jobs_pb2.Job, zone: tzinfo) -> list[list[str]]:
    """``jobs next``: each previewed fire time in ``zone`` and in UTC."""
    return [[format_local(ts, zone), format_timestamp(ts)] for ts in job.next_runs]


def format_run_summary(run: jobs_pb2.JobRun) -> str:
    """``run 7 of hello: success, exit 0, 0.51s (manual)``: what a run came to, for stderr."""
    facts = [enum_text(_RunStatus.DESCRIPTOR, run.status)]
    if run.HasField("exit_code"):
        facts.append(f"exit {run.exit_code}")
    if run.HasField("duration"):
        facts.append(format_seconds(run.duration))
    trigger = enum_text(jobs_pb2.RunTrigger.DESCRIPTOR, run.trigger)
    text = f"run {run.run_id} of {run.job_name}: {', '.join(facts)}"
    if trigger != "-":
        text += f" ({trigger})"
    if run.reason and run.status not in (_RunStatus.RUN_STATUS_SUCCESS, _RunStatus.RUN_STATUS_RUNNING):
        text += f" — {run.reason}"
    return text


def next_count(text: str) -> int:
    value = positive_int(text)
    if value > NEXT_MAX_COUNT:
        raise argparse.ArgumentTypeError(f"at most {NEXT_MAX_COUNT}, not {value}")
    return value


def cmd_jobs_list(ns: argparse.Namespace, client: Client) -> int:
    jobs = list(client.iter_jobs())
    out = sys.stdout
    if _json(ns):
        _print_json({"jobs": [message_to_dict(j) for j in jobs]}, out)
    elif jobs:
        out.write(format_table(JOB_HEADERS, [job_row(j) for j in jobs]))
    else:
        print("no jobs", file=sys.stderr)
    return 0


def cmd_jobs_get(ns: argparse.Namespace, client: Client) -> int:
    job = client.get_job(ns.name)
    if _json(ns):
        _print_json(message_to_dict(job), sys.stdout)
    else:
        sys.stdout.write(format_job(job))
    return 0


def cmd_jobs_trigger(ns: argparse.Namespace, client: Client) -> int:
    run = client.trigger_job(ns.name)
    if _json(ns):
        _print_json(message_to_dict(run), sys.stdout)
    else:
        # Only the id, so that `id=$(lobwife jobs trigger x)` works.
        sys.stdout.write(f"{run.run_id}\n")
    return 0


def cmd_jobs_enable(ns: argparse.Namespace, client: Client) -> int:
    job = client.enable_job(ns.name)
    if _json(ns):
        _print_json(message_to_dict(job), sys.stdout)
    else:
        sys.stdout.write(f"enabled {job.name} (next run {format_timestamp(job.next_run)})\n")
    return 0


def cmd_jobs_disable(ns: argparse.Namespace, client: Client) -> int:
    job = client.disable_job(ns.name)
    if _json(ns):
        _print_json(message_to_dict(job), sys.stdout)
    else:
        sys.stdout.write(f"disabled {job.name}\n")
    return 0


def cmd_jobs_runs(ns: argparse.Namespace, client: Client) -> int:
    limit: int | None = None if ns.all else ns.limit
    runs: list[jobs_pb2.JobRun] = []
    token, more = "", False
    while True:
        size = RUNS_PAGE_MAX if limit is None else min(limit - len(runs), RUNS_PAGE_MAX)
        page = client.list_runs(ns.name, page_size=size, page_token=token)
        runs.extend(page.runs)
        token = page.next_page_token
        if not token:
            break
        if limit is not None and len(runs) >= limit:
            more = True
            break
    out = sys.stdout
    if _json(ns):
        _print_json({"runs": [message_to_dict(r) for r in runs]}, out)
    elif runs:
        out.write(format_table(RUN_HEADERS, [run_row(r) for r in runs]))
    else:
        print("no runs", file=sys.stderr)
    if more:
        print(f"more runs: --limit {len(runs) * 2} or --all", file=sys.stderr)
    return 0


def _newest_finished_run(client: Client, name: str) -> jobs_pb2.JobRun | None:
    """The newest run that is over and ran (skipped runs never started: no output)."""
    for seen, run in enumerate(client.iter_runs(name)):
        if seen >= LOGS_SCAN_MAX:
            break
        if run.status in FINAL_STATUSES and run.status != _RunStatus.RUN_STATUS_SKIPPED:
            return run
    return None


def _write_output(ns: argparse.Namespace, run: jobs_pb2.JobRun) -> None:
    """A finished run's stored output on stdout (the run itself with --json)."""
    if _json(ns):
        _print_json(message_to_dict(run), sys.stdout)
        return
    out = sys.stdout
    out.write(run.output)
    if run.output and not run.output.endswith("\n"):
        out.write("\n")
    out.flush()
    if run.output_truncated:
        print("(output truncated: the server kept its start and its end)", file=sys.stderr)


def cmd_jobs_logs(ns: argparse.Namespace, client: Client) -> int:
    if ns.follow:
        return follow_run(ns, client)
    if ns.run_id is not None:
        run = client.get_run(ns.name, ns.run_id)
    else:
        newest = _newest_finished_run(client, ns.name)
        if newest is None:
            print(f"error: no finished run of {ns.name} (among its newest {LOGS_SCAN_MAX})", file=sys.stderr)
            return 1
        run = client.get_run(ns.name, newest.run_id)
    if run.status not in FINAL_STATUSES:
        print(
            f"run {run.run_id} of {run.job_name} is {enum_text(_RunStatus.DESCRIPTOR, run.status)}: its output is"
            f" stored when it finishes (--follow streams it)",
            file=sys.stderr,
        )
        return 1
    if not _json(ns):
        print(format_run_summary(run), file=sys.stderr)
    _write_output(ns, run)
    return 0


_T = TypeVar("_T")


class _Pump(Generic[_T]):
    """Reads an iterator in a thread so the reader can wait for the next item with a time limit.

    A blocking gRPC stream has no read timeout; the thread ends when the stream does
    (the channel closing cancels it).
    """

    IDLE = object()
    END = object()

    def __init__(self, items: Iterator[_T]) -> None:
        self._queue: queue.Queue[tuple[str, object]] = queue.Queue()
        threading.Thread(target=self._run, args=(items,), name="lobwife-follow", daemon=True).start()

    def _run(self, items: Iterator[_T]) -> None:
        try:
            for item in items:
                self._queue.put(("item", item))
            self._queue.put(("end", None))
        except BaseException as e:  # handed to the reader, who decides
            self._queue.put(("error", e))

    def get(self, timeout: float) -> _T | object:
        """The next item, :attr:`IDLE` when none came within ``timeout``, :attr:`END` at the end."""
        try:
            kind, value = self._queue.get(timeout=timeout)
        except queue.Empty:
            return self.IDLE
        if kind == "error":
            assert isinstance(value, BaseException)
            raise value
        return self.END if kind == "end" else value


def follow_run(
    ns: argparse.Namespace,
    client: Client,
    *,
    sleep: Callable[[float], None] = time.sleep,
    idle_check: float = FOLLOW_IDLE_CHECK_S,
) -> int:
    """``jobs logs NAME [RUN_ID] --follow``: stream a run's output until it finishes.

    Without RUN_ID it follows the first run of the job the watch sees: the current run
    (from the moment of joining) or the next one. Output a run wrote before the watch
    started is not in the live feed; when nothing of a run was streamed, its stored
    output is printed once it is over. A finished RUN_ID prints its stored output.
    """
    name: str = ns.name
    target: int | None = ns.run_id
    as_json = _json(ns)
    out, err = sys.stdout, sys.stderr
    if target is not None:
        run = client.get_run(name, target)
        if run.status in FINAL_STATUSES:
            if not as_json:
                print(format_run_summary(run), file=err)
            _write_output(ns, run)
            return 0
    elif not as_json:
        print(f"waiting for a run of {name}", file=err, flush=True)
    seen = False  # has the watch shown anything of the target run (so it is subscribed)?
    streamed = False
    backoff = WATCH_RECONNECT_MIN_S

    def finish(run: jobs_pb2.JobRun) -> int:
        if not streamed:
            # The live output was missed: it ended before the watch started.
            stored = client.get_run(name, run.run_id) if not run.output else run
            if as_json:
                _print_json(message_to_dict(jobs_pb2.WatchRunsResponse(run=stored)), out, compact=True)
            else:
                _write_output(ns, stored)
        if not as_json:
            print(format_run_summary(run), file=err, flush=True)
        return 0

    while True:
        pump: _Pump[jobs_pb2.WatchRunsResponse] = _Pump(client.watch_runs(name=name, include_output=True))
        reason = ""
        while not reason:
            try:
                got = pump.get(idle_check)
            except LobwifeError as e:
                if e.code != grpc.StatusCode.UNAVAILABLE:
                    raise
                reason = e.message
                break
            if got is _Pump.END:
                reason = "the server ended the stream"
                break
            if got is _Pump.IDLE:
                # The run may have ended between looking it up and the watch starting:
                # then no message about it will ever come.
                if target is not None and not seen:
                    run = client.get_run(name, target)
                    if run.status in FINAL_STATUSES:
                        return finish(run)
                continue
            assert isinstance(got, jobs_pb2.WatchRunsResponse)
            run = got.run
            if target is None:
                if run.status == _RunStatus.RUN_STATUS_SKIPPED:
                    continue  # never started: nothing to follow
                target = run.run_id
                if not as_json:
                    print(f"following run {target}", file=err, flush=True)
            if run.run_id != target:
                continue
            if not seen and got.output_chunk and not as_json:
                print(f"(joined run {target} while running: its earlier output is not shown)", file=err, flush=True)
            seen = True
            if as_json:
                _print_json(message_to_dict(got), out, compact=True)
                streamed = streamed or bool(got.output_chunk)
            elif got.output_chunk:
                out.write(got.output_chunk)
                out.flush()
                streamed = True
            if not got.output_chunk and run.status in FINAL_STATUSES:
                return finish(run)
        if target is not None:
            run = client.get_run(name, target)
            if run.status in FINAL_STATUSES:
                if streamed:
                    print(
                        f"(watch interrupted: {reason}; the whole output: lobwife jobs logs {name} {target})",
                        file=err,
                    )
                return finish(run)
        print(f"watch interrupted ({reason}); watching again", file=err, flush=True)
        sleep(backoff)
        backoff = min(backoff * 2, WATCH_RECONNECT_MAX_S)


def cmd_jobs_next(ns: argparse.Namespace, client: Client) -> int:
    job = client.get_job(ns.name, next_runs=ns.count)
    zone = _zone(job.time_zone)
    zone_name = job.time_zone or "UTC"
    if zone is None:
        print(f"time zone {zone_name} is not known here (no tz database?): showing UTC only", file=sys.stderr)
        zone, zone_name = UTC, "UTC"
    rows = next_rows(job, zone)
    out = sys.stdout
    if _json(ns):
        _print_json(
            {
                "name": job.name,
                "time_zone": zone_name,
                "next_runs": [
                    {"time": datetime.fromtimestamp(ts.seconds, tz=zone).isoformat(), "utc": format_timestamp(ts)}
                    for ts in job.next_runs
                ],
            },
            out,
        )
    elif rows:
        out.write(format_table((f"TIME ({zone_name})", "UTC"), rows))
    if not rows:
        why = "it is disabled" if not job.enabled else "its schedule has no more slots"
        print(f"no next runs of {job.name}: {why}", file=sys.stderr)
    return 0


# --- reaching the server --------------------------------------------------------------

#: How long a command waits for the server to answer before giving up (``--connect-timeout``).
#: The client's own retries would wait ~7.5 s in silence and then print gRPC's raw error.
CONNECT_TIMEOUT_S = 2.0
#: The exit status when no lobwife server answers at the address.
EXIT_UNREACHABLE = 3
# A gRPC client's first bytes (the HTTP/2 preface); an HTTP/1.x server answers with a status line.
_H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
_HOST_PORT = re.compile(r"(?:dns:(?:///)?)?(?P<host>\[[^\]]+\]|[^:/\[\]]+):(?P<port>\d+)")
# What gRPC says of a server that answered its preface as HTTP/1.x does.
_HTTP1_TEXT = "http1.x server"
# How long the diagnosis after a failed wait may take (its call, then its socket probe).
_DIAGNOSE_S = 0.5


class Unreachable(Exception):
    """No lobwife gRPC server answered at the address: ``hint`` says what to do, ``detail`` what gRPC said."""

    def __init__(self, hint: str, detail: str = "") -> None:
        super().__init__(hint)
        self.hint = hint
        self.detail = detail


@contextlib.contextmanager
def server_answering(addr: str, timeout: float) -> Iterator[None]:
    """Wait until a gRPC server answers at ``addr``, or raise :class:`Unreachable` after ``timeout`` s.

    A refused connection is tried again until then (a server may be starting), but an
    HTTP/1.x answer is final: that fails at once. The waiting channel has the client's
    options, so gRPC shares its connection with the client's channel; it stays open
    while the command runs so that the connection does.
    """
    with grpc.insecure_channel(addr, options=channel_options()) as channel:
        states: queue.Queue[grpc.ChannelConnectivity] = queue.Queue()
        channel.subscribe(states.put, try_to_connect=True)
        try:
            _wait_ready(channel, states, addr, time.monotonic() + timeout)
        finally:
            channel.unsubscribe(states.put)
        yield


def _wait_ready(channel: grpc.Channel, states: queue.Queue[grpc.ChannelConnectivity], addr: str, until: float) -> None:
    while (left := until - time.monotonic()) > 0:
        try:
            state = states.get(timeout=left)
        except queue.Empty:
            break
        if state is grpc.ChannelConnectivity.READY:
            return
        if state is grpc.ChannelConnectivity.TRANSIENT_FAILURE:
            detail = _last_error(channel)
            if detail is None:
                return
            if _HTTP1_TEXT in detail:
                raise unreachable(addr, detail)
    detail = _last_error(channel)
    if detail is not None:
        raise unreachable(addr, detail)


def _last_error(channel: grpc.Channel) -> str | None:
    """Why the channel is not connected (gRPC's text), or None if a server answers after all."""
    # Any method does: a call that fails fast (no wait_for_ready) carries the channel's last error.
    probe = channel.unary_unary("/grpc.health.v1.Health/Check", None, None)  # bytes in, bytes out
    try:
        probe(b"", timeout=_DIAGNOSE_S, wait_for_ready=False)
    except grpc.RpcError as e:
        code = e.code() if isinstance(e, grpc.Call) else None
        if code == grpc.StatusCode.UNAVAILABLE:
            return str(e.details() or "")
        if code == grpc.StatusCode.DEADLINE_EXCEEDED:
            return ""  # still connecting: nothing answers
    return None


def unreachable(addr: str, detail: str) -> Unreachable:
    """The error for ``addr``: the HTTP port given by mistake, or no server at all."""
    if _HTTP1_TEXT in detail or _answers_http1(addr):
        grpc_port = DEFAULT_ADDR.rpartition(":")[2]
        return Unreachable(
            f"{addr} looks like lobwife's HTTP port; gRPC is on another port (default {grpc_port}):"
            " set --addr or LOBWIFE_ADDR",
            detail,
        )
    return Unreachable(f"no lobwife server answers at {addr} (is it running? set --addr or LOBWIFE_ADDR)", detail)


def _answers_http1(addr: str) -> bool:
    """Whether ``host:port`` answers a gRPC client's first bytes as an HTTP/1.x server does."""
    m = _HOST_PORT.fullmatch(addr)
    if m is None:
        return False
    try:
        with socket.create_connection((m["host"].strip("[]"), int(m["port"])), timeout=_DIAGNOSE_S) as sock:
            sock.sendall(_H2_PREFACE)
            return sock.recv(8).startswith(b"HTTP/1.")
    except OSError:
        return False


# --- entry points ----------------------------------------------------------------------


def serve(argv: list[str]) -> int:
    """Run the server (imported only now: clients do not install its dependencies)."""
    try:
        app = importlib.import_module("lobwife_server.app")
    except ModuleNotFoundError as e:
        # Missing: the server package itself or one of its third-party dependencies.
        # A module missing *inside* the server package is a bug; let it show.
        if e.name and e.name.startswith("lobwife_server.") and e.name != "lobwife_server.app":
            raise
        print(SERVER_MISSING, file=sys.stderr)
        print(f"(missing module: {e.name})", file=sys.stderr)
        return 2
    server_main: Callable[[list[str] | None], int] = app.main
    return int(server_main(argv) or 0)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    ns, rest = parser.parse_known_args(args)
    if ns.command == "serve":
        return serve(rest)
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    addr = getattr(ns, "addr", None) or os.environ.get("LOBWIFE_ADDR") or DEFAULT_ADDR
    token = getattr(ns, "token", None) or os.environ.get("LOBWIFE_TOKEN") or None
    timeout = getattr(ns, "timeout", 10.0)
    connect_timeout = min(getattr(ns, "connect_timeout", CONNECT_TIMEOUT_S), timeout)
    try:
        with Client(addr, timeout=timeout, token=token) as client, server_answering(addr, connect_timeout):
            return int(ns.func(ns, client))
    except Unreachable as e:
        print(f"error: {e.hint}", file=sys.stderr)
        if e.detail:
            # gRPC's own words, without its preamble ("failed to connect to all addresses; ...").
            print(f"  (gRPC: {e.detail.rpartition('last error: ')[2]})", file=sys.stderr)
        return EXIT_UNREACHABLE
    except LobwifeError as e:
        print(f"error: {e.code.name}: {e.message}", file=sys.stderr)
        for violation in e.field_violations:
            print(f"  {violation.field}: {violation.description}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        # `lobwife tasks list | head`: the reader left; that is not an error. Point
        # stdout at /dev/null so the interpreter's final flush does not complain.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
