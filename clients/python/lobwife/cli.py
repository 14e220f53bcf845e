"""The ``lobwife`` command: run the server, and read and change tasks over gRPC.

    lobwife serve --state-dir /var/lib/lobwife          # the server (needs lobwife[server])
    lobwife tasks create "Fix the flaky test" --repo org/repo
    lobwife tasks list --status active
    lobwife tasks update T42 --status completed --clear-assigned-to
    lobwife tasks watch                                 # one line per change, until Ctrl-C

Global options (``--addr``, ``--timeout``, ``--token``, ``--json``) go before or after
the command. ``--addr`` defaults to ``$LOBWIFE_ADDR`` or 127.0.0.1:50051, ``--token``
to ``$LOBWIFE_TOKEN``. Exit status: 0 on success, 1 when the server refused or failed
the call (``error: NOT_FOUND: Task T9 not found`` on stderr), 2 for usage errors.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import re
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, TextIO, TypeAlias

import grpc
from google.protobuf import descriptor, json_format, message, timestamp_pb2

from lobwife import __version__
from lobwife.client import (
    DEFAULT_ADDR,
    Client,
    LobwifeError,
    TaskUpdate,
    parse_status,
    status_name,
)
from lobwife.v1 import tasks_pb2

SERVER_MISSING = "the server is not installed: pip install 'lobwife[server]'"

# Longest NAME shown in a table; the full name is in `tasks get` and --json.
NAME_WIDTH = 60
# Backoff of `tasks watch` reconnecting after the server went away: seconds.
WATCH_RECONNECT_MIN_S = 0.5
WATCH_RECONNECT_MAX_S = 5.0

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
    if not isinstance(value, str):
        return value  # an unknown number stays a number
    prefix = re.sub(r"(?<!^)(?=[A-Z])", "_", enum.name).upper() + "_"
    return value.removeprefix(prefix).lower()


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
        known = field.enum_type.values_by_number.get(value)
        return str(_short_enum(field.enum_type, known.name)) if known else str(value)
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
    p.add_argument("--since", type=time_arg, metavar="TIME", help="created at or after (ISO 8601, or an age: 2h, 7d)")
    p.add_argument("--until", type=time_arg, metavar="TIME", help="created before (ISO 8601, or an age)")
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
    try:
        with Client(addr, timeout=timeout, token=token) as client:
            return int(ns.func(ns, client))
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
