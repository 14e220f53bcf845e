"""``lobwife vault import`` as a real subprocess against the real server, on a vault that is a real
git clone: a folder of the old fleet's files becomes tasks with an ``imported`` event each; a second
run changes nothing; ``--dry-run`` changes nothing; a file the server refuses is reported and the
others are imported; a changed file is skipped; an interrupted import is completed; the vault's files
are never touched."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from lobwife.cli import SERVER_MISSING, main
from lobwife.client import Client
from lobwife_server.vault import importer
from tests.conftest import ROOT, ServerProcess, subprocess_env
from tests.git_util import git, isolate_git_config

FILES = {
    "completed/2026-01-15-fix-login-redirect.md": (
        "---\ntitle: Fix the login redirect\nstatus: done\nrepos: org/app\npriority: high\n"
        "created: 2026-01-15T10:00:00Z\ncompleted: 2026-01-16T12:00:00Z\n---\n# Fix the login redirect\n"
    ),
    # A copy the old fleet left behind when it moved the file: the finished one is imported.
    "active/2026-01-15-fix-login-redirect.md": "---\ntitle: Fix the login redirect\nstatus: active\n---\n",
    "active/2026-02-01-tidy-the-docs.md": "---\ntype: docs\n---\nNo status: queued, from the folder.\n",
    "failed/T7.md": "---\ntask_id: T7\nname: An old fleet task\nstatus: failed\n---\n",
    "active/2026-02-02-bad-repo.md": "---\nname: Refused\nrepos: [not a repo!!]\n---\n",
    "active/2026-02-03-broken.md": "---\nname: [unclosed\n---\n",
    "active/meeting.md": "---\nname: a person's note\n---\n",
}


def run_import(server: ServerProcess, vault: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lobwife", "vault", "import", str(vault), *extra],
        env=subprocess_env(LOBWIFE_ADDR=server.grpc_addr),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def lines(out: str) -> dict[str, str]:
    """``path: what happened`` lines by path (the summary line has no path)."""
    return {k: v for k, _, v in (line.partition(": ") for line in out.splitlines()) if k.startswith("010-tasks/")}


def counts(lw: Client) -> tuple[int, int]:
    tasks = list(lw.iter_tasks())
    return len(tasks), sum(len(list(lw.iter_events(t.task_id))) for t in tasks)


@pytest.fixture
def vault(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    isolate_git_config(tmp_path, monkeypatch)
    root = tmp_path / "vault"
    root.mkdir()
    git(root, "init", "-q")
    for rel, text in FILES.items():
        path = root / "010-tasks" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "the old fleet's vault")
    return root


def test_import_a_vault_once(server: ServerProcess, vault: Path) -> None:
    with Client(server.grpc_addr) as lw:
        own = lw.create_task("Already lobwife's", repos=["org/app"])
        (vault / "010-tasks" / "active" / f"{own.task_id}.md").write_text(f"---\ntask_id: {own.task_id}\n---\n")
        git(vault, "add", "-A")
        git(vault, "commit", "-q", "-m", "lobwife's own file")
        before = counts(lw)

        # A dry run says what would happen and changes nothing.
        dry = run_import(server, vault, "--dry-run")
        assert dry.returncode == 1, dry.stderr  # the broken file fails the run, dry or not
        said = lines(dry.stdout)
        assert said["010-tasks/completed/2026-01-15-fix-login-redirect.md"] == (
            'would create "Fix the login redirect" (completed)'
        )
        assert said["010-tasks/active/2026-02-01-tidy-the-docs.md"] == (
            'would create "Tidy the docs" (queued); note: no name in the file: named after its file name'
        )
        assert said[f"010-tasks/active/{own.task_id}.md"] == f"already a task {own.task_id}"
        assert said["010-tasks/active/2026-02-03-broken.md"].startswith("failed (frontmatter does not parse")
        assert said["010-tasks/active/meeting.md"].startswith("skipped (not a task file name")
        assert said["010-tasks/active/2026-01-15-fix-login-redirect.md"] == (
            "skipped (the same file name as 010-tasks/completed/2026-01-15-fix-login-redirect.md,"
            " which is the one imported)"
        )
        assert dry.stdout.splitlines()[-1].startswith("dry run, nothing changed: 8 files:")
        assert counts(lw) == before

        # The import: the refused file is reported with the server's message, the others imported.
        first = run_import(server, vault)
        assert first.returncode == 1, first.stderr
        said = lines(first.stdout)
        created = {p: v.removeprefix("created ").split(";")[0] for p, v in said.items() if v.startswith("created ")}
        assert sorted(created) == [
            "010-tasks/active/2026-02-01-tidy-the-docs.md",
            "010-tasks/completed/2026-01-15-fix-login-redirect.md",
            "010-tasks/failed/T7.md",  # the server had no T7: a new task
        ]
        refused = said["010-tasks/active/2026-02-02-bad-repo.md"]
        assert refused.startswith("failed (INVALID_ARGUMENT: ") and "repos[0]" in refused
        assert first.stdout.splitlines()[-1] == "8 files: 3 created, 1 already a task, 2 skipped, 2 failed"
        fix = lw.get_task(created["010-tasks/completed/2026-01-15-fix-login-redirect.md"])
        assert (fix.name, fix.priority, list(fix.repos)) == ("Fix the login redirect", "high", ["org/app"])
        assert fix.status == 3 and fix.slug == "fix-login-redirect" and fix.created_by == importer.ACTOR
        events = [e for e in lw.iter_events(fix.task_id) if e.event_type == "imported"]
        assert len(events) == 1
        assert json.loads(events[0].detail) == {
            "source": "010-tasks/completed/2026-01-15-fix-login-redirect.md",
            "request_id": "vault-import:2026-01-15-fix-login-redirect",
            "created": "2026-01-15T10:00:00Z",
            "completed": "2026-01-16T12:00:00Z",
        }
        after_first = counts(lw)
        assert after_first == (before[0] + 3, before[1] + 6)  # a created and an imported event each

        # A second run changes nothing, and says so.
        second = run_import(server, vault, "--json")
        assert second.returncode == 1
        report = json.loads(second.stdout)
        by_path = {f["path"]: f for f in report["files"]}
        for path, task_id in created.items():
            assert (by_path[path]["result"], by_path[path]["task_id"]) == ("already imported", task_id)
        assert report["summary"]["created"] == 0 and report["summary"]["already imported"] == 3
        assert counts(lw) == after_first
        assert run_import(server, vault, "--dry-run").returncode == 1
        assert counts(lw) == after_first

        # A file changed since its import is skipped, not imported again.
        tidy = vault / "010-tasks" / "active" / "2026-02-01-tidy-the-docs.md"
        tidy.write_text("---\ntype: docs\npriority: high\n---\n")
        git(vault, "commit", "-q", "-am", "a person's edit")
        changed = lines(run_import(server, vault).stdout)
        tidy_id = created["010-tasks/active/2026-02-01-tidy-the-docs.md"]
        assert changed["010-tasks/active/2026-02-01-tidy-the-docs.md"].split(";")[0] == (
            f"skipped (imported before as {tidy_id}, changed since)"
        )
        assert counts(lw) == after_first

        # An import interrupted between the create and its event is completed by the next run.
        late = vault / "010-tasks" / "completed" / "2026-02-04-late.md"
        late.write_text("---\nname: Late\n---\n")
        git(vault, "add", "-A")
        git(vault, "commit", "-q", "-m", "one more")
        plan = next(f.plan for f in importer.scan(vault) if f.path.endswith("2026-02-04-late.md"))
        assert plan is not None
        half = lw.create_task(**importer.create_kwargs(plan.request))  # the create, and then a crash
        third = lines(run_import(server, vault).stdout)
        assert third["010-tasks/completed/2026-02-04-late.md"] == (
            f"already imported {half.task_id}; note: its imported event was missing (an interrupted run)"
            " and is added now"
        )
        assert [e.event_type for e in lw.iter_events(half.task_id)] == ["imported", "created"]
        assert counts(lw) == (after_first[0] + 1, after_first[1] + 2)
        again = lines(run_import(server, vault).stdout)
        assert again["010-tasks/completed/2026-02-04-late.md"] == f"already imported {half.task_id}"
        assert counts(lw) == (after_first[0] + 1, after_first[1] + 2)

    # The vault's files are exactly as committed: nothing written, moved or renamed.
    assert git(vault, "status", "--porcelain", "--untracked-files=all") == ""


def test_import_usage_errors(
    server: ServerProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = run_import(server, tmp_path / "nope")
    assert missing.returncode == 2 and "error: PATH:" in missing.stderr and "not a folder" in missing.stderr
    empty = run_import(server, tmp_path)
    assert empty.returncode == 2 and "no 010-tasks folder" in empty.stderr
    # A client-only install (no server package): said, as `lobwife serve` says it.
    monkeypatch.setenv("LOBWIFE_ADDR", server.grpc_addr)
    monkeypatch.setitem(sys.modules, "lobwife_server.vault.importer", None)
    assert main(["vault", "import", str(tmp_path)]) == 2
    assert capsys.readouterr().err.splitlines()[0] == SERVER_MISSING


def test_a_t_file_of_another_task_is_a_new_task_and_an_odd_file_fails_alone(
    server: ServerProcess, tmp_path: Path
) -> None:
    with Client(server.grpc_addr) as lw:
        t1 = lw.create_task("Fix login", repos=["org/app"])
        t2 = lw.create_task("Tidy the docs", repos=["org/app"])
        t3 = lw.create_task("The same task", repos=["org/app"])
        t3_created = t3.created_at.ToDatetime().strftime("%Y-%m-%dT%H:%M:%SZ")
        files = {
            # The old fleet's T1 and T2: the server's T1 and T2 are other tasks.
            f"active/{t1.task_id}.md": (
                f"---\ntask_id: {t1.task_id}\nname: The old fleet's T1\ncreated: 2025-01-01T00:00:00Z\n---\n"
            ),
            f"active/{t2.task_id}.md": f"---\ntask_id: {t2.task_id}\nname: Something else\n---\n",
            # Lobwife's T3 (created the same minute), its name changed by a person: still T3.
            f"completed/{t3.task_id}.md": (
                f"---\ntask_id: {t3.task_id}\nname: Renamed by a person\ncreated: '{t3_created}'\n---\n"
            ),
            # An estimate no float holds: that file fails, the run goes on.
            "active/2026-01-01-huge-estimate.md": "---\nname: Huge\nestimate_minutes: " + "9" * 400 + "\n---\n",
            "active/2026-01-02-fine.md": "---\nname: Fine\n---\n",
        }
        for rel, text in files.items():
            path = tmp_path / "vault" / "010-tasks" / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        before = len(list(lw.iter_tasks()))

        out = run_import(server, tmp_path / "vault")
        assert out.returncode == 1, out.stderr  # the one failed file; no traceback
        assert "Traceback" not in out.stderr
        said = lines(out.stdout)
        one = said[f"010-tasks/active/{t1.task_id}.md"]
        # The reasons are the vault sync's own rule's (render.other_task): the sync would hold these back too.
        assert one.startswith("created T") and one.endswith(
            f"; note: the number {t1.task_id} is taken by another task (it was created 2025-01-01T00:00:00Z,"
            f" and task {t1.task_id} was created {t1.created_at.ToDatetime().strftime('%Y-%m-%dT%H:%M:%SZ')}):"
            " this file is a new task"
        )
        two = said[f"010-tasks/active/{t2.task_id}.md"]
        assert two.startswith("created T") and two.endswith(
            f"; note: the number {t2.task_id} is taken by another task (it is about 'Something else', and task"
            f" {t2.task_id} is 'Tidy the docs'): this file is a new task"
        )
        assert said[f"010-tasks/completed/{t3.task_id}.md"] == f"already a task {t3.task_id}"
        assert said["010-tasks/active/2026-01-01-huge-estimate.md"] == (
            "failed (a value cannot be sent: estimate_minutes is too large (400 digits))"
        )
        assert said["010-tasks/active/2026-01-02-fine.md"].startswith("created T")
        assert out.stdout.splitlines()[-1] == "5 files: 3 created, 1 already a task, 1 failed"
        new = lw.get_task(one.split(";")[0].removeprefix("created "))
        assert new.name == "The old fleet's T1" and new.id > t3.id
        assert lw.get_task(t1.task_id).name == "Fix login"  # the server's T1 is as it was
        assert len(list(lw.iter_tasks())) == before + 3

        # Once: a second run finds the tasks the first one made.
        again = lines(run_import(server, tmp_path / "vault").stdout)
        assert again[f"010-tasks/active/{t1.task_id}.md"].startswith(f"already imported {new.task_id}; note:")
        assert len(list(lw.iter_tasks())) == before + 3
    for rel, text in files.items():
        assert (tmp_path / "vault" / "010-tasks" / rel).read_text() == text
