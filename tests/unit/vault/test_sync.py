"""Sync cycles against real git: a bare remote, the vault clone, and a person pushing meanwhile."""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from lobwife_server.vault import OWNED_KEYS, TablePage, VaultSync, files, render
from lobwife_server.vault import sync as sync_mod
from tests.unit.vault.conftest import Repos, git, task

ACTIVE = "010-tasks/active"
DONE = "010-tasks/completed"
FAILED = "010-tasks/failed"


def vault_sync(repos: Repos, **kw: object) -> VaultSync:
    kw.setdefault("retry_backoff", 0.01)
    return VaultSync(repos.vault, author_name="lobwife", author_email="lobwife@example.com", **kw)  # type: ignore[arg-type]


def frontmatter(path: Path) -> dict[str, object]:
    return render.split_document(path.read_text()).data


def not_mid_rebase(repos: Repos) -> bool:
    g = repos.vault / ".git"
    return not (g / "rebase-merge").exists() and not (g / "rebase-apply").exists()


async def test_first_cycle_writes_folders_overview_one_commit_and_pushes(repos: Repos) -> None:
    sync = vault_sync(repos)
    before = repos.commits()
    tasks = [task(1, "queued"), task(2, "blocked"), task(3, "completed"), task(4, "failed"), task(5, "cancelled")]
    r = await sync.sync(tasks, full=True)
    assert r.ok, r.error
    assert sorted(r.written) == sorted(
        [
            f"{ACTIVE}/T1.md",
            f"{ACTIVE}/T2.md",
            f"{DONE}/T3.md",
            f"{FAILED}/T4.md",
            f"{FAILED}/T5.md",
            "010-tasks/_overview.md",
        ]
    )
    assert r.pushed and r.commit is not None
    assert repos.commits() == before + 1
    assert git(repos.remote, "rev-parse", "main").strip() == r.commit
    assert git(repos.remote, "log", "-1", "--format=%an <%ae>|%cn", "main").strip() == (
        "lobwife <lobwife@example.com>|lobwife"
    )
    fm = frontmatter(repos.vault / f"{DONE}/T3.md")
    assert tuple(fm) == OWNED_KEYS and fm["status"] == "completed" and fm["created"] == "2026-02-13T16:26:43Z"
    ov = frontmatter(repos.vault / "010-tasks/_overview.md")
    assert (ov["total"], ov["queued"], ov["blocked"], ov["completed"], ov["failed"], ov["cancelled"]) == (
        5,
        1,
        1,
        1,
        1,
        1,
    )
    assert ov["recent_completions"] == ["[[T3]]"]
    assert "```dataview" in (repos.vault / "010-tasks/_overview.md").read_text()

    # Nothing changed: no commit, no push, nothing written.
    again = await sync.sync(tasks, full=True)
    assert again.ok and not again.changed and again.commit is None and not again.pushed
    assert repos.commits() == before + 1


