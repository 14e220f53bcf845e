"""The server as an SRE meets it: grpcurl, health probes, SIGTERM, kill -9, upgrades, start-up time."""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from lobwife.v1 import tasks_pb2, tasks_pb2_grpc
from lobwife_server.storage import migrations
from tests.conftest import ROOT, ServerProcess, start_server, subprocess_env

SERVICES = [
    "lobwife.v1.TaskService",
    "lobwife.v1.JobService",
    "lobwife.v1.BrokerService",
    "lobwife.v1.CostService",
    "lobwife.v1.AuditService",
]


def grpcurl(*args: str, timeout: float = 20) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("grpcurl") or str(Path(sys.executable).parent / "grpcurl")
    return subprocess.run([exe, *args], capture_output=True, text=True, timeout=timeout)


def test_grpcurl_lists_describes_creates_and_gets(server: ServerProcess) -> None:
    listed = grpcurl("-plaintext", server.grpc_addr, "list")
    assert listed.returncode == 0, listed.stderr
    names = listed.stdout.split()
    for svc in [*SERVICES, "grpc.health.v1.Health"]:
        assert svc in names
    for svc in SERVICES:
        desc = grpcurl("-plaintext", server.grpc_addr, "describe", svc)
        assert desc.returncode == 0 and f"service {svc.split('.')[-1]} {{" in desc.stdout, desc.stderr
    created = grpcurl(
        "-plaintext",
        "-d",
        '{"name": "from grpcurl", "actor": "sre"}',
        server.grpc_addr,
        "lobwife.v1.TaskService/CreateTask",
    )
    assert created.returncode == 0, created.stderr
    task = json.loads(created.stdout)["task"]
    assert task["task_id"] == "T1" and task["name"] == "from grpcurl"
    got = grpcurl("-plaintext", "-d", '{"task_id": "T1"}', server.grpc_addr, "lobwife.v1.TaskService/GetTask")
    assert got.returncode == 0 and json.loads(got.stdout)["task"]["name"] == "from grpcurl"
    missing = grpcurl("-plaintext", "-d", '{"task_id": "T99"}', server.grpc_addr, "lobwife.v1.TaskService/GetTask")
    assert missing.returncode != 0 and "NotFound" in missing.stderr


def test_health_serving_then_not_serving_on_sigterm_and_exit_within_grace(server: ServerProcess) -> None:
    for svc in ["", *SERVICES]:
        assert server.health(svc) == health_pb2.HealthCheckResponse.SERVING
    # grpcurl speaks the health protocol too, as a Kubernetes-style probe would.
    probe = grpcurl("-plaintext", "-d", '{"service": ""}', server.grpc_addr, "grpc.health.v1.Health/Check")
    assert probe.returncode == 0 and '"SERVING"' in probe.stdout
    # Watch health while SIGTERM arrives; the stream must see NOT_SERVING.
    seen: list[int] = []
    ch = grpc.insecure_channel(server.grpc_addr)
    stream = health_pb2_grpc.HealthStub(ch).Watch(health_pb2.HealthCheckRequest(service=""), timeout=15)

    def watch() -> None:
        try:
            for msg in stream:
                seen.append(msg.status)
        except grpc.RpcError:
            pass

    t = threading.Thread(target=watch)
    t.start()
    time.sleep(0.3)
    t0 = time.monotonic()
    rc = server.terminate(timeout=10)
    elapsed = time.monotonic() - t0
    t.join(5)
    ch.close()
    assert rc == 0
    assert elapsed < 5 + 2, "exits within its grace period (5 s in tests)"
    assert seen[0] == health_pb2.HealthCheckResponse.SERVING
    assert health_pb2.HealthCheckResponse.NOT_SERVING in seen
    assert '"stopped"' in server.log()


def test_acknowledged_creates_survive_kill_9(tmp_path: Path) -> None:
    srv = start_server(tmp_path / "state")
    acked: list[tasks_pb2.Task] = []
    lock = threading.Lock()
    stop = threading.Event()
    with grpc.insecure_channel(srv.grpc_addr) as ch:
        stub = tasks_pb2_grpc.TaskServiceStub(ch)

        def writer(n: int) -> None:
            i = 0
            while not stop.is_set() and i < 400:
                try:
                    t = stub.CreateTask(tasks_pb2.CreateTaskRequest(name=f"w{n}-{i}"), timeout=5).task
                except grpc.RpcError:
                    return
                with lock:
                    acked.append(t)
                i += 1

        with ThreadPoolExecutor(8) as pool:
            for n in range(8):
                pool.submit(writer, n)
            while len(acked) < 200:
                time.sleep(0.01)
            srv.kill9()  # mid-flight: some creates are in the queue, some committing
            stop.set()
    assert srv.proc.returncode == -9
    srv2 = start_server(tmp_path / "state")
    try:
        with grpc.insecure_channel(srv2.grpc_addr) as ch:
            stub = tasks_pb2_grpc.TaskServiceStub(ch)
            for t in acked:
                got = stub.GetTask(tasks_pb2.GetTaskRequest(task_id=t.task_id), timeout=5).task
                assert got.name == t.name
    finally:
        srv2.terminate()


