"""The server's cycles (VaultRunner) over a real SQLite file and real git: the cost and audit summary
pages, their numbers and their stability (an unchanged cycle commits nothing), a full rebuild asked
for (kept while a cycle runs, and after a failed one), and what the last cycle leaves for GetSyncStatus;
the T<n>.md files of other tasks (counted in no cycle, never taken over by a new task)."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from lobwife.v1 import tasks_pb2
from lobwife_server.api.rpc import CallContext
from lobwife_server.storage import audit_store, cost_store, migrations, vault_store
from lobwife_server.storage.cost_store import DAY_US, Sums
from lobwife_server.storage.database import Database
from lobwife_server.storage.vault_store import CostWindow, OpenFinding, OpenFindings
from lobwife_server.tasks.service import TaskService
from lobwife_server.vault import pages, render
from lobwife_server.vault.runner import VaultRunner, VaultSettings
from lobwife_server.vault.sync import SyncResult
from tests.unit.vault.conftest import Repos, git

DAY0 = 20_500  # 2026-02-16, a day number
NOW = (DAY0 + 1) * DAY_US + 3_600_000_000  # 01:00 the day after


def fm(path: Path) -> dict[str, Any]:
    return render.split_document(path.read_text()).data


# --- the pages, from data ---------------------------------------------------------------------


def test_cost_page_shows_every_day_of_the_window_and_models_by_spend() -> None:
    window = CostWindow(
        DAY0 - 29,
        DAY0,
        {DAY0: Sums(calls=2, input_tokens=100, cost_usd=1.25), DAY0 - 2: Sums(calls=1, cost_usd=0.5, unpriced_calls=1)},
        {"model-b": Sums(calls=1, cost_usd=0.5, unpriced_calls=1), "model-a": Sums(calls=2, cost_usd=1.25)},
    )
    page = pages.cost_page(window)
    assert page.path == "010-tasks/_costs.md"
    assert page.owned() == {
        "page": "costs",
        "rows": 30,
        "window_start": "2026-01-18",
        "window_end": "2026-02-16",
        "cost_usd": 1.75,
        "calls": 3,
        "unpriced_calls": 1,
        "models": 2,
    }
    text = render.new_document(page.owned(), page.new_body())
    assert "| 2026-02-16 | 2 | 100 | 0 | 0 | 0 | 0 | 1.2500 |" in text
    assert "| 2026-02-15 | 0 | 0 | 0 | 0 | 0 | 0 | 0.0000 |" in text
    assert text.index("2026-02-16 |") < text.index("2026-02-14 |") < text.index("2026-01-18 |")
    assert "### By model, 2026-01-18 to 2026-02-16" in text
    assert text.index("| model-a |") < text.index("| model-b |")
    # The same data gives the same text (no clock in it).
    again = pages.cost_page(window)
    assert render.new_document(again.owned(), again.new_body()) == text
    empty = pages.cost_page(None)
    assert empty.owned()["rows"] == 0 and "No costs recorded yet." in empty.new_body()


def finding(i: int, severity: int, title: str = "t", task: int | None = None) -> OpenFinding:
    return OpenFinding(i, severity, "security", title, f"T{task}" if task else "org/app", task, 1, NOW)


def test_audit_page_says_how_many_are_not_shown() -> None:
    found = OpenFindings([finding(3, 5, task=7), finding(1, 4)], {5: 1, 4: 2, 2: 4})
    page = pages.audit_page(found)
    assert page.path == "010-tasks/_audits.md"
    owned = page.owned()
    assert (owned["rows"], owned["open"], owned["not_shown"]) == (2, 7, 5)
    assert (owned["critical"], owned["high"], owned["medium"], owned["low"], owned["info"]) == (1, 2, 0, 4, 0)
    body = page.new_body()
    assert "| critical | 3 | security | t | [[T7]] | 1 | 2026-02-17T01:00:00Z |" in body
    assert "2 of 7 open findings shown, the most severe first; 5 more not shown" in body
    assert "No open findings." in pages.audit_page(OpenFindings([], {})).new_body()


def test_a_hostile_title_stays_one_cell_and_never_a_path() -> None:
    title = "a | b\n---\nstatus: x <!-- lobwife:table:end --> ../../etc/passwd"
    page = pages.audit_page(OpenFindings([finding(1, 5, title), finding(2, 3)], {5: 1, 3: 1}))
    assert page.path == "010-tasks/_audits.md"
    text = render.new_document(page.owned(), page.new_body())
    assert text.count(render.TABLE_END) == 1
    row = next(line for line in text.splitlines() if line.startswith("| critical |"))
    assert "a \\| b --- status: x &lt;\\!-- lobwife:table:end --> ../../etc/passwd" in row
    assert row.count(" | ") == 6  # seven cells
    # The page rewrites in place: the marked region is found again, the rest kept.
    again = page.update(text + "\nA person's note.\n")
    assert again == text + "\nA person's note.\n"


# --- the server's cycles ----------------------------------------------------------------------


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    d = Database(tmp_path / "lobwife.db", commit_delay=0)

    def migrate(conn: Any) -> None:
        migrations.migrate(conn)

    await d.open(migrate)
    try:
        yield d
    finally:
        await d.close()


def runner_for(db: Database, repos: Repos, **kw: Any) -> VaultRunner:
    r = VaultRunner(db, VaultSettings(path=repos.vault, debounce=0.05, **kw))
    r.sync.retry_backoff = 0.01
    return r


async def add_cost(db: Database, model: str, usd: float | None, occurred_at: int) -> None:
    new = cost_store.NewCost(
        None, None, None, "anthropic", model, 1000, 100, 0, 0, 0, usd, None, "", "", occurred_at
    )  # fmt: skip
    await db.write(lambda c, w: cost_store.insert_cost(c, new, occurred_at))


async def add_finding(db: Database, title: str, severity: int) -> int:
    new = audit_store.NewFinding(title, "security", severity, title, "", "org/app", None, "audit")
    row = await db.write(lambda c, w: audit_store.insert_finding(c, new, NOW))
    return row.id


async def test_the_cycle_writes_both_pages_and_an_unchanged_one_commits_nothing(db: Database, repos: Repos) -> None:
    now = int(time.time() * 1e6)
    today = now // DAY_US
    await add_cost(db, "claude-opus", 2.5, (today - 1) * DAY_US + 5)
    await add_cost(db, "claude-opus", 1.0, (today - 40) * DAY_US)  # outside the 30 days
    await add_cost(db, "claude-haiku", None, today * DAY_US + 7)
    await add_cost(db, "claude-haiku", 9.0, now + 10 * DAY_US)  # dated ahead: not in the window
    low = await add_finding(db, "low one", 2)
    await add_finding(db, "critical one", 5)
    gone = await add_finding(db, "resolved one", 4)
    await db.write(lambda c, w: audit_store.set_status(c, gone, "resolved", "fixed", "", "ops", NOW))
    runner = runner_for(db, repos)

    first = await runner.run_once()
    assert first.ok, first.error
    assert {"010-tasks/_costs.md", "010-tasks/_audits.md", "010-tasks/_overview.md"} <= set(first.written)
    costs = fm(repos.vault / "010-tasks/_costs.md")
    assert (costs["cost_usd"], costs["calls"], costs["unpriced_calls"], costs["models"]) == (2.5, 2, 1, 2)
    assert costs["window_end"] == pages.day_text(today) and costs["rows"] == 30
    audits = fm(repos.vault / "010-tasks/_audits.md")
    assert (audits["open"], audits["rows"], audits["critical"], audits["high"], audits["low"]) == (2, 2, 1, 0, 1)
    text = (repos.vault / "010-tasks/_audits.md").read_text()
    assert text.index("critical one") < text.index("low one") and "resolved one" not in text
    assert git(repos.remote, "show", "main:010-tasks/_costs.md") == (repos.vault / "010-tasks/_costs.md").read_text()

    commits = repos.commits()
    idle = await runner.run_once()
    assert idle.ok and idle.written == [] and idle.commit is None and repos.commits() == commits

    # A person's note on the page survives the next rewrite; only the page whose data changed is written.
    page = repos.vault / "010-tasks/_audits.md"
    page.write_text(page.read_text() + "\nTriaged on Monday.\n")
    git(repos.vault, "commit", "-qam", "a note")
    await db.write(lambda c, w: audit_store.set_status(c, low, "wont_fix", "accepted", "", "ops", NOW))
    changed = await runner.run_once()
    assert changed.ok and changed.written == ["010-tasks/_audits.md"], changed
    assert fm(page)["open"] == 1 and page.read_text().endswith("\nTriaged on Monday.\n")


async def test_at_most_the_limit_most_severe_first(db: Database) -> None:
    for i, sev in enumerate((3, 5, 1, 5, 4)):
        await add_finding(db, f"f{i}", sev)
    found = await db.read(lambda c: vault_store.open_findings(c, 3))
    assert [f.severity for f in found.rows] == [5, 5, 4] and found.total == 5
    assert [f.title for f in found.rows[:2]] == ["f3", "f1"]  # the same severity and time: the newest first
    assert (await db.read(lambda c: vault_store.cost_window(c, NOW, 30))) is None


async def make_task(db: Database, name: str) -> None:
    tasks = await TaskService.create(db)
    ctx = CallContext("/lobwife.v1.TaskService/CreateTask", "grpc", dict, peer="ipv4:127.0.0.1:4000")
    await tasks.CreateTask(tasks_pb2.CreateTaskRequest(name=name, type="code"), ctx)


async def test_a_full_rebuild_restores_the_owned_keys_a_person_broke(db: Database, repos: Repos) -> None:
    await make_task(db, "Fix login")
    runner = runner_for(db, repos)
    assert (await runner.run_once()).ok
    path = repos.vault / "010-tasks/active/T1.md"
    text = path.read_text()
    broken = text.replace("status: queued", "status: done?").replace("name: Fix login", "name: something else")
    path.write_text(broken.replace("---\n", "---\nreviewer: alice\n", 1))
    git(repos.vault, "commit", "-qam", "a person's edit")
    # An ordinary cycle writes only the tasks that changed: T1 did not (the overview, counted from
    # the files, no longer counts it).
    assert "010-tasks/active/T1.md" not in (await runner.run_once()).written and fm(path)["status"] == "done?"

    runner.request(full=True)
    assert runner.full_pending
    r = await runner.run_once()
    assert r.ok and sorted(r.written) == ["010-tasks/_overview.md", "010-tasks/active/T1.md"], r
    data = fm(path)
    assert (data["status"], data["name"], data["reviewer"]) == ("queued", "Fix login", "alice")
    assert runner.last_full and not runner.full_pending


async def test_a_full_request_during_a_cycle_is_not_lost(db: Database, repos: Repos) -> None:
    await make_task(db, "Fix login")
    runner = runner_for(db, repos)
    assert (await runner.run_once()).ok
    gate = asyncio.Event()
    real = runner.sync.sync
    seen: list[bool] = []

    async def gated(tasks: Any, *, full: bool = False, pages: Any = (), known: Any = None) -> SyncResult:
        seen.append(full)
        await gate.wait()
        return await real(tasks, full=full, pages=pages, known=known)

    runner.sync.sync = gated  # type: ignore[method-assign]
    runner.start()
    try:
        cycle = asyncio.create_task(runner.run_once())  # the job's cycle, held in its sync
        await wait_until(lambda: runner.running)
        runner.request(full=True)
        await asyncio.sleep(0.2)  # the watch sees the request; it must wait, not spin or drop it
        assert seen == [False] and runner.full_pending
        gate.set()
        assert (await asyncio.wait_for(cycle, 30)).ok
        await wait_until(lambda: len(seen) == 2 and not runner.running, 30)
        assert seen == [False, True] and runner.last_full and not runner.full_pending
    finally:
        await runner.close()


async def test_a_failed_cycle_says_why_and_keeps_the_full_request(db: Database, repos: Repos) -> None:
    hook = repos.remote / "hooks" / "pre-receive"
    hook.write_text("#!/bin/sh\necho 'pushes are closed today' >&2\nexit 1\n")
    hook.chmod(0o755)
    await make_task(db, "Fix login")
    runner = runner_for(db, repos)
    runner.request(full=True)
    r = await runner.run_once()
    assert not r.ok and r.commit and not r.pushed
    assert runner.last is r and "pushes are closed today" in (r.error or "")
    assert runner.last_sync is None and runner.last_attempt is not None and runner.last_full
    assert runner.full_pending  # kept for the next cycle
    assert await db.read(vault_store.cursor) is None  # the cursor did not move
    hook.unlink()
    again = await runner.run_once()
    assert again.ok and again.pushed and runner.last_full and not runner.full_pending
    assert runner.last_sync == runner.last_attempt


async def wait_until(what: Callable[[], bool], within: float = 10.0) -> None:
    # Polls a runner's plain attributes: there is no event to wait on for them.
    for _ in range(int(within / 0.02)):
        if what():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"not within {within}s")


# --- T<n>.md files of other tasks ----------------------------------------------------------------


def put_foreign(repos: Repos, rel: str, number: int) -> str:
    """An old fleet's task file numbered like a lobwife task, committed in the vault; its text."""
    text = (
        f"---\ntask_id: T{number}\nname: The old fleet's T{number}\nstatus: completed\n"
        "created: '2025-01-01T00:00:00Z'\ncompleted: '2025-01-02T00:00:00Z'\n---\n# Notes about another task\n"
    )
    path = repos.vault / "010-tasks" / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    git(repos.vault, "add", "-A")
    git(repos.vault, "commit", "-qm", "an old fleet's file")
    return text


