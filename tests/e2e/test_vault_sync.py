"""The vault sync wired into the real server: VAULT_PATH turns it on, the built-in job is listed, the
first cycle writes every task and pushes to a bare remote, a finished task is synced soon after
(debounced) and moves folder, TriggerSync and GetSyncStatus answer, a person's edit pushed meanwhile
survives, and a path that is not a git clone stops the start saying why. A full rebuild asked over
HTTP and gRPC restores the keys a person broke; a refused push shows in the status; the cost and
audit pages follow RecordCost, CreateFinding and ResolveFinding, and an unchanged cycle commits nothing. An
old fleet's T<n>.md is kept, counted in no cycle, and never taken over by the server's own T<n>."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import ROOT, start_server, subprocess_env
from tests.git_util import git, isolate_git_config, seeded_bare
from tests.http_util import curl


def wait_for(what: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if what():
            return
        time.sleep(0.2)
    raise AssertionError(f"not within {timeout}s")


def on_remote(remote: Path, rel: str) -> str | None:
    out = subprocess.run(["git", "show", f"main:{rel}"], cwd=remote, capture_output=True, text=True, check=False)
    return out.stdout if out.returncode == 0 else None


@pytest.fixture
def repos(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path, Path]:
    isolate_git_config(tmp_path, monkeypatch)
    remote = tmp_path / "remote.git"
    seeded_bare(tmp_path, remote)
    vault, person = tmp_path / "vault", tmp_path / "person"
    git(tmp_path, "clone", "-q", str(remote), str(vault))
    git(tmp_path, "clone", "-q", str(remote), str(person))
    return remote, vault, person


def test_the_server_keeps_the_vault(tmp_path: Path, repos: tuple[Path, Path, Path]) -> None:
    remote, vault, person = repos
    state = tmp_path / "state"
    srv = start_server(state, env={"VAULT_PATH": str(vault), "VAULT_SYNC_INTERVAL": "3600"})
    try:
        u = srv.http_url
        assert curl("POST", u + "/api/v1/tasks", {"name": "Fix login", "type": "swe"}).status == 201
        job = curl("GET", u + "/api/jobs/lobwife-vault-sync")
        assert job.status == 200 and job.json["enabled"] is True
        status = curl("GET", u + "/api/v1/sync").json
        assert status["enabled"] is True
        assert curl("POST", u + "/api/v1/sync/trigger").json == {"status": "sync requested"}
        wait_for(lambda: on_remote(remote, "010-tasks/active/T1.md") is not None)
        wait_for(lambda: curl("GET", u + "/api/v1/sync").json.get("last_sync") is not None)
        # A person adds a key and a note to T1 and pushes; then the task completes.
        git(person, "pull", "-q", "--rebase", "origin", "main")
        page = person / "010-tasks" / "active" / "T1.md"
        text = page.read_text()
        page.write_text(text.replace("---\n", "---\nreviewer: alice\n", 1) + "\nNotes from the review.\n")
        git(person, "commit", "-q", "-am", "review notes")
        git(person, "push", "-q", "origin", "HEAD:main")
        done = curl("PATCH", u + "/api/v1/tasks/T1", {"status": "completed"})
        assert done.status == 200, done.body
        # Soon after (debounced), not at the hourly interval: moved, the person's edit kept.
        wait_for(lambda: on_remote(remote, "010-tasks/completed/T1.md") is not None)
        moved = on_remote(remote, "010-tasks/completed/T1.md") or ""
        assert "reviewer: alice" in moved and "Notes from the review." in moved
        assert "status: completed" in moved
        assert on_remote(remote, "010-tasks/active/T1.md") is None
        assert on_remote(remote, "010-tasks/_overview.md") is not None
        authors = git(remote, "log", "--format=%an", "main")
        assert "lobwife" in authors.split()
    finally:
        assert srv.terminate() == 0
    # The CLI: a sync now, waited for; the cursor is durable, so a restart with no change writes nothing.
    before = git(remote, "rev-list", "--count", "main")
    srv = start_server(state, env={"VAULT_PATH": str(vault), "VAULT_SYNC_INTERVAL": "3600"})
    try:
        synced = subprocess.run(
            [sys.executable, "-m", "lobwife", "vault", "sync", "--wait", "30"],
            env=subprocess_env(LOBWIFE_ADDR=srv.grpc_addr, LOBWIFE_TOKEN=""),
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert synced.returncode == 0 and synced.stdout.startswith("synced at "), synced.stderr
        assert git(remote, "rev-list", "--count", "main") == before
        shown = subprocess.run(
            [sys.executable, "-m", "lobwife", "vault", "status", "--json"],
            env=subprocess_env(LOBWIFE_ADDR=srv.grpc_addr, LOBWIFE_TOKEN=""),
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert shown.returncode == 0 and '"enabled": true' in shown.stdout
    finally:
        srv.terminate()


def test_without_a_vault_sync_is_off_and_a_bad_path_stops_the_start(tmp_path: Path) -> None:
    srv = start_server(tmp_path / "state")
    try:
        status = curl("GET", srv.http_url + "/api/v1/sync").json
        # The legacy three keys come first, as the old daemon answered.
        assert list(status)[:3] == ["enabled", "last_sync", "running"]
        assert (status["enabled"], status["last_sync"], status["running"]) == (False, None, False)
        assert curl("POST", srv.http_url + "/api/v1/sync/trigger").status == 503
    finally:
        srv.terminate()
    not_git = tmp_path / "plain"
    not_git.mkdir()
    done = subprocess.run(
        [sys.executable, "-m", "lobwife_server", "--state-dir", str(tmp_path / "s2"), "--vault", str(not_git),
         "--grpc-port", "0", "--http-port", "0"],
        env=subprocess_env(),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )  # fmt: skip
    assert done.returncode == 1 and "git" in done.stderr and str(not_git) in done.stderr, done.stderr


def sync_status(u: str) -> dict[str, Any]:
    reply = curl("GET", u + "/api/v1/sync")
    assert reply.status == 200, reply.body
    out: dict[str, Any] = reply.json
    return out


def after_next_cycle(u: str, before: object, timeout: float = 30.0) -> dict[str, Any]:
    """The sync status once a cycle that ended after ``before`` (a ``last_attempt``) is done."""
    seen: dict[str, Any] = {}

    def ended() -> bool:
        seen.update(sync_status(u))
        return seen.get("last_attempt") not in (None, before) and seen.get("running") is False

    wait_for(ended, timeout)
    return seen


def frontmatter_of(text: str) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(text.split("---\n", 2)[1])
    return data


def test_a_full_rebuild_over_http_and_grpc_restores_what_a_person_broke(
    tmp_path: Path, repos: tuple[Path, Path, Path]
) -> None:
    remote, vault, person = repos
    srv = start_server(tmp_path / "state", env={"VAULT_PATH": str(vault), "VAULT_SYNC_INTERVAL": "3600"})
    rel = "010-tasks/active/T1.md"

    def break_t1() -> None:
        git(person, "pull", "-q", "--rebase", "origin", "main")
        page = person / rel
        text = page.read_text().replace("status: queued", "status: nonsense").replace("name: Fix login", "name: x")
        page.write_text(text.replace("---\n", "---\nreviewer: alice\n", 1))
        git(person, "commit", "-q", "-am", "a person breaks the owned keys")
        git(person, "push", "-q", "origin", "HEAD:main")

    try:
        u = srv.http_url
        assert curl("POST", u + "/api/v1/tasks", {"name": "Fix login", "type": "swe"}).status == 201
        # The legacy call, no body at all, still works.
        assert curl("POST", u + "/api/v1/sync/trigger").json == {"status": "sync requested"}
        wait_for(lambda: on_remote(remote, rel) is not None)
        first = after_next_cycle(u, None)
        break_t1()
        # An ordinary cycle leaves T1 alone: the task did not change.
        assert curl("POST", u + "/api/v1/sync/trigger", {}).json == {"status": "sync requested"}
        plain = after_next_cycle(u, first["last_attempt"])
        assert plain["last_full"] is False and "status: nonsense" in (on_remote(remote, rel) or "")
        bad = curl("POST", u + "/api/v1/sync/trigger", {"full": "yes"})
        assert bad.status == 400 and "full" in bad.body.decode(), bad.body
        # Over HTTP.
        assert curl("POST", u + "/api/v1/sync/trigger", {"full": True}).json == {"status": "full sync requested"}
        full = after_next_cycle(u, plain["last_attempt"])
        assert full["last_full"] is True and full["full_pending"] is False and full["last_error"] == ""
        assert full["last_pushed"] is True and full["last_written"] >= 1 and full["last_commit"]
        fixed = frontmatter_of(on_remote(remote, rel) or "")
        assert (fixed["status"], fixed["name"], fixed["reviewer"]) == ("queued", "Fix login", "alice")

        # Over gRPC: the CLI asks for a full rebuild and waits for it.
        break_t1()
        done = subprocess.run(
            [sys.executable, "-m", "lobwife", "vault", "sync", "--full", "--wait", "30"],
            env=subprocess_env(LOBWIFE_ADDR=srv.grpc_addr, LOBWIFE_TOKEN=""),
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith("synced at ") and ", a full rebuild: " in done.stdout, done.stdout
        again = frontmatter_of(on_remote(remote, rel) or "")
        assert (again["status"], again["name"], again["reviewer"]) == ("queued", "Fix login", "alice")
    finally:
        assert srv.terminate() == 0


def test_a_refused_push_shows_in_the_status(tmp_path: Path, repos: tuple[Path, Path, Path]) -> None:
    remote, vault, _ = repos
    hook = remote / "hooks" / "pre-receive"
    hook.write_text("#!/bin/sh\necho 'pushes are closed today' >&2\nexit 1\n")
    hook.chmod(0o755)
    srv = start_server(tmp_path / "state", env={"VAULT_PATH": str(vault), "VAULT_SYNC_INTERVAL": "3600"})
    try:
        u = srv.http_url
        assert curl("POST", u + "/api/v1/tasks", {"name": "Fix login"}).status == 201
        assert curl("POST", u + "/api/v1/sync/trigger", {"full": True}).status == 200
        failed = after_next_cycle(u, None)
        error = str(failed["last_error"])
        assert "git push failed" in error and "pushes are closed today" in error, failed
        assert failed["last_sync"] is None and failed["last_pushed"] is False and failed["last_commit"]
        assert failed["last_written"] >= 2 and failed["last_full"] is True
        assert failed["full_pending"] is True  # a full rebuild that failed is still owed
        # The CLI's wait says why rather than only timing out.
        out = subprocess.run(
            [sys.executable, "-m", "lobwife", "vault", "sync", "--wait", "20"],
            env=subprocess_env(LOBWIFE_ADDR=srv.grpc_addr, LOBWIFE_TOKEN=""),
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.returncode == 1 and "pushes are closed today" in out.stderr, out.stderr
        hook.unlink()
        assert curl("POST", u + "/api/v1/sync/trigger").status == 200
        ok = after_next_cycle(u, sync_status(u)["last_attempt"])
        assert ok["last_error"] == "" and ok["last_pushed"] is True and ok["last_sync"] is not None
        assert ok["full_pending"] is False
    finally:
        assert srv.terminate() == 0


def test_cost_and_audit_pages_follow_the_data(tmp_path: Path, repos: tuple[Path, Path, Path]) -> None:
    remote, vault, _ = repos
    srv = start_server(tmp_path / "state", env={"VAULT_PATH": str(vault), "VAULT_SYNC_INTERVAL": "3600"})
    try:
        u = srv.http_url
        assert curl("POST", u + "/api/v1/tasks", {"name": "Fix login", "type": "swe"}).status == 201
        for model, usd in (("claude-opus", 1.5), ("claude-opus", 0.25), ("claude-haiku", 0.125)):
            cost = {"task_id": "T1", "model": model, "input_tokens": 1000, "output_tokens": 10, "cost_usd": usd}
            assert curl("POST", u + "/api/costs", cost).status in (200, 201)
        for title, severity in (("token in a log | leaked", "high"), ("slow test", "low"), ("open port", "critical")):
            finding = {"category": "security", "title": title, "severity": severity, "subject": "T1"}
            assert curl("POST", u + "/api/audits", finding).status in (200, 201)
        assert curl("POST", u + "/api/v1/sync/trigger").status == 200
        first = after_next_cycle(u, None)
        assert first["last_error"] == "", first
        costs_text = on_remote(remote, "010-tasks/_costs.md") or ""
        costs = frontmatter_of(costs_text)
        assert (costs["cost_usd"], costs["calls"], costs["models"], costs["rows"]) == (1.875, 3, 2, 30)
        assert "| claude-opus | 2 | 2000 | 20 | 0 | 0 | 0 | 1.7500 |" in costs_text
        audits_text = on_remote(remote, "010-tasks/_audits.md") or ""
        audits = frontmatter_of(audits_text)
        assert (audits["open"], audits["critical"], audits["high"], audits["low"]) == (3, 1, 1, 1)
        lines = [ln for ln in audits_text.splitlines() if ln.startswith("| ") and "[[T1]]" in ln]
        assert [ln.split(" | ")[0] for ln in lines] == ["| critical", "| high", "| low"]
        assert "token in a log \\| leaked" in audits_text

        # Nothing changed: the next cycle writes and commits nothing.
        commits = git(remote, "rev-list", "--count", "main")
        assert curl("POST", u + "/api/v1/sync/trigger").status == 200
        idle = after_next_cycle(u, first["last_attempt"])
        assert idle["last_error"] == "" and idle["last_commit"] == "" and idle["last_written"] == 0, idle
        assert git(remote, "rev-list", "--count", "main") == commits

        # A finding resolved: the page follows at the next cycle.
        resolved = curl("POST", u + "/api/v1/findings/3:resolve", {"resolution": "closed", "actor": "ops"})
        assert resolved.status == 200, resolved.body
        assert curl("POST", u + "/api/v1/sync/trigger").status == 200
        after = after_next_cycle(u, idle["last_attempt"])
        assert after["last_written"] == 1 and after["last_commit"], after
        assert frontmatter_of(on_remote(remote, "010-tasks/_audits.md") or "")["open"] == 2
    finally:
        assert srv.terminate() == 0


def test_an_old_fleets_task_file_is_kept_counted_nowhere_and_never_taken_over(
    tmp_path: Path, repos: tuple[Path, Path, Path]
) -> None:
    remote, vault, person = repos
    old = (
        "---\ntask_id: T2\nname: The old fleet's T2\nstatus: completed\ncreated: '2025-01-01T00:00:00Z'\n"
        "completed: '2025-01-02T00:00:00Z'\n---\nNotes about another task.\n"
    )
    (person / "010-tasks" / "completed").mkdir(parents=True)
    (person / "010-tasks" / "completed" / "T2.md").write_text(old)
    git(person, "add", "-A")
    git(person, "commit", "-q", "-m", "the old fleet's T2")
    git(person, "push", "-q", "origin", "HEAD:main")
    srv = start_server(tmp_path / "state", env={"VAULT_PATH": str(vault), "VAULT_SYNC_INTERVAL": "3600"})

    def overview() -> tuple[int, int, list[str]]:
        data = frontmatter_of(on_remote(remote, "010-tasks/_overview.md") or "")
        return data["total"], data["completed"], data["recent_completions"]

    try:
        u = srv.http_url
        assert curl("POST", u + "/api/v1/tasks", {"name": "Fix login"}).status == 201
        assert curl("POST", u + "/api/v1/sync/trigger").status == 200
        full = after_next_cycle(u, None)  # the first cycle: a full rebuild
        assert full["last_full"] is True and full["last_skipped"] == 1 and full["last_error"] == "", full
        assert overview() == (1, 0, [])
        # An ordinary cycle counts the same (the old T2.md is no task of this server's).
        assert curl("POST", u + "/api/v1/sync/trigger").status == 200
        plain = after_next_cycle(u, full["last_attempt"])
        assert plain["last_full"] is False and plain["last_commit"] == "" and overview() == (1, 0, [])

        # The server's T2 is created: the old file is kept as it is, reported, and no second T2.md written.
        assert curl("POST", u + "/api/v1/tasks", {"name": "Tidy the docs"}).status == 201
        assert curl("POST", u + "/api/v1/sync/trigger").status == 200
        held = after_next_cycle(u, plain["last_attempt"])
        assert held["last_error"] == "" and held["last_skipped"] == 1 and held["last_moved"] == 0, held
        assert on_remote(remote, "010-tasks/completed/T2.md") == old
        assert on_remote(remote, "010-tasks/active/T2.md") is None
        assert overview() == (2, 0, [])

        # A person renames the old file: the next cycle writes T2's own.
        git(person, "pull", "-q", "--rebase", "origin", "main")
        git(person, "mv", "010-tasks/completed/T2.md", "010-tasks/completed/old-fleet-T2.md")
        git(person, "commit", "-q", "-m", "the old T2 renamed")
        git(person, "push", "-q", "origin", "HEAD:main")
        assert curl("POST", u + "/api/v1/sync/trigger").status == 200
        written = after_next_cycle(u, held["last_attempt"])
        assert written["last_skipped"] == 0 and written["last_written"] == 1, written
        assert frontmatter_of(on_remote(remote, "010-tasks/active/T2.md") or "")["name"] == "Tidy the docs"
        assert on_remote(remote, "010-tasks/completed/old-fleet-T2.md") == old
    finally:
        assert srv.terminate() == 0