def _legacy_db(path: Path) -> None:
    """A database as the old daemon left it: schema version 2, its timestamp formats, its JSON lists."""
    conn = sqlite3.connect(path)
    conn.isolation_level = None
    conn.execute(
        "CREATE TABLE schema_version (version INTEGER NOT NULL, applied_at TEXT NOT NULL DEFAULT (datetime('now')))"
    )
    migrations._v1_legacy_base(conn)
    migrations._v2_legacy_broker_columns(conn)
    conn.execute("INSERT INTO schema_version (version) VALUES (1)")
    conn.execute("INSERT INTO schema_version (version) VALUES (2)")
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(
        "INSERT INTO tasks (id, name, slug, type, status, priority, repos, estimate_minutes, requires_qa, created_at,"
        " updated_at, queued_at, assigned_at, broker_repos, broker_status, token_count, broker_registered_at,"
        " assigned_to) VALUES (7, 'old task', 'old-task', 'swe', 'active', 'high', '[\"o/r\"]', 45, 1,"
        " '2026-02-16 12:00:00', '2026-02-16 12:30:00', '2026-02-16 12:00:00', '2026-02-16T12:10:00Z',"
        " '[\"o/r\"]', 'active', 3, '2026-02-16T12:05:00.123456+00:00', 'lobster-7')"
    )
    conn.execute("INSERT INTO tasks (id, name, repos) VALUES (9, 'raw repos', 'owner/solo')")
    conn.execute(
        "INSERT INTO task_events (task_id, event_type, detail, actor, created_at) VALUES"
        " (7, 'created', 'Task created with status=queued', 'lobboss', '2026-02-16 12:00:00')"
    )
    conn.execute("INSERT INTO job_state (name, last_status, run_count) VALUES ('task-manager', 'success', 12)")
    conn.execute("INSERT INTO broker_tasks (task_id, repos) VALUES ('lobster-x', '[\"o/x\"]')")
    conn.execute("INSERT INTO token_audit (task_id, repos, action) VALUES ('T7', '[\"o/r\"]', 'token_issued')")
    conn.close()


