"""The ``lobwife`` command: parsing, output formats, exit codes, and real runs.

Commands run in-process (``main([...])``) and as subprocesses (``python -m lobwife``)
against the in-process FakeServer of test_client, then end to end against the real
server.
"""

from __future__ import annotations

import json
import queue
import signal
import subprocess
import sys
import threading
import types
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any

import grpc
import pytest
from google.protobuf import timestamp_pb2

from lobwife import cli
from lobwife.cli import build_parser, format_change, format_table, format_task, main, message_to_dict, task_row
from lobwife.client import Client, LobwifeError, Reconnect
from lobwife.v1 import tasks_pb2
from tests.conftest import ROOT, ServerProcess, free_port, subprocess_env
from tests.e2e.test_client import FakeServer, fake_task

S = tasks_pb2.TaskStatus


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeServer]:
    srv = FakeServer()
    yield srv
    srv.stop()


@pytest.fixture
def run(fake: FakeServer, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Any:
    """Run the CLI in-process against the fake server: returns (exit code, stdout, stderr)."""
    monkeypatch.setenv("LOBWIFE_ADDR", fake.addr)
    monkeypatch.delenv("LOBWIFE_TOKEN", raising=False)

    def _run(*args: str) -> tuple[int, str, str]:
        try:
            code = main(list(args))
        except SystemExit as e:
            code = int(e.code or 0)
        out, err = capsys.readouterr()
        return code, out, err

    return _run


def cli_proc(*args: str, env: dict[str, str], timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lobwife", *args],
        env=subprocess_env(**env),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


# --- parsing ----------------------------------------------------------------------------


def test_create_arguments() -> None:
    ns = build_parser().parse_args(
        ["tasks", "create", "Fix it", "--repo", "o/a", "--repo", "o/b", "--assign", "w1", "--requires-qa",
         "--status", "active", "--estimate-minutes", "0", "--request-id", "r1", "--slug", "fix"]
    )  # fmt: skip
    assert (ns.command, ns.action, ns.name) == ("tasks", "create", "Fix it")
    assert ns.repos == ["o/a", "o/b"] and ns.assigned_to == "w1" and ns.requires_qa is True
    assert ns.status == S.TASK_STATUS_ACTIVE and ns.estimate_minutes == 0
    assert (ns.request_id, ns.slug, ns.type, ns.model) == ("r1", "fix", None, None)
    assert build_parser().parse_args(["tasks", "create", "x", "--assigned-to", "w2"]).assigned_to == "w2"
    assert build_parser().parse_args(["tasks", "create", "x"]).requires_qa is None


def test_global_options_before_or_after_the_command() -> None:
    parser = build_parser()
    ns = parser.parse_args(["--addr", "a:1", "--json", "tasks", "list"])
    assert (ns.addr, ns.json) == ("a:1", True)
    ns = parser.parse_args(["tasks", "list", "--json", "--addr", "b:2", "--timeout", "3"])
    assert (ns.addr, ns.json, ns.timeout) == ("b:2", True, 3.0)
    ns = parser.parse_args(["--addr", "a:1", "tasks", "get", "7"])
    assert ns.addr == "a:1" and not hasattr(ns, "json")  # not given: the default applies later


@pytest.mark.parametrize(
    "args",
    [
        ["tasks", "list", "--status", "actve"],
        ["tasks", "list", "--limit", "0"],
        ["tasks", "list", "--since", "yesterday-ish"],
        ["tasks", "update", "1", "--assigned-to", "w", "--clear-assigned-to"],
        ["tasks", "update", "1", "--clear", "name"],
        ["tasks", "create"],
        ["tasks", "register", "1"],
        ["tasks", "create", "x", "--estimate-minutes", "-5"],
        ["tasks", "create", "x", "--estimate-minutes", "nan"],
        ["tasks", "update", "1", "--estimate-minutes", "soon"],
        ["broker", "register", "T1"],
        ["broker", "audit", "--limit", "0"],
        ["auth", "mint", "--role", "admin"],
        ["auth", "mint", "--server", "--role", "admin", "--ttl", "0s"],
        ["--timeout", "0", "tasks", "list"],
        ["tasks"],
        ["nope"],
    ],
)
def test_usage_errors_exit_2(args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(args)
    assert info.value.code == 2
    assert "usage:" in capsys.readouterr().err


def test_status_error_names_the_choices(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["tasks", "list", "--status", "actve"])
    err = capsys.readouterr().err
    assert "argument --status: unknown task status 'actve' (one of queued, active, completed" in err


def test_update_flags() -> None:
    ns = build_parser().parse_args(
        ["tasks", "update", "T3", "--no-requires-qa", "--clear", "model", "--clear", "repos"]
    )
    assert ns.requires_qa is False and ns.clear == ["model", "repos"]
    ns = build_parser().parse_args(["tasks", "update", "T3", "--requires-qa", "--clear-assigned-to"])
    assert ns.requires_qa is True and ns.clear_assigned_to is True


def test_time_arguments() -> None:
    now = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
    assert cli.time_arg("2h", now=lambda: now) == now - timedelta(hours=2)
    assert cli.time_arg("7d", now=lambda: now) == now - timedelta(days=7)
    assert cli.time_arg("2025-01-31") == datetime(2025, 1, 31, tzinfo=UTC)
    assert cli.time_arg("2025-01-31T10:00:00+02:00") == datetime(2025, 1, 31, 8, tzinfo=UTC)
    assert cli.time_arg("2025-01-31T10:00:00Z") == datetime(2025, 1, 31, 10, tzinfo=UTC)


def test_serve_passes_every_remaining_argument(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[list[str] | None] = []

    def fake_main(argv: list[str] | None) -> int:
        seen.append(argv)
        return 3

    monkeypatch.setitem(sys.modules, "lobwife_server.app", types.SimpleNamespace(main=fake_main))
    args = ["--state-dir", "/s", "--grpc-port", "1", "--json", "--timeout", "3", "-h", "extra"]
    assert main(["serve", *args]) == 3
    assert seen == [args]
    assert main(["serve"]) == 3 and seen[-1] == []


def test_serve_without_the_server_says_how_to_install(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # None in sys.modules makes the import fail as if the module were not installed.
    monkeypatch.setitem(sys.modules, "lobwife_server.app", None)
    assert main(["serve", "--grpc-port", "1"]) == 2
    assert capsys.readouterr().err.splitlines()[0] == "the server is not installed: pip install 'lobwife[server]'"


# --- output formats ---------------------------------------------------------------------


def test_format_table_aligns_columns() -> None:
    text = format_table(["ID", "NAME", "X"], [["T1", "short", "a"], ["T100", "a longer one", ""]])
    assert text == "ID    NAME          X\nT1    short         a\nT100  a longer one\n"


def test_task_row_and_detail() -> None:
    task = fake_task(42, status=S.TASK_STATUS_ACTIVE, assigned_to="lobster-1", repos=["o/a", "o/b"], name="x" * 80)
    row = task_row(task)
    assert row[:5] == ["T42", "active", "swe", "normal", "lobster-1"]
    assert len(row[5]) == cli.NAME_WIDTH and row[5].endswith("…")
    assert row[6] == "2023-11-14T22:55:20Z"
    assert task_row(fake_task(1))[4] == "-"

    lines = format_task(task).splitlines()
    detail = {k.rstrip(): v.strip() for k, v in (line.split(":", 1) for line in lines)}
    assert detail["task_id"] == "T42" and "id" not in detail
    assert detail["status"] == "active" and detail["repos"] == "o/a, o/b"
    assert detail["model"] == "-" and detail["requires_qa"] == "no" and detail["completed_at"] == "-"
    assert detail["created_at"] == "2023-11-14T22:55:20Z"
    # Values start in one column.
    assert len({len(line) - len(line.split(":", 1)[1].lstrip()) for line in lines}) == 1


def test_json_uses_the_api_conventions() -> None:
    task = fake_task(42, status=S.TASK_STATUS_ACTIVE, repos=["o/a"])
    data = message_to_dict(task)
    assert data["id"] == 42 and data["task_id"] == "T42"  # int64 as a number
    assert data["status"] == "active"
    assert data["created_at"] == "2023-11-14T22:55:20Z"
    assert data["requires_qa"] is False and data["token_count"] == 0  # defaults present
    assert "assigned_to" not in data  # unset optional: absent
    nested = message_to_dict(tasks_pb2.UpdateTaskResponse(id=42, task_id="T42", updated=["status"], task=task))
    assert nested["id"] == 42 and nested["task"]["status"] == "active" and nested["task"]["id"] == 42
    change = tasks_pb2.WatchTasksResponse(cursor=9, event=tasks_pb2.TaskEvent(id=9, task_id=42), task=task)
    data = message_to_dict(change)
    assert (data["cursor"], data["event"]["task_id"], data["task"]["status"]) == (9, 42, "active")


def test_estimate_minutes_keeps_fractions() -> None:
    assert build_parser().parse_args(["tasks", "create", "x", "--estimate-minutes", "12.5"]).estimate_minutes == 12.5
    assert build_parser().parse_args(["tasks", "update", "1", "--estimate-minutes", "0.25"]).estimate_minutes == 0.25


def test_the_estimate_is_shown_as_the_api_shows_it() -> None:
    """Under its JSON key, estimate_minutes: the exact field, or the deprecated whole minutes from an older server."""
    task = fake_task(42, estimate_minutes_exact=12.5, estimate_minutes=12)
    data = message_to_dict(task)
    assert data["estimate_minutes"] == 12.5 and "estimate_minutes_exact" not in data
    lines = format_task(task).splitlines()
    assert [line.split(":", 1)[1].strip() for line in lines if line.startswith("estimate_minutes")] == ["12.5"]
    old = fake_task(43, estimate_minutes=30)
    assert message_to_dict(old)["estimate_minutes"] == 30
    assert ["estimate_minutes:", "30"] in [line.split() for line in format_task(old).splitlines()]
    none = fake_task(44)
    assert "estimate_minutes" not in message_to_dict(none)
    assert ["estimate_minutes:", "-"] in [line.split() for line in format_task(none).splitlines()]


def test_format_change() -> None:
    event = tasks_pb2.TaskEvent(
        id=9, task_id=42, event_type="updated", detail="status", actor="boss",
        created_at=timestamp_pb2.Timestamp(seconds=1_700_000_000),
    )  # fmt: skip
    line = format_change(tasks_pb2.WatchTasksResponse(cursor=9, event=event, task=fake_task(42, name="Fix it")))
    assert line == '2023-11-14T22:13:20Z #9 T42 updated [queued] "Fix it" by boss — status'


# --- in-process against the fake server --------------------------------------------------


def test_get_not_found_exits_1_with_the_error(run: Any) -> None:
    code, out, err = run("tasks", "get", "T9")
    assert (code, out, err) == (1, "", "error: NOT_FOUND: Task T9 not found\n")


def test_field_violations_are_listed(run: Any) -> None:
    code, _, err = run("tasks", "create", "   ")
    assert code == 1
    assert err == "error: INVALID_ARGUMENT: name: must not be blank\n  name: must not be blank\n"


def test_create_and_get_print_the_task(run: Any, fake: FakeServer) -> None:
    code, out, _ = run("tasks", "create", "New one", "--repo", "o/a", "--status", "blocked", "--actor", "me")
    assert code == 0
    assert "task_id:" in out and "New one" in out and "blocked" in out
    req, _ = fake.servicer.last("CreateTask")
    assert (req.name, list(req.repos), req.status, req.actor) == ("New one", ["o/a"], S.TASK_STATUS_BLOCKED, "me")
    assert req.request_id  # generated

    code, out, _ = run("tasks", "get", "1", "--json")
    assert code == 0 and json.loads(out)["task_id"] == "T1"


def test_list_pages_and_tables(run: Any, fake: FakeServer) -> None:
    code, out, err = run("tasks", "list", "--limit", "2", "--status", "queued", "--since", "2025-01-01")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["ID", "STATUS", "TYPE", "PRIORITY", "ASSIGNED", "NAME", "CREATED"]
    assert [line.split()[0] for line in lines[1:]] == ["T5", "T4"]
    assert err == "more: --page-token 2 (or --all)\n"
    req, _ = fake.servicer.last("ListTasks")
    assert req.status == S.TASK_STATUS_QUEUED and req.created_after.ToJsonString() == "2025-01-01T00:00:00Z"

    code, out, err = run("tasks", "list", "--limit", "2", "--page-token", "4")
    assert [line.split()[0] for line in out.splitlines()[1:]] == ["T1"] and err == ""

    code, out, _ = run("tasks", "list", "--all", "--limit", "2", "--json")
    data = json.loads(out)
    assert [t["id"] for t in data["tasks"]] == [5, 4, 3, 2, 1] and data["next_page_token"] == ""
    assert data["tasks"][0]["status"] == "queued"


def test_update_sends_the_mask(run: Any, fake: FakeServer) -> None:
    code, out, _ = run("tasks", "update", "T1", "--status", "active", "--clear-assigned-to", "--actor", "me")
    assert (code, out) == (0, "updated T1: status, assigned_to\n")
    req, _ = fake.servicer.last("UpdateTask")
    assert list(req.update_mask.paths) == ["status", "assigned_to"] and not req.HasField("assigned_to")
    assert req.actor == "me"

    run("tasks", "update", "1", "--repo", "o/a", "--repo", "o/b", "--no-requires-qa", "--clear", "model")
    req, _ = fake.servicer.last("UpdateTask")
    assert list(req.update_mask.paths) == ["repos", "requires_qa", "model"]
    assert list(req.repos) == ["o/a", "o/b"] and req.HasField("requires_qa") and not req.requires_qa

    code, _, err = run("tasks", "update", "1", "--actor", "me")
    assert code == 2 and "nothing to update" in err
    code, _, err = run("tasks", "update", "1", "--model", "x", "--clear", "model")
    assert code == 2 and "cannot both set and clear: model" in err


def test_cancel_events_log_register(run: Any, fake: FakeServer) -> None:
    assert run("tasks", "cancel", "1", "--reason", "dup") == (0, "cancelled T1\n", "")
    assert fake.servicer.last("CancelTask")[0].reason == "dup"
    code, _, err = run("tasks", "cancel", "T2")
    assert (code, err) == (1, "error: FAILED_PRECONDITION: Task T2 is already cancelled\n")

    code, out, _ = run("tasks", "events", "1", "--limit", "2")
    lines = out.splitlines()
    assert lines[0].split() == ["ID", "CREATED", "TYPE", "ACTOR", "DETAIL"]
    assert [line.split()[0] for line in lines[1:]] == ["3", "2"]
    code, out, _ = run("tasks", "events", "1", "--json")
    assert [e["id"] for e in json.loads(out)["events"]] == [3, 2, 1]

    assert run("tasks", "log", "1", "note", "--detail", "hi") == (0, "logged note on T1 (event 100)\n", "")
    assert run("tasks", "register", "1", "o/a", "o/b") == (0, "registered T1: o/a, o/b\n", "")
    req, _ = fake.servicer.last("RegisterTaskRepos")
    assert list(req.repos) == ["o/a", "o/b"]


def test_token_from_flag_or_env(run: Any, fake: FakeServer, monkeypatch: pytest.MonkeyPatch) -> None:
    run("tasks", "get", "1", "--token", "flag-token")
    assert fake.servicer.last("GetTask")[1]["authorization"] == "Bearer flag-token"
    monkeypatch.setenv("LOBWIFE_TOKEN", "env-token")
    run("tasks", "get", "1")
    assert fake.servicer.last("GetTask")[1]["authorization"] == "Bearer env-token"
    monkeypatch.delenv("LOBWIFE_TOKEN")
    run("tasks", "get", "1")
    assert "authorization" not in fake.servicer.last("GetTask")[1]


def test_watch_says_each_reconnect_and_prints_on(capsys: pytest.CaptureFixture[str]) -> None:
    """The client's watch resumes by itself; the command passes where to start and says each reconnect."""
    calls: list[dict[str, Any]] = []

    class ResumingClient:
        def watch_tasks(self, **kw: Any) -> Iterator[tasks_pb2.WatchTasksResponse]:
            calls.append(kw)
            for cursor in (6, 7):
                event = tasks_pb2.TaskEvent(id=cursor, task_id=1, event_type="updated")
                yield tasks_pb2.WatchTasksResponse(cursor=cursor, event=event, task=fake_task(1))
            gone = LobwifeError(grpc.StatusCode.UNAVAILABLE, "Socket closed")
            kw["on_reconnect"](Reconnect("watch_tasks", 1, 0.1, gone, 7))
            event = tasks_pb2.TaskEvent(id=8, task_id=1, event_type="updated")
            yield tasks_pb2.WatchTasksResponse(cursor=8, event=event, task=fake_task(1))
            raise KeyboardInterrupt

    ns = build_parser().parse_args(["tasks", "watch", "--after", "5"])
    assert cli.cmd_watch(ns, ResumingClient()) == 0  # type: ignore[arg-type]
    assert [(c["after_cursor"], c["from_now"], c["task_id"]) for c in calls] == [(5, False, None)]
    out, err = capsys.readouterr()
    assert [line.split()[1] for line in out.splitlines()] == ["#6", "#7", "#8"]
    assert err == "watch interrupted (UNAVAILABLE: Socket closed); reconnecting, resuming after cursor 7\n"


def test_watch_from_now_prints_the_position_on_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    class FromNow:
        def watch_tasks(self, **kw: Any) -> Iterator[tasks_pb2.WatchTasksResponse]:
            assert (kw["after_cursor"], kw["from_now"]) == (0, True)
            yield tasks_pb2.WatchTasksResponse(cursor=41)
            raise KeyboardInterrupt

    ns = build_parser().parse_args(["tasks", "watch", "--from-now"])
    assert cli.cmd_watch(ns, FromNow()) == 0  # type: ignore[arg-type]
    assert capsys.readouterr() == ("", "watching from now on (after cursor 41)\n")
    with pytest.raises(SystemExit):  # a usage error: "from now" and a cursor are two starts
        build_parser().parse_args(["tasks", "watch", "--from-now", "--after", "3"])


def test_watch_stops_on_other_errors(capsys: pytest.CaptureFixture[str]) -> None:
    class Denied:
        def watch_tasks(self, **kw: Any) -> Iterator[tasks_pb2.WatchTasksResponse]:
            raise LobwifeError(grpc.StatusCode.PERMISSION_DENIED, "no")
            yield  # a generator, like the real one

    ns = build_parser().parse_args(["tasks", "watch"])
    with pytest.raises(LobwifeError):
        cli.cmd_watch(ns, Denied())  # type: ignore[arg-type]


# --- as a subprocess ----------------------------------------------------------------------


def test_python_m_lobwife_against_the_fake(fake: FakeServer) -> None:
    proc = cli_proc("tasks", "get", "1", "--json", env={"LOBWIFE_ADDR": fake.addr})
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["id"] == 1
    proc = cli_proc("tasks", "get", "T9", env={"LOBWIFE_ADDR": fake.addr})
    assert (proc.returncode, proc.stderr) == (1, "error: NOT_FOUND: Task T9 not found\n")
    proc = cli_proc("tasks", "frobnicate", env={"LOBWIFE_ADDR": fake.addr})
    assert proc.returncode == 2 and "invalid choice" in proc.stderr


def test_watch_prints_lines_and_exits_0_on_ctrl_c(fake: FakeServer) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "lobwife", "tasks", "watch", "--after", "40"],
        env=subprocess_env(LOBWIFE_ADDR=fake.addr),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        lines = [proc.stdout.readline() for _ in range(3)]
        assert [line.split()[1] for line in lines] == ["#41", "#42", "#43"]
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0
    assert (out, err) == ("", "")


def test_lobwife_console_script_is_installed() -> None:
    script = Path(sys.executable).parent / "lobwife"
    if not script.exists():
        pytest.skip("console script not installed in this environment")
    proc = subprocess.run([str(script), "--version"], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0 and proc.stdout.startswith("lobwife ")


# --- end to end: the real server -----------------------------------------------------------


def test_e2e_cli_round_trip(server: ServerProcess) -> None:
    env = {"LOBWIFE_ADDR": server.grpc_addr}
    args = ["CLI task", "--repo", "o/a", "--assign", "w1", "--estimate-minutes", "12.5", "--json"]
    proc = cli_proc("tasks", "create", *args, env=env)
    assert proc.returncode == 0, proc.stderr
    created = json.loads(proc.stdout)
    assert created["task_id"] == "T1" and created["id"] == 1 and created["status"] == "queued"
    assert created["assigned_to"] == "w1" and created["repos"] == ["o/a"]
    assert created["estimate_minutes"] == 12.5 and "estimate_minutes_exact" not in created
    assert cli_proc("tasks", "update", "T1", "--estimate-minutes", "0.75", env=env).stdout == (
        "updated T1: estimate_minutes\n"
    )
    assert json.loads(cli_proc("tasks", "get", "T1", "--json", env=env).stdout)["estimate_minutes"] == 0.75

    proc = cli_proc("tasks", "update", "T1", "--status", "active", "--clear-assigned-to", env=env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("updated T1: ")
    assert set(proc.stdout.removeprefix("updated T1: ").strip().split(", ")) == {"status", "assigned_to"}
    proc = cli_proc("tasks", "get", "1", env=env)
    detail = {k.strip(): v.strip() for k, v in (line.split(":", 1) for line in proc.stdout.splitlines())}
    assert detail["status"] == "active" and detail["assigned_to"] == "-"

    proc = cli_proc("tasks", "list", env=env)
    assert proc.returncode == 0
    assert proc.stdout.splitlines()[1].split()[:3] == ["T1", "active", "swe"]

    assert cli_proc("tasks", "log", "T1", "note", "--detail", "hello", env=env).returncode == 0
    proc = cli_proc("tasks", "events", "T1", "--json", env=env)
    types_seen = [e["event_type"] for e in json.loads(proc.stdout)["events"]]
    assert types_seen[0] == "note" and types_seen[-1] == "created"

    assert cli_proc("tasks", "cancel", "T1", "--reason", "done", env=env).stdout == "cancelled T1\n"
    proc = cli_proc("tasks", "cancel", "T1", env=env)
    assert proc.returncode == 1 and proc.stderr.startswith("error: FAILED_PRECONDITION: ")

    proc = cli_proc("tasks", "get", "T9", env=env)
    assert (proc.returncode, proc.stderr) == (1, "error: NOT_FOUND: Task T9 not found\n")
    proc = cli_proc("tasks", "create", " ", env=env)
    assert proc.returncode == 1 and "\n  name: " in proc.stderr


class Lines:
    """The lines a subprocess prints, read by a thread so a test can wait with a timeout."""

    def __init__(self, stream: IO[str]) -> None:
        self._queue: queue.Queue[str] = queue.Queue()
        self._pending: list[str] = []
        threading.Thread(target=self._pump, args=(stream,), daemon=True).start()

    def _pump(self, stream: IO[str]) -> None:
        for line in stream:
            self._queue.put(line)

    def next(self, timeout: float = 10) -> str:
        return self._pending.pop() if self._pending else self._queue.get(timeout=timeout)

    def ready(self, timeout: float) -> bool:
        """Whether a line arrives within ``timeout``; it stays for :meth:`next`."""
        if not self._pending:
            try:
                self._pending.append(self._queue.get(timeout=timeout))
            except queue.Empty:
                return False
        return True


def start_watch(*args: str, env: dict[str, str]) -> tuple[subprocess.Popen[str], Lines]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "lobwife", "tasks", "watch", *args],
        env=subprocess_env(**env),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    return proc, Lines(proc.stdout)


def stop_watch(proc: subprocess.Popen[str]) -> str:
    """Ctrl-C the watch; returns its stderr."""
    try:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    return err


def test_e2e_cli_watch(server: ServerProcess) -> None:
    env = {"LOBWIFE_ADDR": server.grpc_addr}
    assert cli_proc("tasks", "create", "watch me", env=env).returncode == 0
    # By default a watch starts from the first change: T1's `created` comes first.
    proc, lines = start_watch("--json", env=env)
    change = json.loads(lines.next())
    assert (change["cursor"], change["event"]["event_type"], change["task"]["task_id"]) == (1, "created", "T1")
    assert stop_watch(proc) == ""

    # --from-now: the first line is the position alone, then only what happens after it.
    proc, lines = start_watch("--from-now", "--json", env=env)
    assert json.loads(lines.next()) == {"cursor": 1}
    assert cli_proc("tasks", "log", "T1", "tick", env=env).returncode == 0
    change = json.loads(lines.next())
    assert (change["cursor"], change["event"]["event_type"]) == (2, "tick")
    assert stop_watch(proc) == ""


def test_e2e_cli_health(server: ServerProcess) -> None:
    env = {"LOBWIFE_ADDR": server.grpc_addr}
    proc = cli_proc("health", "--json", env=env)
    assert proc.returncode == 0, proc.stderr
    health = json.loads(proc.stdout)
    assert health["status"] == "ok" and health["db"]["ok"] is True and health["version"]
    proc = cli_proc("health", env=env)
    assert proc.returncode == 0 and proc.stdout.splitlines()[0].split() == ["status:", "ok"]


def serve_proc(state_dir: Path, gport: int, hport: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "lobwife", "serve", "--state-dir", str(state_dir),
         "--grpc-port", str(gport), "--http-port", str(hport), "--grace", "2"],
        env=subprocess_env(),
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )  # fmt: skip


def stop_serve(proc: subprocess.Popen[bytes]) -> int:
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise


def test_e2e_cli_watch_survives_a_server_restart(tmp_path: Path) -> None:
    gport, hport = free_port(), free_port()
    env = {"LOBWIFE_ADDR": f"127.0.0.1:{gport}"}
    srv = serve_proc(tmp_path / "state", gport, hport)
    watch: subprocess.Popen[str] | None = None
    try:
        # A long enough --connect-timeout rides out the server's start-up.
        assert cli_proc("--connect-timeout", "15", "tasks", "create", "survivor", env=env).returncode == 0
        # Event 1 is `created`; watching after it makes what follows deterministic.
        watch, lines = start_watch("--after", "1", env=env)
        assert cli_proc("tasks", "log", "T1", "before", env=env).returncode == 0
        assert lines.next().split()[1:4] == ["#2", "T1", "before"]

        assert stop_serve(srv) == 0
        srv = serve_proc(tmp_path / "state", gport, hport)
        assert cli_proc("--connect-timeout", "15", "tasks", "log", "T1", "after", env=env).returncode == 0
        assert lines.next(timeout=15).split()[1:4] == ["#3", "T1", "after"]
        err = stop_watch(watch)
        assert "resuming after cursor 2" in err
    finally:
        if watch is not None and watch.poll() is None:
            watch.kill()
            watch.wait()
        stop_serve(srv)


def test_e2e_serve_via_the_cli(tmp_path: Path) -> None:
    """`lobwife serve` starts the real server with the flags passed through."""
    gport, hport = free_port(), free_port()
    proc = serve_proc(tmp_path / "state", gport, hport)
    try:
        with Client(f"127.0.0.1:{gport}", timeout=15) as c:
            assert c.create_task("via serve").task_id == "T1"
        assert (tmp_path / "state").is_dir()
    finally:
        code = stop_serve(proc)
    assert code == 0, proc.stderr.read() if proc.stderr else b""