async def test_a_file_of_a_task_lobwife_does_not_have_counts_in_no_cycle(db: Database, repos: Repos) -> None:
    await make_task(db, "Fix login")
    put_foreign(repos, "completed/T99.md", 99)
    runner = runner_for(db, repos)
    full = await runner.run_once()  # the first cycle: a full rebuild
    assert full.ok and runner.last_full, full.error
    assert [(s.path, s.reason) for s in full.skipped] == [
        ("010-tasks/completed/T99.md", "no task T99 in lobwife: kept")
    ]
    overview = repos.vault / "010-tasks/_overview.md"
    counted = {k: fm(overview)[k] for k in render.OVERVIEW_KEYS}
    assert (counted["total"], counted["queued"], counted["completed"], counted["recent_completions"]) == (1, 1, 0, [])

    # Ordinary cycles count the files, but only those of tasks lobwife has: the same numbers.
    ordinary = await runner.run_once()
    assert ordinary.ok and not runner.last_full and "010-tasks/_overview.md" not in ordinary.written, ordinary
    assert {k: fm(overview)[k] for k in render.OVERVIEW_KEYS} == counted
    await make_task(db, "Tidy the docs")
    after = await runner.run_once()
    assert after.ok and not runner.last_full
    now = fm(overview)
    assert (now["total"], now["queued"], now["completed"], now["recent_completions"]) == (2, 2, 0, [])


