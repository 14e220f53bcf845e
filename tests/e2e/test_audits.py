"""AuditService on the real server: findings counted by fingerprint, reopened when seen again after a
resolution, updated and resolved with an event per change; over gRPC and over real curl (the audit
jobs' bash), with bad input refused by field and nothing stored lost."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from google.protobuf import field_mask_pb2, timestamp_pb2

from lobwife.client import AsyncClient, Client, LobwifeError
from lobwife.v1 import audits_pb2, audits_pb2_grpc, tasks_pb2, tasks_pb2_grpc
from tests.conftest import ROOT, ServerProcess, start_server, subprocess_env
from tests.http_util import curl

A = audits_pb2


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = start_server(tmp_path_factory.mktemp("audits") / "state")
    try:
        with grpc.insecure_channel(server.grpc_addr) as ch:
            tasks_pb2_grpc.TaskServiceStub(ch).CreateTask(tasks_pb2.CreateTaskRequest(name="audited"), timeout=10)
        yield server
    finally:
        server.terminate()


@pytest.fixture
def stub(srv: ServerProcess) -> Iterator[audits_pb2_grpc.AuditServiceStub]:
    with grpc.insecure_channel(srv.grpc_addr) as ch:
        yield audits_pb2_grpc.AuditServiceStub(ch)


def _err(call: object) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call()  # type: ignore[operator]
    return info.value


def test_a_finding_reported_again_is_counted_then_reopened_after_its_resolution(
    stub: audits_pb2_grpc.AuditServiceStub,
) -> None:
    finding = A.Finding(category="security", title="token in log", subject="T1", source="audit-logs", detail="line 3")
    first = stub.CreateFinding(A.CreateFindingRequest(finding=finding), timeout=10)
    f = first.finding
    assert first.created and not first.reopened
    assert (f.status, f.severity, f.count, f.task_id, f.subject) == (
        A.FINDING_STATUS_OPEN,
        A.SEVERITY_MEDIUM,
        1,
        1,
        "T1",
    )
    assert f.fingerprint and f.created_at == f.last_seen_at
    # The same report while open: counted on the same row, not stored twice.
    again = stub.CreateFinding(A.CreateFindingRequest(finding=finding), timeout=10)
    assert (again.created, again.finding.id, again.finding.count) == (False, f.id, 2)
    assert again.finding.last_seen_at.ToMicroseconds() >= f.last_seen_at.ToMicroseconds()
    listed = stub.ListFindings(A.ListFindingsRequest(category="security"), timeout=10).findings
    assert [x.id for x in listed] == [f.id]
    # Resolved, then seen again: reopened, with an event that says what the resolution was.
    done = stub.ResolveFinding(A.ResolveFindingRequest(id=f.id, resolution="scrubbed", actor="ops"), timeout=10)
    assert (done.finding.status, done.finding.resolution, done.finding.resolved_by) == (
        A.FINDING_STATUS_RESOLVED,
        "scrubbed",
        "ops",
    )
    assert done.finding.HasField("resolved_at")
    back = stub.CreateFinding(A.CreateFindingRequest(finding=finding), timeout=10)
    assert (back.created, back.reopened, back.finding.status, back.finding.count) == (
        False,
        True,
        A.FINDING_STATUS_OPEN,
        3,
    )
    assert back.finding.resolution == "" and not back.finding.HasField("resolved_at")
    events = stub.GetFinding(A.GetFindingRequest(id=f.id), timeout=10).events
    assert [e.kind for e in events] == ["created", "resolved", "reopened"]
    assert events[1].actor == "ops" and "scrubbed" in events[2].detail
    # Won't fix stays won't fix when reported again (only ResolveFinding with `open` reopens it).
    stub.ResolveFinding(A.ResolveFindingRequest(id=f.id, status=A.FINDING_STATUS_WONT_FIX), timeout=10)
    kept = stub.CreateFinding(A.CreateFindingRequest(finding=finding), timeout=10)
    assert (kept.reopened, kept.finding.status, kept.finding.count) == (False, A.FINDING_STATUS_WONT_FIX, 4)
    reopened = stub.ResolveFinding(A.ResolveFindingRequest(id=f.id, status=A.FINDING_STATUS_OPEN), timeout=10)
    assert reopened.finding.status == A.FINDING_STATUS_OPEN
    kinds = [e.kind for e in stub.GetFinding(A.GetFindingRequest(id=f.id), timeout=10).events]
    assert kinds == ["created", "resolved", "reopened", "wont_fix", "reopened"]


def test_update_by_mask_logs_what_changed_and_a_no_op_writes_nothing(stub: audits_pb2_grpc.AuditServiceStub) -> None:
    f = stub.CreateFinding(
        A.CreateFindingRequest(finding=A.Finding(category="pr-review", title="no tests", subject="org/app")),
        timeout=10,
    ).finding
    change = A.Finding(id=f.id, severity=A.SEVERITY_HIGH, title="ignored: not in the mask")
    mask = field_mask_pb2.FieldMask(paths=["severity"])
    up = stub.UpdateFinding(A.UpdateFindingRequest(finding=change, update_mask=mask), timeout=10).finding
    assert (up.severity, up.title) == (A.SEVERITY_HIGH, "no tests")
    assert up.updated_at.ToMicroseconds() > f.updated_at.ToMicroseconds()
    same = stub.UpdateFinding(A.UpdateFindingRequest(finding=change, update_mask=mask), timeout=10).finding
    assert same.updated_at == up.updated_at
    events = stub.GetFinding(A.GetFindingRequest(id=f.id), timeout=10).events
    assert [e.kind for e in events] == ["created", "updated"] and events[1].detail == "severity: medium -> high"
    e = _err(
        lambda: stub.UpdateFinding(
            A.UpdateFindingRequest(finding=change, update_mask=field_mask_pb2.FieldMask(paths=["status"])), timeout=10
        )
    )
    assert e.code() == grpc.StatusCode.INVALID_ARGUMENT and "status is output only" in (e.details() or "")
    e = _err(
        lambda: stub.UpdateFinding(
            A.UpdateFindingRequest(
                finding=A.Finding(id=99999, title="x"), update_mask=field_mask_pb2.FieldMask(paths=["title"])
            ),
            timeout=10,
        )
    )
    assert e.code() == grpc.StatusCode.NOT_FOUND


def test_request_id_makes_a_report_idempotent(stub: audits_pb2_grpc.AuditServiceStub) -> None:
    finding = A.Finding(category="cost", title="over budget", subject="job:nightly")
    first = stub.CreateFinding(A.CreateFindingRequest(finding=finding, request_id="r-1"), timeout=10)
    retry = stub.CreateFinding(A.CreateFindingRequest(finding=finding, request_id="r-1"), timeout=10)
    assert (retry.finding.id, retry.finding.count, retry.created) == (first.finding.id, 1, True)
    other = A.Finding(category="cost", title="something else")
    e = _err(lambda: stub.CreateFinding(A.CreateFindingRequest(finding=other, request_id="r-1"), timeout=10))
    assert e.code() == grpc.StatusCode.ALREADY_EXISTS and "request_id" in (e.details() or "")


def test_list_filters_and_pages(stub: audits_pb2_grpc.AuditServiceStub) -> None:
    ids = []
    for i, sev in enumerate([A.SEVERITY_INFO, A.SEVERITY_LOW, A.SEVERITY_CRITICAL, A.SEVERITY_CRITICAL]):
        finding = A.Finding(category="paging", title=f"p{i}", severity=sev, subject=f"repo/{i % 2}")
        ids.append(stub.CreateFinding(A.CreateFindingRequest(finding=finding), timeout=10).finding.id)
    severe = stub.ListFindings(A.ListFindingsRequest(category="paging", min_severity=A.SEVERITY_HIGH), timeout=10)
    assert [f.id for f in severe.findings] == [ids[3], ids[2]]
    by_subject = stub.ListFindings(A.ListFindingsRequest(category="paging", subject="repo/1"), timeout=10)
    assert [f.id for f in by_subject.findings] == [ids[3], ids[1]]
    page = stub.ListFindings(A.ListFindingsRequest(category="paging", page_size=3), timeout=10)
    assert [f.id for f in page.findings] == ids[:0:-1] and page.next_page_token
    rest = stub.ListFindings(
        A.ListFindingsRequest(category="paging", page_size=3, page_token=page.next_page_token), timeout=10
    )
    assert [f.id for f in rest.findings] == [ids[0]] and not rest.next_page_token
    e = _err(
        lambda: stub.ListFindings(A.ListFindingsRequest(category="other", page_token=page.next_page_token), timeout=10)
    )
    assert e.code() == grpc.StatusCode.INVALID_ARGUMENT  # a token is bound to its filters
    later = timestamp_pb2.Timestamp()
    later.GetCurrentTime()
    later.seconds += 3600
    assert not stub.ListFindings(A.ListFindingsRequest(category="paging", since=later), timeout=10).findings
    task = stub.ListFindings(A.ListFindingsRequest(task_id="T1"), timeout=10).findings
    assert task and all(f.task_id == 1 for f in task)


def test_bad_input_is_refused_naming_the_field_and_nothing_is_lost(
    srv: ServerProcess, stub: audits_pb2_grpc.AuditServiceStub
) -> None:
    before = stub.ListFindings(A.ListFindingsRequest(page_size=500), timeout=10).findings
    cases: list[tuple[A.Finding, str]] = [
        (A.Finding(title="no category"), "finding.category"),
        (A.Finding(category="x"), "finding.title"),
        (A.Finding(category="x", title="t", severity=42), "finding.severity"),  # type: ignore[arg-type]
        (A.Finding(category="x", title="t", subject="T99999"), "finding.subject"),
        (A.Finding(category="x", title="a\x00b"), "finding.title"),
        (A.Finding(category="x", title="t", detail="d" * (64 * 1024 + 1)), "finding.detail"),
    ]
    for finding, field in cases:
        e = _err(lambda f=finding: stub.CreateFinding(A.CreateFindingRequest(finding=f), timeout=10))
        assert e.code() == grpc.StatusCode.INVALID_ARGUMENT and (e.details() or "").startswith(field), (field, e)
    e = _err(lambda: stub.ResolveFinding(A.ResolveFindingRequest(id=999999), timeout=10))
    assert e.code() == grpc.StatusCode.NOT_FOUND and "Finding 999999 not found" in (e.details() or "")
    e = _err(lambda: stub.ListFindings(A.ListFindingsRequest(status=7), timeout=10))  # type: ignore[arg-type]
    assert e.code() == grpc.StatusCode.INVALID_ARGUMENT and (e.details() or "").startswith("status")
    # Over HTTP: a 10 MB detail is refused before it is read whole; a broken body is a 400.
    big = curl("POST", srv.http_url + "/api/audits", {"category": "x", "title": "t", "detail": "d" * 10_000_000})
    assert big.status in (400, 413), big.status
    assert curl("POST", srv.http_url + "/api/audits", b"{not json").status == 400
    after = stub.ListFindings(A.ListFindingsRequest(page_size=500), timeout=10).findings
    assert [f.id for f in after] == [f.id for f in before]


def test_the_bash_routes_with_curl(srv: ServerProcess) -> None:
    u = srv.http_url
    made = curl("POST", u + "/api/audits", {"category": "lint", "title": "unused import", "severity": "low"})
    assert made.status == 201, made.body
    body = made.json
    assert (body["category"], body["severity"], body["status"], body["count"]) == ("lint", "low", "open", 1)
    again = curl("POST", u + "/api/v1/findings", {"category": "lint", "title": "unused import", "severity": "low"})
    assert again.status == 200 and again.json["id"] == body["id"] and again.json["count"] == 2
    listed = curl("GET", u + "/api/audits?category=lint&status=open")
    assert listed.status == 200 and [f["id"] for f in listed.json["findings"]] == [body["id"]]
    got = curl("GET", f"{u}/api/v1/findings/{body['id']}")
    assert got.status == 200 and got.json["finding"]["title"] == "unused import"
    assert [e["kind"] for e in got.json["events"]] == ["created"]
    patched = curl("PATCH", f"{u}/api/v1/findings/{body['id']}", {"severity": "high", "actor": "ops"})
    assert patched.status == 200 and patched.json["severity"] == "high"
    resolved = curl("POST", f"{u}/api/v1/findings/{body['id']}:resolve", {"resolution": "removed", "note": "PR #3"})
    assert resolved.status == 200 and (resolved.json["status"], resolved.json["note"]) == ("resolved", "PR #3")
    bad = curl("POST", u + "/api/audits", {"category": "lint", "title": "t", "severity": "catastrophic"})
    assert bad.status == 400 and "severity" in bad.body.decode()
    assert curl("GET", u + "/api/v1/findings/424242").status == 404


def test_an_acknowledged_finding_survives_kill_9(tmp_path: Path) -> None:
    server = start_server(tmp_path / "state")
    try:
        with grpc.insecure_channel(server.grpc_addr) as ch:
            stub = audits_pb2_grpc.AuditServiceStub(ch)
            made = stub.CreateFinding(A.CreateFindingRequest(finding=A.Finding(category="k", title="kept")), timeout=10)
            stub.ResolveFinding(A.ResolveFindingRequest(id=made.finding.id, resolution="done"), timeout=10)
        os.kill(server.proc.pid, signal.SIGKILL)
        server.proc.wait(timeout=10)
    finally:
        server.terminate()
    server = start_server(tmp_path / "state")
    try:
        with grpc.insecure_channel(server.grpc_addr) as ch:
            stub = audits_pb2_grpc.AuditServiceStub(ch)
            got = stub.GetFinding(A.GetFindingRequest(id=made.finding.id), timeout=10)
            assert (got.finding.status, got.finding.resolution) == (A.FINDING_STATUS_RESOLVED, "done")
            assert [e.kind for e in got.events] == ["created", "resolved"]
    finally:
        server.terminate()


def test_the_typed_clients(srv: ServerProcess) -> None:
    with Client(srv.grpc_addr) as lw:
        made = lw.create_finding("deps", "old openssl", severity="high", subject="org/app", source="audit-deps")
        assert made.created and made.finding.severity == A.SEVERITY_HIGH
        f = lw.update_finding(made.finding.id, severity="critical", detail="CVE-2026-1")
        assert (f.severity, f.detail) == (A.SEVERITY_CRITICAL, "CVE-2026-1")
        assert [x.id for x in lw.iter_findings(category="deps", page_size=1)] == [f.id]
        done = lw.resolve_finding(f.id, resolution="bumped", status="wont_fix")
        assert done.status == A.FINDING_STATUS_WONT_FIX
        assert [e.kind for e in lw.get_finding(f.id).events] == ["created", "updated", "wont_fix"]
        with pytest.raises(ValueError, match="severity"):
            lw.create_finding("deps", "x", severity="apocalyptic")
        with pytest.raises(TypeError, match="unknown field"):
            lw.update_finding(f.id, status="open")
        with pytest.raises(LobwifeError) as info:
            lw.get_finding(987654)
        assert info.value.code == grpc.StatusCode.NOT_FOUND

    async def run() -> list[int]:
        async with AsyncClient(srv.grpc_addr) as alw:
            await alw.create_finding("deps", "async one")
            return [x.id async for x in alw.iter_findings(category="deps")]

    assert len(asyncio.run(run())) == 2


def _cli(srv: ServerProcess, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lobwife", *args],
        env=subprocess_env(LOBWIFE_ADDR=srv.grpc_addr, LOBWIFE_TOKEN=""),
        cwd=ROOT,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_the_cli(srv: ServerProcess) -> None:
    made = _cli(
        srv, "audits", "create", "cli", "a finding", "--severity", "low", "--detail", "-", stdin="from\nstdin\n"
    )
    assert made.returncode == 0, made.stderr
    number = int(made.stdout.split()[-1])
    again = _cli(
        srv, "audits", "create", "cli", "a finding", "--severity", "low", "--detail", "-", stdin="from\nstdin\n"
    )
    assert again.stdout == f"counted: finding {number}, seen 2 times\n", again.stderr
    listed = _cli(srv, "audits", "list", "--category", "cli")
    assert listed.returncode == 0 and listed.stdout.splitlines()[1].split()[:6] == [
        str(number),
        "low",
        "open",
        "cli",
        "-",
        "2",
    ]
    data = json.loads(_cli(srv, "audits", "get", str(number), "--json").stdout)
    assert data["finding"]["detail"] == "from\nstdin" and [e["kind"] for e in data["events"]] == ["created"]
    resolved = _cli(srv, "audits", "resolve", str(number), "fixed it", "--note", "see PR")
    assert resolved.stdout == f"finding {number}: resolved\n", resolved.stderr
    shown = _cli(srv, "audits", "get", str(number)).stdout
    assert "resolution:" in shown and "fixed it" in shown and "resolved" in shown
    reopened = _cli(srv, "audits", "resolve", str(number), "--reopen")
    assert reopened.stdout == f"finding {number}: open\n"
    bad = _cli(srv, "audits", "create", "cli", "x\x07y")
    assert bad.returncode == 1 and bad.stderr.startswith("error: INVALID_ARGUMENT: finding.title"), bad.stderr
    missing = _cli(srv, "audits", "get", "777777")
    assert missing.returncode == 1 and "NOT_FOUND" in missing.stderr
