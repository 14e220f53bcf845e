"""The ``lobwife`` command: run the server, read and change tasks, and run cron jobs over gRPC.

    lobwife serve --state-dir /var/lib/lobwife          # the server (needs lobwife[server])
    lobwife tasks create "Fix the flaky test" --repo org/repo
    lobwife tasks list --status active
    lobwife tasks update T42 --status completed --clear-assigned-to
    lobwife tasks watch --from-now                      # one line per change, until Ctrl-C
    lobwife jobs list                                   # cron jobs: last and next runs
    lobwife jobs trigger flush-logs                     # prints the run id
    lobwife jobs logs flush-logs --follow               # live output of the current or next run
    lobwife jobs next flush-logs --count 10             # fire times in the job's zone and UTC
    lobwife health                                      # the server's health document
    lobwife broker status                               # the token broker and its registrations
    lobwife broker register T42 org/repo                # then: GH_TOKEN=$(lobwife broker token T42)
    lobwife costs record claude-sonnet-4-5 --task T42 --input 1200 --output 300
    lobwife costs summary --by day --since 7d
    lobwife audits create security "token in a log" --severity high --subject T42
    lobwife audits list --status open --min-severity high
    lobwife auth mint --state-dir DIR --role admin      # a bearer token (or --server, with an admin token)
    lobwife auth whoami                                 # who the server takes --token for

Global options (``--addr``, ``--timeout``, ``--token``, ``--token-file``, ``--json``) go before or after
the command. ``--addr`` defaults to ``$LOBWIFE_ADDR`` or 127.0.0.1:50051, ``--token``
to ``$LOBWIFE_TOKEN``. A command first waits up to ``--connect-timeout`` seconds (default 2)
for the server to answer, then gives up with a hint. Exit status: 0 on success, 1 when the
server refused or failed the call (``error: NOT_FOUND: Task T9 not found`` on stderr), 2 for
usage errors, 3 when no lobwife server answers at the address.

``--token`` (or ``$LOBWIFE_TOKEN``, which keeps it out of the process list) is sent with every
call and printed nowhere; ``--token-file`` (``$LOBWIFE_TOKEN_FILE``) reads it from a file, such as
a pod's projected service-account token. One module per command group (``serve``, ``tasks``, ``jobs``,
``broker``, ``costs``, ``audits``, ``vault``, ``auth``, ``system``), each with a
``register(commands, common)`` that adds its parser and subcommands; ``_args``, ``_output``
and ``_connect`` are what they share.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from lobwife import __version__
from lobwife.cli import audits, auth, broker, costs, jobs, serve, system, tasks, vault
from lobwife.cli._args import (
    global_options,
    non_negative_float,
    non_negative_int,
    positive_float,
    positive_int,
    status_arg,
    time_arg,
)
from lobwife.cli._connect import (
    CONNECT_TIMEOUT_S,
    EXIT_UNREACHABLE,
    Unreachable,
    server_answering,
    unreachable,
)
from lobwife.cli._connect import (
    _answers_http1 as _answers_http1,
)
from lobwife.cli._output import (
    enum_text,
    format_duration,
    format_fields,
    format_seconds,
    format_table,
    format_timestamp,
    message_to_dict,
)
from lobwife.cli.jobs import (
    FINAL_STATUSES,
    FOLLOW_IDLE_CHECK_S,
    JOB_HEADERS,
    LOGS_SCAN_MAX,
    NEXT_DEFAULT_COUNT,
    NEXT_MAX_COUNT,
    OUTPUT_TAIL_LINES,
    REASON_WIDTH,
    RUN_HEADERS,
    RUNS_DEFAULT_LIMIT,
    RUNS_PAGE_MAX,
    SCHEDULE_WIDTH,
    WATCH_RECONNECT_MAX_S,
    WATCH_RECONNECT_MIN_S,
    cmd_jobs_disable,
    cmd_jobs_enable,
    cmd_jobs_get,
    cmd_jobs_list,
    cmd_jobs_logs,
    cmd_jobs_next,
    cmd_jobs_runs,
    cmd_jobs_trigger,
    follow_run,
    format_job,
    format_local,
    format_retry,
    format_run_summary,
    job_row,
    next_count,
    next_rows,
    output_tail,
    run_row,
)
from lobwife.cli.serve import SERVER_MISSING
from lobwife.cli.tasks import (
    CLEARABLE,
    EVENT_HEADERS,
    NAME_WIDTH,
    TASK_HEADERS,
    cmd_cancel,
    cmd_create,
    cmd_events,
    cmd_get,
    cmd_list,
    cmd_log,
    cmd_register,
    cmd_update,
    cmd_watch,
    event_row,
    format_change,
    format_task,
    task_row,
)
from lobwife.client import DEFAULT_ADDR, Client, LobwifeError

__all__ = [
    "CLEARABLE",
    "CONNECT_TIMEOUT_S",
    "EVENT_HEADERS",
    "EXIT_UNREACHABLE",
    "FINAL_STATUSES",
    "FOLLOW_IDLE_CHECK_S",
    "GROUPS",
    "JOB_HEADERS",
    "LOGS_SCAN_MAX",
    "NAME_WIDTH",
    "NEXT_DEFAULT_COUNT",
    "NEXT_MAX_COUNT",
    "OUTPUT_TAIL_LINES",
    "REASON_WIDTH",
    "RUNS_DEFAULT_LIMIT",
    "RUNS_PAGE_MAX",
    "RUN_HEADERS",
    "SCHEDULE_WIDTH",
    "SERVER_MISSING",
    "TASK_HEADERS",
    "WATCH_RECONNECT_MAX_S",
    "WATCH_RECONNECT_MIN_S",
    "Unreachable",
    "build_parser",
    "cmd_cancel",
    "cmd_create",
    "cmd_events",
    "cmd_get",
    "cmd_jobs_disable",
    "cmd_jobs_enable",
    "cmd_jobs_get",
    "cmd_jobs_list",
    "cmd_jobs_logs",
    "cmd_jobs_next",
    "cmd_jobs_runs",
    "cmd_jobs_trigger",
    "cmd_list",
    "cmd_log",
    "cmd_register",
    "cmd_update",
    "cmd_watch",
    "enum_text",
    "event_row",
    "follow_run",
    "format_change",
    "format_duration",
    "format_fields",
    "format_job",
    "format_local",
    "format_retry",
    "format_run_summary",
    "format_seconds",
    "format_table",
    "format_task",
    "format_timestamp",
    "job_row",
    "main",
    "message_to_dict",
    "next_count",
    "next_rows",
    "non_negative_float",
    "non_negative_int",
    "output_tail",
    "positive_float",
    "positive_int",
    "run_row",
    "server_answering",
    "status_arg",
    "task_row",
    "time_arg",
    "unreachable",
]

#: The command groups, in the order ``lobwife --help`` lists them.
GROUPS = (serve, tasks, jobs, broker, costs, audits, vault, auth, system)


def build_parser() -> argparse.ArgumentParser:
    common = global_options()
    parser = argparse.ArgumentParser(
        prog="lobwife", description="lobwife: the fleet's control plane.", parents=[common]
    )
    parser.add_argument("--version", action="version", version=f"lobwife {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for group in GROUPS:
        group.register(commands, common)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    ns, rest = parser.parse_known_args(args)
    if ns.command == "serve":
        return serve.serve(rest)
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    addr = getattr(ns, "addr", None) or os.environ.get("LOBWIFE_ADDR") or DEFAULT_ADDR
    # None: the client reads $LOBWIFE_TOKEN (or $LOBWIFE_TOKEN_FILE) itself.
    token = getattr(ns, "token", None)
    token_file = getattr(ns, "token_file", None)
    if token is not None and token_file is not None:
        print("error: give --token or --token-file, not both", file=sys.stderr)
        return 2
    timeout = getattr(ns, "timeout", 10.0)
    connect_timeout = min(getattr(ns, "connect_timeout", CONNECT_TIMEOUT_S), timeout)
    offline = getattr(ns, "offline", None)
    if offline is not None and offline(ns):
        # A command that needs no server this time (`auth mint --state-dir`).
        return int(ns.func(ns, None))
    try:
        client = Client(addr, timeout=timeout, token=token, token_file=token_file)
    except ValueError as e:
        # A token that cannot be sent; the message names where it came from, not what it is.
        message = str(e)
        if message.startswith(("token:", "token_file:")):
            message = "--" + message.replace("token_file:", "token-file:", 1)
        print(f"error: {message}", file=sys.stderr)
        return 2
    try:
        with client, server_answering(addr, connect_timeout):
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