async def test_a_new_task_never_takes_over_another_tasks_file(db: Database, repos: Repos) -> None:
    await make_task(db, "Fix login")
    foreign = put_foreign(repos, "completed/T2.md", 2)
    runner = runner_for(db, repos)
    assert (await runner.run_once()).ok
    commits = repos.commits()

    # Task T2 is created: the old T2.md is not its file (created a year before it).
    await make_task(db, "Tidy the docs")
    r = await runner.run_once()
    assert r.ok and not runner.last_full, r.error
    [skip] = r.skipped
    assert skip.path == "010-tasks/completed/T2.md"
    assert skip.reason.startswith("another task's file, not T2's (it was created 2025-01-01T00:00:00Z, and task T2")
    assert "rename it" in skip.reason and "the next cycle writes T2's file" in skip.reason
    assert (repos.vault / "010-tasks/completed/T2.md").read_text() == foreign  # untouched
    assert not (repos.vault / "010-tasks/active/T2.md").exists()  # and no second T2.md beside it
    assert not r.moved and not r.removed and "010-tasks/active/T2.md" not in r.written
    overview = fm(repos.vault / "010-tasks/_overview.md")
    assert (overview["total"], overview["queued"], overview["completed"]) == (2, 2, 0)  # T2 from the database

    # Still there at the next cycle (T2 has not changed): still held back and reported, counted the same.
    idle = await runner.run_once()
    assert idle.ok and [s.path for s in idle.skipped] == ["010-tasks/completed/T2.md"] and not idle.written
    assert repos.commits() == commits + 1  # the cycle that created T2 committed only the overview

    # A person renames it; the next cycle writes T2's own file, though T2 has not changed since.
    git(repos.vault, "mv", "010-tasks/completed/T2.md", "010-tasks/completed/old-fleet-T2.md")
    git(repos.vault, "commit", "-qm", "the old T2 renamed")
    done = await runner.run_once()
    assert done.ok and done.written == ["010-tasks/active/T2.md"] and not done.skipped, done
    assert fm(repos.vault / "010-tasks/active/T2.md")["name"] == "Tidy the docs"
    assert (repos.vault / "010-tasks/completed/old-fleet-T2.md").read_text() == foreign


def test_task_numbers_is_a_range_unless_there_are_gaps() -> None:
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE tasks (id INTEGER PRIMARY KEY)")
    assert 1 not in vault_store.task_numbers(conn)
    conn.executemany("INSERT INTO tasks (id) VALUES (?)", [(i,) for i in range(1, 10_001)])
    numbers = vault_store.task_numbers(conn)
    assert numbers == range(1, 10_001) and 10_000 in numbers and 10_001 not in numbers
    conn.execute("DELETE FROM tasks WHERE id = 5")  # an old daemon's database, upgraded: gaps
    gapped = vault_store.task_numbers(conn)
    assert 5 not in gapped and 4 in gapped and 10_000 in gapped and isinstance(gapped, frozenset)