async def test_not_a_git_repo_or_missing_path_is_a_clear_error(tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    r = await VaultSync(plain).sync([task(1)])
    assert not r.ok and "is not a git work tree" in (r.error or "")
    assert not (plain / "010-tasks").exists()
    r = await VaultSync(tmp_path / "nope").sync([task(1)])
    assert "does not exist" in (r.error or "")


async def test_no_remote_named_origin(repos: Repos) -> None:
    git(repos.vault, "remote", "remove", "origin")
    r = await vault_sync(repos).sync([task(1)])
    assert "no remote named 'origin'" in (r.error or "")
    local = await vault_sync(repos, remote=None).sync([task(1)])
    assert local.ok and local.commit and not local.pushed


async def test_status_change_moves_the_file_with_history(repos: Repos) -> None:
    sync = vault_sync(repos)
    assert (await sync.sync([task(7, "active")])).ok
    repos.person_pull()
    notes = repos.person / f"{ACTIVE}/T7.md"
    notes.write_text(notes.read_text() + "\nThe person's notes.\n")
    repos.person_commit("notes on T7")
    repos.person_push()

    r = await sync.sync([task(7, "completed")])
    assert r.ok, r.error
    assert r.moved == [(f"{ACTIVE}/T7.md", f"{DONE}/T7.md")]
    assert not (repos.vault / f"{ACTIVE}/T7.md").exists()
    moved = (repos.vault / f"{DONE}/T7.md").read_text()
    assert "The person's notes." in moved and frontmatter(repos.vault / f"{DONE}/T7.md")["status"] == "completed"
    log = git(repos.vault, "log", "--follow", "--format=%s", "--", f"{DONE}/T7.md").splitlines()
    assert log == [
        "lobwife: vault sync (2 written, 1 moved, 0 removed)",
        "notes on T7",
        "lobwife: vault sync (2 written, 0 moved, 0 removed)",
    ]
    status = git(repos.vault, "show", "--name-status", "--format=", "HEAD")
    assert "R" in status and f"{ACTIVE}/T7.md\t{DONE}/T7.md" in status


async def test_human_keys_order_and_body_survive_rewrites(repos: Repos) -> None:
    sync = vault_sync(repos)
    assert (await sync.sync([task(1)])).ok
    repos.person_pull()
    path = repos.person / f"{ACTIVE}/T1.md"
    text = path.read_text()
    # The person puts a key first, one in the middle, and writes in the body.
    text = text.replace("---\n", "---\ntags: [urgent]  # mine\n", 1)
    text = text.replace("status: active\n", "status: active\nreviewer: ann\n")
    text += "\n- [ ] check the logs\n"
    path.write_text(text)
    repos.person_commit("person edits T1")
    repos.person_push()

    r = await sync.sync([task(1, "blocked", priority="low", assigned_to="lobster-2")])
    assert r.ok and r.pushed, r.error
    out = (repos.vault / f"{ACTIVE}/T1.md").read_text()
    lines = out.splitlines()
    assert lines[1] == "tags: [urgent]  # mine"
    assert lines[lines.index("status: blocked") + 1] == "reviewer: ann"
    assert out.endswith("\n- [ ] check the logs\n")
    fm = frontmatter(repos.vault / f"{ACTIVE}/T1.md")
    assert (fm["priority"], fm["assigned_to"], fm["reviewer"]) == ("low", "lobster-2", "ann")
    assert next(iter(fm)) == "tags"


async def test_broken_frontmatter_is_left_untouched_and_reported(repos: Repos) -> None:
    sync = vault_sync(repos)
    assert (await sync.sync([task(1), task(2)])).ok
    repos.person_pull()
    broken = "---\nstatus: [active\n---\nhalf-typed edit\n"
    (repos.person / f"{ACTIVE}/T1.md").write_text(broken)
    repos.person_commit("oops")
    repos.person_push()

    r = await sync.sync([task(1, "completed"), task(2, "queued")])
    assert r.ok, r.error
    assert [(s.path, "does not parse" in s.reason) for s in r.skipped] == [(f"{ACTIVE}/T1.md", True)]
    assert (repos.vault / f"{ACTIVE}/T1.md").read_text() == broken  # not rewritten, not moved
    assert not (repos.vault / f"{DONE}/T1.md").exists()
    assert frontmatter(repos.vault / f"{ACTIVE}/T2.md")["status"] == "queued"
    assert r.written == [f"{ACTIVE}/T2.md", "010-tasks/_overview.md"]


@pytest.mark.parametrize(
    "frontmatter_text",
    ["created: 2026-02-30\n", "completed: 2026-13-01T10:00:00Z\n"],
    ids=["a-day-that-does-not-exist", "a-month-that-does-not-exist"],
)
async def test_yaml_that_parses_but_cannot_be_built_is_left_and_reported(repos: Repos, frontmatter_text: str) -> None:
    sync = vault_sync(repos)
    assert (await sync.sync([task(1), task(2)])).ok
    repos.person_pull()
    odd = f"---\n{frontmatter_text}---\nnotes\n"
    (repos.person / f"{ACTIVE}/T1.md").write_text(odd)
    repos.person_commit("odd value")
    repos.person_push()

    r = await sync.sync([task(1, "completed"), task(2, "queued")])
    assert r.ok, r.error  # one odd file fails no cycle
    assert [s.path for s in r.skipped] == [f"{ACTIVE}/T1.md"] and "cannot be read" in r.skipped[0].reason
    assert (repos.vault / f"{ACTIVE}/T1.md").read_text() == odd
    assert frontmatter(repos.vault / f"{ACTIVE}/T2.md")["status"] == "queued"


async def test_hostile_task_text_never_becomes_a_path_or_a_key(repos: Repos) -> None:
    names = ["../../etc/passwd", "x\n---\nstatus: completed\nevil: true\n---\n", "../../../outside/T1.md"]
    tasks = [task(n, name=name, slug=name, assigned_to=name) for n, name in enumerate(names, start=1)]
    r = await vault_sync(repos).sync(tasks)
    assert r.ok, r.error
    written = sorted(p.relative_to(repos.vault).as_posix() for p in (repos.vault / "010-tasks").rglob("*.md"))
    assert written == ["010-tasks/_overview.md", f"{ACTIVE}/T1.md", f"{ACTIVE}/T2.md", f"{ACTIVE}/T3.md"]
    assert list(repos.outside.iterdir()) == []
    for n, name in enumerate(names, start=1):
        fm = frontmatter(repos.vault / f"{ACTIVE}/T{n}.md")
        assert tuple(fm) == OWNED_KEYS and fm["name"] == name and fm["slug"] == name and fm["status"] == "active"


async def test_symlinks_out_of_the_vault_are_refused(repos: Repos) -> None:
    secret = repos.outside / "secret.md"
    secret.write_text("---\nstatus: mine\n---\nnot the vault's\n")
    # A person pushes a folder that is a symlink out of the vault and a task file that is one.
    (repos.person / "010-tasks/completed").mkdir(parents=True)
    os.symlink(repos.outside, repos.person / "010-tasks/active")
    os.symlink(secret, repos.person / "010-tasks/completed/T5.md")
    repos.person_commit("symlinks")
    repos.person_push()

    r = await vault_sync(repos).sync([task(1, "queued"), task(5, "completed")])
    assert r.ok, r.error
    reasons = {s.path: s.reason for s in r.skipped}
    assert "symlink" in reasons[ACTIVE] and "symlink" in reasons[f"{ACTIVE}/T1.md"]
    assert "symlink" in reasons[f"{DONE}/T5.md"]
    assert sorted(p.name for p in repos.outside.iterdir()) == ["secret.md"]
    assert secret.read_text() == "---\nstatus: mine\n---\nnot the vault's\n"
    assert r.written == ["010-tasks/_overview.md"]


async def test_concurrent_human_push_is_rebased_and_survives(repos: Repos) -> None:
    sync = vault_sync(repos)
    assert (await sync.sync([task(1), task(2)])).ok
    repos.person_pull()
    # The person edits T1's body (lobwife will change T1's frontmatter) and T2, and pushes while
    # lobwife is between its commit and its push.
    t1 = repos.person / f"{ACTIVE}/T1.md"
    t1.write_text(t1.read_text() + "\nPerson: looked at this.\n")
    t2 = repos.person / f"{ACTIVE}/T2.md"
    t2.write_text(t2.read_text() + "\nPerson: T2 notes.\n")
    repos.person_commit("person notes")
    repos.push_when_lobwife_commits()

    r = await sync.sync([task(1, "blocked", priority="low")])
    assert r.ok, r.error
    assert r.pushed and r.attempts == 2  # the first push met the person's commit
    remote_t1 = repos.remote_file(f"{ACTIVE}/T1.md")
    assert "Person: looked at this." in remote_t1 and "status: blocked" in remote_t1 and "priority: low" in remote_t1
    assert "Person: T2 notes." in repos.remote_file(f"{ACTIVE}/T2.md")
    subjects = git(repos.remote, "log", "--format=%s", "-3", "main").splitlines()
    assert subjects[:2] == ["lobwife: vault sync (2 written, 0 moved, 0 removed)", "person notes"]
    assert not_mid_rebase(repos)


async def test_true_conflict_aborts_cleanly_after_bounded_retries(repos: Repos) -> None:
    sync = vault_sync(repos, push_attempts=3)
    assert (await sync.sync([task(1)])).ok
    repos.person_pull()
    t1 = repos.person / f"{ACTIVE}/T1.md"
    t1.write_text(t1.read_text().replace("priority: high", "priority: urgent"))  # a line lobwife owns
    repos.person_commit("person raises T1")
    repos.push_when_lobwife_commits()
    head_before = git(repos.vault, "rev-parse", "HEAD").strip()

    r = await sync.sync([task(1, priority="low")])
    assert not r.ok and r.attempts == 3 and not r.pushed
    assert "conflicts in 010-tasks/active/T1.md" in (r.error or "") and "gave up after 3 attempts" in (r.error or "")
    assert not_mid_rebase(repos)
    assert git(repos.vault, "status", "--porcelain").strip() == ""
    # The vault is as it was after its own commit; the person's commit is whole on the remote.
    assert git(repos.vault, "rev-parse", "HEAD~1").strip() == head_before
    assert "priority: low" in (repos.vault / f"{ACTIVE}/T1.md").read_text()
    assert "priority: urgent" in repos.remote_file(f"{ACTIVE}/T1.md")
    assert git(repos.remote, "log", "-1", "--format=%s", "main").strip() == "person raises T1"

    # The next cycle meets the same conflict at its first pull, says so, and writes nothing.
    again = await sync.sync([task(2)])
    assert not again.ok and "conflicts in 010-tasks/active/T1.md" in (again.error or "")
    assert not again.written and not (repos.vault / f"{ACTIVE}/T2.md").exists()
    assert not_mid_rebase(repos)


async def test_remote_refusing_the_push_keeps_the_commit_for_next_time(repos: Repos) -> None:
    hook = repos.remote / "hooks" / "pre-receive"
    hook.write_text("#!/bin/sh\necho 'pushes are closed today' >&2\nexit 1\n")
    hook.chmod(0o755)
    sync = vault_sync(repos)
    r = await sync.sync([task(1)])
    assert not r.ok and not r.pushed and r.commit is not None
    assert "git push failed; the commit is kept" in (r.error or "") and "pushes are closed today" in (r.error or "")
    assert git(repos.vault, "rev-parse", "HEAD").strip() == r.commit
    assert git(repos.vault, "status", "--porcelain").strip() == ""

    hook.unlink()
    later = await sync.sync([])
    assert later.ok and later.pushed and later.commit is None
    assert git(repos.remote, "rev-parse", "main").strip() == r.commit


async def test_empty_remote_gets_its_first_branch(tmp_path: Path) -> None:
    remote = tmp_path / "empty.git"
    git(tmp_path, "init", "-q", "--bare", "-b", "main", str(remote))
    vault = tmp_path / "v"
    git(tmp_path, "clone", "-q", str(remote), str(vault))
    r = await VaultSync(vault, retry_backoff=0.01).sync([task(1)])
    assert r.ok and r.pushed, r.error
    assert git(remote, "rev-parse", "main").strip() == r.commit


async def test_full_rebuild_removes_stale_copies_and_keeps_files_of_unknown_tasks(repos: Repos) -> None:
    sync = vault_sync(repos)
    assert (await sync.sync([task(1), task(2), task(3, "failed")], full=True)).ok
    repos.person_pull()
    # A copy of T1 in the wrong folder, and a person's own note that is not a task file.
    (repos.person / f"{FAILED}/T1.md").write_text((repos.person / f"{ACTIVE}/T1.md").read_text())
    (repos.person / f"{ACTIVE}/meeting.md").write_text("mine\n")
    repos.person_commit("copy and note")
    repos.person_push()

    r = await sync.sync([task(1), task(2)], full=True)
    assert r.ok, r.error
    # The stale copy of T1 goes; T3's file stays (no such task: it may be someone's only notes), reported.
    assert r.removed == [f"{FAILED}/T1.md"]
    assert [(s.path, s.reason) for s in r.skipped] == [(f"{FAILED}/T3.md", "no task T3 in lobwife: kept")]
    assert (repos.vault / f"{FAILED}/T3.md").exists() and (repos.vault / f"{ACTIVE}/meeting.md").exists()
    assert frontmatter(repos.vault / "010-tasks/_overview.md")["total"] == 2  # counted from the tasks given
    tracked = git(repos.remote, "ls-tree", "-r", "--name-only", "main").split()
    assert f"{FAILED}/T1.md" not in tracked and f"{FAILED}/T3.md" in tracked and f"{ACTIVE}/meeting.md" in tracked


async def test_incremental_overview_counts_the_files(repos: Repos) -> None:
    sync = vault_sync(repos)
    assert (await sync.sync([task(1), task(2), task(3, "completed")])).ok
    r = await sync.sync([task(2, "completed", completed_at=2_000_000_000)])
    assert r.ok, r.error
    ov = frontmatter(repos.vault / "010-tasks/_overview.md")
    assert (ov["total"], ov["active"], ov["completed"]) == (3, 1, 2)
    assert ov["recent_completions"] == ["[[T2]]", "[[T3]]"]


async def test_summary_page_is_written_and_rewritten(repos: Repos) -> None:
    sync = vault_sync(repos)
    page = TablePage("costs", "Costs", ["task", "usd"], [["T1", 1.5]], summary={"total_usd": 1.5})
    assert (await sync.sync([], pages=[page])).ok
    repos.person_pull()
    p = repos.person / "010-tasks/_costs.md"
    p.write_text(p.read_text() + "\nPerson: budget is 10.\n")
    repos.person_commit("note")
    repos.person_push()
    page2 = TablePage("costs", "Costs", ["task", "usd"], [["T1", 1.5], ["T2", 3.0]], summary={"total_usd": 4.5})
    r = await sync.sync([], pages=[page2])
    assert r.ok and r.written == ["010-tasks/_costs.md"], r.error
    text = (repos.vault / "010-tasks/_costs.md").read_text()
    assert "| T2 | 3 |" in text and text.endswith("Person: budget is 10.\n")
    assert frontmatter(repos.vault / "010-tasks/_costs.md")["total_usd"] == 4.5


async def test_full_disk_leaves_whole_files_and_fails_cleanly(repos: Repos, monkeypatch: pytest.MonkeyPatch) -> None:
    sync = vault_sync(repos)
    assert (await sync.sync([task(1), task(2)])).ok
    t1 = repos.vault / f"{ACTIVE}/T1.md"
    t2 = repos.vault / f"{ACTIVE}/T2.md"
    before = (t1.read_text(), t2.read_text())
    head = git(repos.vault, "rev-parse", "HEAD").strip()
    real = files._write_all

    def half_then_enospc(fd: int, data: bytes) -> None:
        real(fd, data[: len(data) // 2])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(files, "_write_all", half_then_enospc)
    r = await sync.sync([task(1, "blocked"), task(2, "blocked")])
    assert not r.ok and "No space left on device" in (r.error or "") and r.commit is None
    assert (t1.read_text(), t2.read_text()) == before  # never half-written
    assert [p.name for p in (repos.vault / ACTIVE).iterdir() if files.TMP_MARK in p.name] == []
    assert git(repos.vault, "rev-parse", "HEAD").strip() == head

    monkeypatch.setattr(files, "_write_all", real)
    ok = await sync.sync([task(1, "blocked"), task(2, "blocked")])
    assert ok.ok and ok.pushed and frontmatter(t1)["status"] == "blocked"


async def test_stale_index_lock_is_removed_with_a_log_line(repos: Repos, caplog: pytest.LogCaptureFixture) -> None:
    lock = repos.vault / ".git" / "index.lock"
    lock.write_text("")
    old = time.time() - 120
    os.utime(lock, (old, old))
    caplog.set_level(logging.INFO, logger="lobwife.vault")
    r = await vault_sync(repos).sync([task(1)])
    assert r.ok, r.error
    assert not lock.exists()
    assert any("stale git index.lock" in rec.getMessage() for rec in caplog.records)


async def test_young_index_lock_is_waited_for(repos: Repos) -> None:
    lock = repos.vault / ".git" / "index.lock"
    lock.write_text("")
    asyncio.get_running_loop().call_later(0.4, lock.unlink)
    started = time.monotonic()
    r = await vault_sync(repos, lock_wait=5.0).sync([task(1)])
    assert r.ok, r.error
    assert time.monotonic() - started >= 0.4

    lock.write_text("")  # young, and nobody removes it: the wait is bounded
    r = await vault_sync(repos, lock_wait=0.3).sync([task(2)])
    assert not r.ok and "index.lock is in the way" in (r.error or "") and lock.exists()


@pytest.fixture
def held_old_lock(repos: Repos) -> Iterator[tuple[Path, int]]:
    """An index.lock two minutes old that a live process (not git) holds open."""
    lock = repos.vault / ".git" / "index.lock"
    lock.write_text("")
    old = time.time() - 120
    os.utime(lock, (old, old))
    holder = subprocess.Popen(
        [sys.executable, "-c", f"import time; f=open({str(lock)!r}); print('ready', flush=True); time.sleep(30)"],
        stdout=subprocess.PIPE,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == b"ready\n"
        yield lock, holder.pid
    finally:
        holder.kill()
        holder.wait()


async def test_old_index_lock_held_by_a_process_is_not_removed(repos: Repos, held_old_lock: tuple[Path, int]) -> None:
    lock, pid = held_old_lock
    r = await vault_sync(repos, lock_wait=0.3).sync([task(1)])
    assert not r.ok and f"held by pid {pid}" in (r.error or "")
    assert lock.exists()


@pytest.fixture
async def http_remote() -> AsyncIterator[tuple[str, list[dict[str, str]]]]:
    """An HTTP git remote that records each request's headers and refuses it (403)."""
    seen: list[dict[str, str]] = []

    async def refuse(request: web.Request) -> web.Response:
        seen.append(dict(request.headers))
        return web.Response(status=403, text="no")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", refuse)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}/org/vault.git", seen
    finally:
        await runner.cleanup()


async def test_token_reaches_git_but_no_log_config_or_command_line(
    repos: Repos,
    http_remote: tuple[str, list[dict[str, str]]],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    import base64

    url, seen = http_remote
    token = "ghs_S3CRETtokenVALUE0123456789"
    basic = base64.b64encode(f"x-access-token:{token}".encode()).decode()
    git(repos.vault, "remote", "set-url", "origin", url)
    trace = tmp_path / "git-trace.log"
    monkeypatch.setenv("GIT_TRACE", str(trace))  # every git process's command line, as ps would show it
    calls = 0

    async def provider() -> str:
        nonlocal calls
        calls += 1
        return token

    caplog.set_level(logging.DEBUG, logger="lobwife.vault")
    r = await vault_sync(repos, token=provider).sync([task(1)])
    assert not r.ok and "403" in (r.error or "")
    assert calls == 1
    assert any(h.get("Authorization") == f"Basic {basic}" for h in seen), seen  # git did send it
    logged = "\n".join(f"{rec.getMessage()} {vars(rec)}" for rec in caplog.records)
    assert "vault git pull" in logged  # the debug log of commands is on, and clean
    assert trace.read_text().count("trace:") > 3 and "pull" in trace.read_text()
    for where in (logged, trace.read_text(), (repos.vault / ".git" / "config").read_text(), r.error or ""):
        assert token not in where and basic not in where


async def test_concurrent_edit_of_a_file_lobwife_moves(repos: Repos) -> None:
    sync = vault_sync(repos)
    assert (await sync.sync([task(1)])).ok
    repos.person_pull()
    t1 = repos.person / f"{ACTIVE}/T1.md"
    t1.write_text(t1.read_text() + "\nPerson: done, I think.\n")
    repos.person_commit("person notes")
    repos.push_when_lobwife_commits()

    r = await sync.sync([task(1, "completed")])
    assert r.ok and r.pushed and r.attempts == 2, r.error
    tracked = git(repos.remote, "ls-tree", "-r", "--name-only", "main").split()
    assert f"{DONE}/T1.md" in tracked and f"{ACTIVE}/T1.md" not in tracked
    moved = repos.remote_file(f"{DONE}/T1.md")
    assert "Person: done, I think." in moved and "status: completed" in moved


async def test_a_file_that_does_not_say_it_is_another_tasks_is_adopted(repos: Repos) -> None:
    sync = vault_sync(repos)
    repos.person_pull()
    # The old daemon's files: no created, or one that is no time, or one within the minute; a heading-only one.
    (repos.person / ACTIVE).mkdir(parents=True, exist_ok=True)
    (repos.person / f"{ACTIVE}/T1.md").write_text("---\ntask_id: T1\nstatus: active\n---\nNotes on T1.\n")
    (repos.person / f"{ACTIVE}/T2.md").write_text("---\ncreated: sometime last week\n---\nNotes on T2.\n")
    (repos.person / f"{ACTIVE}/T3.md").write_text("---\ntask_id: t003\ncreated: 2026-02-13T16:27:13Z\n---\nNotes.\n")
    (repos.person / f"{ACTIVE}/T4.md").write_text("---\ncreated: 2026-02-13\n---\nOn the same day.\n")
    repos.person_commit("old files")
    repos.person_push()
    r = await sync.sync([task(1, "completed"), task(2), task(3), task(4)])
    assert r.ok and not r.skipped, r
    assert r.moved == [(f"{ACTIVE}/T1.md", f"{DONE}/T1.md")]
    assert (repos.vault / f"{DONE}/T1.md").read_text().endswith("---\nNotes on T1.\n")
    for n in (2, 3, 4):
        data = frontmatter(repos.vault / f"{ACTIVE}/T{n}.md")
        assert (data["task_id"], data["created"]) == (f"T{n}", render.iso(task(n).created_at))


async def test_another_tasks_file_is_never_adopted_moved_or_removed(repos: Repos) -> None:
    sync = vault_sync(repos)
    assert (await sync.sync([task(5)])).ok  # T5's own file, in active/
    repos.person_pull()
    (repos.person / DONE).mkdir(parents=True, exist_ok=True)
    other = "---\ntask_id: T55\nname: Not T5\n---\nSomeone's notes.\n"
    (repos.person / f"{DONE}/T5.md").write_text(other)  # says it is T55's
    (repos.person / FAILED).mkdir(parents=True, exist_ok=True)
    (repos.person / f"{FAILED}/T6.md").write_text("---\ncreated: 2020-05-01T08:00:00\n---\nOld.\n")
    repos.person_commit("two old files")
    repos.person_push()
    own = (repos.vault / f"{ACTIVE}/T5.md").read_text()

    # T5 completes (its file would move onto the other one's place); T6 is new. Full or not: held back.
    for full in (False, True):
        r = await sync.sync([task(5, "completed"), task(6, "failed")], full=full)
        assert r.ok, r.error
        reasons = {s.path: s.reason for s in r.skipped}
        assert sorted(reasons) == [f"{DONE}/T5.md", f"{FAILED}/T6.md"]
        assert reasons[f"{DONE}/T5.md"].startswith("another task's file, not T5's (its task_id is 'T55', not T5)")
        assert (
            "(it was created 2020-05-01T08:00:00Z, and task T6 was created 2026-02-13T16:26:46Z)"
            in (reasons[f"{FAILED}/T6.md"])
        )
        assert not r.moved and not r.removed
        assert r.written == ([] if full else ["010-tasks/_overview.md"])  # the full cycle: nothing new
        assert (repos.vault / f"{DONE}/T5.md").read_text() == other
        assert (repos.vault / f"{ACTIVE}/T5.md").read_text() == own  # nor T5's own copy touched
        assert not (repos.vault / f"{ACTIVE}/T6.md").exists()
        ov = frontmatter(repos.vault / "010-tasks/_overview.md")
        assert (ov["total"], ov["completed"], ov["failed"]) == (2, 1, 1)  # counted from the tasks


async def test_an_ordinary_cycle_counts_only_the_tasks_lobwife_has(repos: Repos) -> None:
    sync = vault_sync(repos)
    repos.person_pull()
    (repos.person / DONE).mkdir(parents=True, exist_ok=True)
    (repos.person / f"{DONE}/T9.md").write_text("---\ntask_id: T9\nstatus: completed\n---\n")
    repos.person_commit("an old file")
    repos.person_push()
    assert (await sync.sync([task(1), task(2, "completed")], full=True)).ok
    counted = frontmatter(repos.vault / "010-tasks/_overview.md")
    r = await sync.sync([task(1, "blocked")], known=range(1, 3))
    assert r.ok, r.error
    ov = frontmatter(repos.vault / "010-tasks/_overview.md")
    assert (
        (ov["total"], ov["completed"], ov["recent_completions"])
        == (2, 1, ["[[T2]]"])
        == (
            counted["total"],
            counted["completed"],
            counted["recent_completions"],
        )
    )
    # Without the numbers (a caller with no database), every task file counts, as before.
    assert (await sync.sync([task(1)])).ok
    assert frontmatter(repos.vault / "010-tasks/_overview.md")["total"] == 3


def task_file_reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The task files the cycles from now on read (the overview and pages left out)."""
    read: list[str] = []
    real_read = files.read_text

    def counting_read(root: Path, rel: str) -> str | None:
        if render.TASK_FILE.fullmatch(rel.rsplit("/", 1)[1]):
            read.append(rel)
        return real_read(root, rel)

    monkeypatch.setattr(files, "read_text", counting_read)
    return read


async def test_after_a_full_cycle_an_ordinary_one_reads_only_the_changed_tasks_files(
    repos: Repos, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A person's key in one file: the full cycle rewrites its owned keys and keeps the person's.
    repos.person_pull()
    (repos.person / ACTIVE).mkdir(parents=True, exist_ok=True)
    (repos.person / f"{ACTIVE}/T4.md").write_text("---\ntask_id: T4\nmine: keep\nstatus: queued\n---\nnotes\n")
    repos.person_commit("a person's file")
    repos.person_push()
    tasks = [task(1), task(2, "blocked"), task(3, "completed"), task(4), task(5, "failed"), task(6, "cancelled")]
    sync = vault_sync(repos)
    assert (await sync.sync(tasks, full=True)).ok
    # A second full cycle finds every file up to date and writes none of them.
    tasks[2] = task(3, "failed")  # ... but this one moves folder
    again = await sync.sync(tasks, full=True)
    assert again.ok and again.moved == [(f"{DONE}/T3.md", f"{FAILED}/T3.md")], again

    real_read = files.read_text
    read = task_file_reads(monkeypatch)
    r = await sync.sync([task(2, "completed", completed_at=2_000_000_000)])
    assert r.ok, r.error
    assert read == [f"{ACTIVE}/T2.md"]
    ov = frontmatter(repos.vault / "010-tasks/_overview.md")
    assert (ov["total"], ov["active"], ov["completed"], ov["failed"], ov["cancelled"]) == (6, 2, 1, 2, 1)
    # What the cache said is what the files say: a cycle that reads them all (a new VaultSync without
    # the saved cache) finds the overview up to date.
    monkeypatch.setattr(files, "read_text", real_read)
    (repos.vault / ".git" / sync_mod.ENTRY_CACHE).unlink()
    cold = await vault_sync(repos).sync([])
    assert cold.ok and not cold.changed, cold


async def test_a_file_changed_after_a_full_cycle_is_read_again(repos: Repos) -> None:
    sync = vault_sync(repos)
    assert (await sync.sync([task(1), task(2, "completed"), task(3, "completed")], full=True)).ok
    repos.person_pull()
    path = repos.person / f"{DONE}/T3.md"
    path.write_text(path.read_text().replace("status: completed", "status: failed"))
    repos.person_commit("T3 failed after all")
    repos.person_push()
    r = await sync.sync([task(1, "blocked")])
    assert r.ok, r.error
    ov = frontmatter(repos.vault / "010-tasks/_overview.md")
    assert (ov["total"], ov["blocked"], ov["completed"], ov["failed"]) == (3, 1, 1, 1)


async def test_a_restarted_sync_reads_only_the_changed_tasks_files(
    repos: Repos, monkeypatch: pytest.MonkeyPatch
) -> None:
    tasks = [task(1), task(2, "completed"), task(3, "failed"), task(4)]
    assert (await vault_sync(repos).sync(tasks, full=True)).ok
    cache = repos.vault / ".git" / sync_mod.ENTRY_CACHE
    assert cache.is_file()
    assert git(repos.vault, "status", "--porcelain") == ""  # in .git: never committed
    read = task_file_reads(monkeypatch)
    r = await vault_sync(repos).sync([task(4, "completed", completed_at=2_000_000_000)])  # a new process
    assert r.ok, r.error
    assert read == [f"{ACTIVE}/T4.md"]
    ov = frontmatter(repos.vault / "010-tasks/_overview.md")
    assert (ov["total"], ov["active"], ov["completed"], ov["failed"]) == (4, 1, 2, 1)
    assert ov["recent_completions"] == ["[[T4]]", "[[T2]]"]


def _t1_row(doc: dict[str, Any], rel: str = f"{ACTIVE}/T1.md") -> list[Any]:
    return next(row for row in doc["entries"] if row[0] == rel)


# Each keeps T1's true stamp where it can, so an entry that were trusted would be used.
_SPOILED: dict[str, Callable[[dict[str, Any]], object]] = {
    "not json": lambda doc: "not json",
    "a status the overview has no count for": lambda doc: _t1_row(doc).__setitem__(5, "no-such-status"),
    "another task's number": lambda doc: _t1_row(doc, f"{DONE}/T2.md").__setitem__(4, 1),
    "a stamp that is not numbers": lambda doc: _t1_row(doc).__setitem__(1, str(_t1_row(doc)[1])),
    "a row too short": lambda doc: _t1_row(doc).pop(),
    "another version": lambda doc: (doc.__setitem__("version", 99), _t1_row(doc).__setitem__(5, "failed")),
}


@pytest.mark.parametrize("spoil", list(_SPOILED))
async def test_an_unusable_entry_cache_means_the_files_are_read(
    repos: Repos, monkeypatch: pytest.MonkeyPatch, spoil: str
) -> None:
    assert (await vault_sync(repos).sync([task(1), task(2, "completed")], full=True)).ok
    cache = repos.vault / ".git" / sync_mod.ENTRY_CACHE
    doc = json.loads(cache.read_text())
    spoiled = _SPOILED[spoil](doc)
    cache.write_text(spoiled if isinstance(spoiled, str) else json.dumps(doc))
    read = task_file_reads(monkeypatch)
    r = await vault_sync(repos).sync([task(3)])
    assert r.ok, r.error
    assert sorted(read) == [f"{ACTIVE}/T1.md", f"{DONE}/T2.md"]
    ov = frontmatter(repos.vault / "010-tasks/_overview.md")
    assert (ov["total"], ov["active"], ov["completed"], ov["failed"]) == (3, 2, 1, 0)
    assert ov["recent_completions"] == ["[[T2]]"]


async def test_a_copy_that_names_another_task_is_not_counted_as_this_one(repos: Repos) -> None:
    sync = vault_sync(repos)
    assert (await sync.sync([task(5, "completed"), task(6)], full=True)).ok
    counted = frontmatter(repos.vault / "010-tasks/_overview.md")
    repos.person_pull()
    # Another task's file under T5's name, in a folder read before completed/.
    (repos.person / f"{ACTIVE}/T5.md").write_text("---\ntask_id: T55\nstatus: active\n---\nOther notes.\n")
    repos.person_commit("another task's file")
    repos.person_push()
    r = await sync.sync([task(6, "blocked")], known=range(5, 7))  # T5 not in this cycle: counted from files
    assert r.ok, r.error
    ov = frontmatter(repos.vault / "010-tasks/_overview.md")
    assert (ov["total"], ov["completed"], ov["active"]) == (2, counted["completed"], 0)


async def test_a_file_without_created_about_another_task_by_name_is_held_back(repos: Repos) -> None:
    sync = vault_sync(repos)
    repos.person_pull()
    (repos.person / ACTIVE).mkdir(parents=True, exist_ok=True)
    (repos.person / f"{ACTIVE}/T7.md").write_text("---\ntask_id: T7\nname: Migrate the billing DB\n---\nNotes.\n")
    (repos.person / f"{ACTIVE}/T8.md").write_text("---\ntask_id: T8\nname: task 8\n---\nSame task, any case.\n")
    repos.person_commit("old files")
    repos.person_push()
    r = await sync.sync([task(7), task(8)])
    assert r.ok, r.error
    assert [
        (s.path, "it is about 'Migrate the billing DB', and task T7 is 'Task 7'" in s.reason) for s in r.skipped
    ] == [(f"{ACTIVE}/T7.md", True)]
    assert frontmatter(repos.vault / f"{ACTIVE}/T8.md")["created"] == render.iso(task(8).created_at)  # adopted
    # A task renamed since lobwife wrote its file keeps its created, and so its file.
    assert (await sync.sync([task(8, name="Renamed")])).ok
    assert frontmatter(repos.vault / f"{ACTIVE}/T8.md")["name"] == "Renamed"


def test_a_fresh_whole_second_stamp_is_not_trusted() -> None:
    import time as _time
    from types import SimpleNamespace

    from lobwife_server.vault import sync as sync_module

    def trusted(mtime_ns: int) -> bool:
        return sync_module._trusted(SimpleNamespace(st_mtime_ns=mtime_ns))  # type: ignore[arg-type]

    now = _time.time_ns()
    second = now - now % 1_000_000_000
    assert trusted(second + 123)  # nanoseconds: a fine-grained file system
    assert not trusted(second)  # whole seconds, just now: read it again next time
    assert trusted(second - 10_000_000_000)  # whole seconds, long ago