def test_upgrades_legacy_database_and_json_losing_nothing(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    _legacy_db(state / "lobmob.db")
    original = (state / "lobmob.db").read_bytes()
    (state / "token-audit.json").write_text(
        json.dumps([{"task_id": "T1", "repos": ["a/b"], "action": "token_issued", "timestamp": "2026-01-01T00:00:00Z"}])
    )
    (state / "jobs.json").write_text("{not json")  # unreadable: kept in place, logged, not fatal
    srv = start_server(state)
    try:
        with grpc.insecure_channel(srv.grpc_addr) as ch:
            stub = tasks_pb2_grpc.TaskServiceStub(ch)
            t = stub.GetTask(tasks_pb2.GetTaskRequest(task_id="T7"), timeout=5).task
            assert (t.name, t.slug, t.priority, t.estimate_minutes, t.requires_qa) == (
                "old task",
                "old-task",
                "high",
                45,
                True,
            )
            assert t.status == tasks_pb2.TASK_STATUS_ACTIVE and t.assigned_to == "lobster-7"
            assert t.created_at.ToJsonString() == "2026-02-16T12:00:00Z"
            assert t.assigned_at.ToJsonString() == "2026-02-16T12:10:00Z"
            assert t.broker_registered_at.ToJsonString() == "2026-02-16T12:05:00.123456Z"
            assert list(t.repos) == ["o/r"] and list(t.broker_repos) == ["o/r"] and t.token_count == 3
            solo = stub.GetTask(tasks_pb2.GetTaskRequest(task_id="9"), timeout=5).task
            assert list(solo.repos) == ["owner/solo"]
            ev = stub.ListTaskEvents(tasks_pb2.ListTaskEventsRequest(task_id="7"), timeout=5).events
            assert [(e.event_type, e.actor, e.created_at.ToJsonString()) for e in ev] == [
                ("created", "lobboss", "2026-02-16T12:00:00Z")
            ]
            # Ids continue after the old ones; never reused.
            new = stub.CreateTask(tasks_pb2.CreateTaskRequest(name="new"), timeout=5).task
            assert new.id == 10
    finally:
        assert srv.terminate() == 0
    assert (state / "lobmob.db").read_bytes() == original, "the old database is left untouched"
    assert (state / "token-audit.json.migrated").exists() and (state / "jobs.json").exists()
    conn = sqlite3.connect(state / "lobwife.db")
    assert conn.execute("SELECT MAX(version) FROM schema_version").fetchone()[0] == migrations.LATEST
    assert conn.execute("SELECT run_count FROM job_state WHERE name='task-manager'").fetchone()[0] == 12
    assert conn.execute("SELECT repos FROM broker_tasks WHERE task_id='lobster-x'").fetchone()[0] == '["o/x"]'
    assert conn.execute("SELECT COUNT(*) FROM token_audit").fetchone()[0] == 2
    conn.close()
    assert "could not import" in srv.log() and "jobs.json" in srv.log()


def test_refuses_a_database_newer_than_itself(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    conn = sqlite3.connect(state / "lobwife.db")
    conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL, applied_at TEXT)")
    conn.execute("INSERT INTO schema_version VALUES (999, 'x')")
    conn.commit()
    conn.close()
    srv = start_server(state, wait=False)
    assert srv.proc.wait(timeout=20) == 1
    assert "newer than this lobwife supports" in srv.log()


def test_bad_configuration_is_a_clear_usage_error(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "lobwife_server", "--state-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=20,
        cwd=ROOT,
        env=subprocess_env(LOBWIFE_GRPC_PORT="not-a-port"),
    )
    assert out.returncode == 2 and "LOBWIFE_GRPC_PORT" in out.stderr


def test_starts_serving_quickly_on_100k_tasks(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    conn = sqlite3.connect(state / "lobwife.db", isolation_level=None)
    migrations.migrate(conn)
    now = 1_700_000_000_000_000
    conn.execute("BEGIN")
    conn.executemany(
        "INSERT INTO tasks (name, type, status, priority, created_at, updated_at, queued_at) VALUES"
        " (?, 'swe', 'queued', 'normal', ?, ?, ?)",
        ((f"task {i}", now + i, now + i, now + i) for i in range(100_000)),
    )
    conn.executemany(
        "INSERT INTO task_events (task_id, event_type, created_at) VALUES (?, 'created', ?)",
        ((i + 1, now + i) for i in range(100_000)),
    )
    conn.execute("COMMIT")
    conn.close()
    srv = start_server(state)
    try:
        assert srv.ready_seconds < 2.0, f"SERVING after {srv.ready_seconds:.2f}s"
        with grpc.insecure_channel(srv.grpc_addr) as ch:
            stub = tasks_pb2_grpc.TaskServiceStub(ch)
            assert stub.GetTask(tasks_pb2.GetTaskRequest(task_id="T100000"), timeout=5).task.name == "task 99999"
    finally:
        srv.terminate()


@pytest.mark.parametrize("sig", ["SIGINT"])
def test_sigint_also_stops_cleanly(server: ServerProcess, sig: str) -> None:
    import signal

    server.proc.send_signal(getattr(signal, sig))
    assert server.proc.wait(timeout=10) == 0


def test_not_serving_until_start_up_is_done(tmp_path: Path) -> None:
    """Probes must not see SERVING while start-up is still resolving runs a crashed server left."""
    state = tmp_path / "state"
    jobs = tmp_path / "jobs.toml"
    # An orphan that ignores SIGTERM: recovery waits the kill grace (5 s) before SIGKILL.
    mark = tmp_path / "ran"
    command = f"trap '' TERM; touch {mark}; sleep 60"
    jobs.write_text(f'[jobs.stubborn]\ncommand = ["sh", "-c", "{command}"]\nevery = "1h"\n')
    srv = start_server(state, "--jobs", str(jobs))
    with grpc.insecure_channel(srv.grpc_addr) as ch:
        from lobwife.v1 import jobs_pb2, jobs_pb2_grpc

        jobs_pb2_grpc.JobServiceStub(ch).TriggerJob(jobs_pb2.TriggerJobRequest(name="stubborn"), timeout=5)
    db = state / "lobwife.db"

    def running() -> bool:
        conn = sqlite3.connect(db)
        try:
            return (
                conn.execute("SELECT 1 FROM job_runs WHERE status = 'running' AND pgid IS NOT NULL").fetchone()
                is not None
            )
        finally:
            conn.close()

    deadline = time.monotonic() + 10
    # Recorded running, and past the runner's gate (killed before it opens, the command never runs).
    while not (running() and mark.exists()) and time.monotonic() < deadline:
        time.sleep(0.05)
    srv.kill9()
    srv2 = start_server(state, "--jobs", str(jobs), wait=False)
    seen: list[int] = []
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and srv2.proc.poll() is None:
            try:
                status = srv2.health(timeout=0.5)
            except grpc.RpcError:
                time.sleep(0.02)
                continue
            seen.append(status)
            if status == health_pb2.HealthCheckResponse.SERVING:
                break
            time.sleep(0.1)
        assert seen and seen[-1] == health_pb2.HealthCheckResponse.SERVING
        assert seen[0] == health_pb2.HealthCheckResponse.NOT_SERVING, "port open while recovery runs: NOT_SERVING"
        assert all(s == health_pb2.HealthCheckResponse.NOT_SERVING for s in seen[:-1])
        conn = sqlite3.connect(db)
        assert conn.execute("SELECT status FROM job_runs").fetchone()[0] == "abandoned"
        conn.close()
    finally:
        srv2.terminate()
