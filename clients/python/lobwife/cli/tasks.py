"""``lobwife tasks ...``: read and change tasks, and watch their changes."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import Any

from lobwife.cli._args import (
    Subcommands,
    leaf,
    non_negative_float,
    non_negative_int,
    page_size_option,
    positive_int,
    status_arg,
    time_arg,
)
from lobwife.cli._output import (
    _json,
    _print_json,
    _truncate,
    format_fields,
    format_table,
    format_timestamp,
    message_to_dict,
    print_page,
)
from lobwife.client import Client, Reconnect, TaskUpdate, status_name
from lobwife.v1 import tasks_pb2

# Longest NAME shown in a table; the full name is in `tasks get` and --json.
NAME_WIDTH = 60
# Fields `tasks update --clear FIELD` can clear: the task's optional fields.
CLEARABLE = (
    "slug",
    "model",
    "assigned_to",
    "repos",
    "discord_thread_id",
    "estimate_minutes",
    "workflow",
    "budget_usd",
)

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


def register(commands: Subcommands, common: argparse.ArgumentParser) -> None:
    tasks = commands.add_parser("tasks", help="read and change tasks", parents=[common])
    actions = tasks.add_subparsers(dest="action", metavar="ACTION", required=True)

    p = leaf(actions, common, "create", cmd_create, "create a task")
    p.add_argument("name", metavar="NAME")
    p.add_argument("--type", help="kind of work (default swe)")
    p.add_argument("--status", type=status_arg, help="initial status (default queued)")
    p.add_argument("--priority", help="default normal")
    p.add_argument("--model")
    p.add_argument("--assign", "--assigned-to", dest="assigned_to", metavar="WORKER")
    p.add_argument("--repo", dest="repos", action="append", metavar="OWNER/REPO", help="repeatable")
    p.add_argument("--discord-thread-id")
    p.add_argument("--estimate-minutes", type=non_negative_float, metavar="MINUTES", help="fractions kept: 12.5")
    p.add_argument("--requires-qa", action="store_true", default=None)
    p.add_argument("--workflow")
    p.add_argument("--budget-usd", type=non_negative_float, metavar="USD", help="what it may spend on model calls")
    p.add_argument("--slug")
    p.add_argument("--actor", help="who is creating it")
    p.add_argument("--request-id", help="idempotency key (default: a fresh uuid4)")

    p = leaf(actions, common, "get", cmd_get, "show one task")
    p.add_argument("task_id", metavar="ID", help="42 or T42")

    p = leaf(actions, common, "list", cmd_list, "list tasks, newest first")
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
    page_size_option(p)
    p.add_argument("--page-token", help="continue from a previous page")
    p.add_argument("--all", action="store_true", help="fetch every page")

    p = leaf(actions, common, "update", cmd_update, "change a task's fields (only those given)")
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
    p.add_argument("--estimate-minutes", type=non_negative_float, metavar="MINUTES", help="fractions kept: 12.5")
    p.add_argument("--requires-qa", action=argparse.BooleanOptionalAction, default=None)
    p.add_argument("--workflow")
    p.add_argument("--budget-usd", type=non_negative_float, metavar="USD", help="what it may spend on model calls")
    p.add_argument(
        "--clear",
        action="append",
        choices=CLEARABLE,
        default=[],
        metavar="FIELD",
        help=f"clear a field; repeatable ({', '.join(CLEARABLE)})",
    )
    p.add_argument("--actor")

    p = leaf(actions, common, "cancel", cmd_cancel, "cancel a task")
    p.add_argument("task_id", metavar="ID")
    p.add_argument("--reason")
    p.add_argument("--actor")

    p = leaf(actions, common, "events", cmd_events, "show a task's events, newest first")
    p.add_argument("task_id", metavar="ID")
    p.add_argument("--limit", type=positive_int, help="show at most this many (default all)")

    p = leaf(actions, common, "log", cmd_log, "append an event to a task")
    p.add_argument("task_id", metavar="ID")
    p.add_argument("event_type", metavar="EVENT_TYPE")
    p.add_argument("--detail")
    p.add_argument("--actor")

    p = leaf(actions, common, "register", cmd_register, "register the repositories a task may get GitHub tokens for")
    p.add_argument("task_id", metavar="ID")
    p.add_argument("repos", metavar="REPO", nargs="+", help="owner/repo")
    p.add_argument("--lobster-type")
    p.add_argument("--actor")

    p = leaf(actions, common, "watch", cmd_watch, "print one line per task change until Ctrl-C")
    start = p.add_mutually_exclusive_group()
    start.add_argument(
        "--after",
        type=non_negative_int,
        default=0,
        metavar="CURSOR",
        help="resume after this cursor (default: every retained change, from the first)",
    )
    start.add_argument(
        "--from-now",
        action="store_true",
        help="only changes made from now on (where that is goes to stderr; with --json, the first line)",
    )
    p.add_argument("--task", dest="task_id", metavar="ID", help="only this task")


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
        budget_usd=ns.budget_usd,
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
    return print_page(ns, "tasks", tasks, next_token, TASK_HEADERS, task_row)


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
        "budget_usd",
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


def cmd_watch(ns: argparse.Namespace, client: Client) -> int:
    """Print changes until Ctrl-C. The client's watch resumes by itself when the server goes
    away (a restart, a rollout), after the last cursor it saw, so no change is lost or
    repeated; each reconnect is said on stderr."""
    out = sys.stdout
    as_json = _json(ns)

    def reconnecting(info: Reconnect) -> None:
        where = f"resuming after cursor {info.after_cursor}" if info.after_cursor is not None else "from now on"
        print(f"watch interrupted ({info.reason}); reconnecting, {where}", file=sys.stderr, flush=True)

    # The client logs each reconnect too (Python would print it on stderr for want of a
    # handler): the line above says it here, once.
    client_log = logging.getLogger("lobwife.client")
    if not any(isinstance(h, logging.NullHandler) for h in client_log.handlers):
        client_log.addHandler(logging.NullHandler())
    changes = client.watch_tasks(
        after_cursor=ns.after, from_now=ns.from_now, task_id=ns.task_id, on_reconnect=reconnecting
    )
    try:
        for change in changes:
            if as_json:
                _print_json(message_to_dict(change), out, compact=True)
            elif not change.HasField("event"):
                # --from-now: where "now" is, to resume from with --after.
                print(f"watching from now on (after cursor {change.cursor})", file=sys.stderr, flush=True)
            else:
                out.write(format_change(change) + "\n")
                out.flush()
    except KeyboardInterrupt:
        # Ctrl-C is how a watch is meant to end: no traceback, success.
        return 0
    finally:
        changes.close()
    return 0
