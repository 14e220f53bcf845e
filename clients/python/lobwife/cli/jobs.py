"""``lobwife jobs ...``: cron jobs: list, inspect, trigger, pause, and read or follow a run's output."""

from __future__ import annotations

import argparse
import queue
import shlex
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, tzinfo
from typing import Generic, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import grpc
from google.protobuf import timestamp_pb2

from lobwife.cli._args import Subcommands, leaf, positive_int
from lobwife.cli._output import (
    _json,
    _print_json,
    _truncate,
    enum_text,
    format_duration,
    format_seconds,
    format_table,
    format_timestamp,
    message_to_dict,
)
from lobwife.client import Client, LobwifeError
from lobwife.v1 import jobs_pb2

# Backoff of `jobs logs --follow` reconnecting after the server went away: seconds.
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


def register(commands: Subcommands, common: argparse.ArgumentParser) -> None:
    jobs = commands.add_parser("jobs", help="read, run and pause cron jobs", parents=[common])
    actions = jobs.add_subparsers(dest="action", metavar="ACTION", required=True)

    leaf(actions, common, "list", cmd_jobs_list, "list jobs with their last and next runs")

    p = leaf(actions, common, "get", cmd_jobs_get, "show one job: definition, state and the tail of its last output")
    p.add_argument("name", metavar="NAME")

    p = leaf(actions, common, "trigger", cmd_jobs_trigger, "start a run now and print its run id")
    p.add_argument("name", metavar="NAME")

    p = leaf(actions, common, "enable", cmd_jobs_enable, "resume a job's schedule (missed slots are not run)")
    p.add_argument("name", metavar="NAME")

    p = leaf(actions, common, "disable", cmd_jobs_disable, "pause a job's schedule (a run in progress goes on)")
    p.add_argument("name", metavar="NAME")

    p = leaf(actions, common, "runs", cmd_jobs_runs, "show a job's runs, newest first")
    p.add_argument("name", metavar="NAME")
    how_many = p.add_mutually_exclusive_group()
    how_many.add_argument(
        "--limit", type=positive_int, default=RUNS_DEFAULT_LIMIT, help=f"show at most N (default {RUNS_DEFAULT_LIMIT})"
    )
    how_many.add_argument("--all", action="store_true", help="show every run")

    p = leaf(actions, common, "logs", cmd_jobs_logs, "print the output of a run (default: the newest finished run)")
    p.add_argument("name", metavar="NAME")
    p.add_argument("run_id", metavar="RUN_ID", nargs="?", type=positive_int, help="default: the newest finished run")
    p.add_argument(
        "-f",
        "--follow",
        action="store_true",
        help="stream the live output of the current or next run (or of RUN_ID) until it finishes",
    )

    p = leaf(actions, common, "next", cmd_jobs_next, "show a job's next fire times, in its time zone and in UTC")
    p.add_argument("name", metavar="NAME")
    p.add_argument(
        "--count",
        type=next_count,
        default=NEXT_DEFAULT_COUNT,
        metavar="N",
        help=f"how many (default {NEXT_DEFAULT_COUNT}, at most {NEXT_MAX_COUNT})",
    )


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
        # Its own resumption, not the client's: after a break it must look the run up (it may
        # have ended meanwhile, and a run feed replays nothing), then watch again.
        watch = client.watch_runs(name=name, include_output=True, reconnect=False)
        pump: _Pump[jobs_pb2.WatchRunsResponse] = _Pump(watch)
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
