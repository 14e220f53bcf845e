"""Real git for the vault tests: a bare repository as the remote, a clone as the vault, another
clone as a person who edits and pushes at the same time."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from lobwife.v1 import tasks_pb2
from tests.git_util import git, isolate_git_config, seeded_bare

T0 = 1_771_000_000  # 2026-02-13T16:26:40Z


@dataclass
class Repos:
    remote: Path
    vault: Path
    person: Path
    outside: Path  # a directory out of the vault that nothing may write into

    def person_pull(self) -> None:
        git(self.person, "pull", "-q", "--rebase", "origin", "main")

    def person_commit(self, message: str) -> None:
        git(self.person, "add", "-A")
        git(self.person, "commit", "-q", "-m", message)

    def person_push(self) -> None:
        git(self.person, "push", "-q", "origin", "HEAD:main")

    def remote_file(self, rel: str) -> str:
        return git(self.remote, "show", f"main:{rel}")

    def commits(self, where: Path | None = None, ref: str = "HEAD") -> int:
        return int(git(where or self.vault, "rev-list", "--count", ref).strip())

    def push_when_lobwife_commits(self) -> None:
        """The person's push lands between lobwife's commit and its push (a post-commit hook, once)."""
        hook = self.vault / ".git" / "hooks" / "post-commit"
        hook.write_text(
            "#!/bin/sh\n"
            'rm -f "$0"\n'
            "unset GIT_DIR GIT_INDEX_FILE GIT_WORK_TREE GIT_PREFIX\n"
            f"cd '{self.person}' && git push -q origin HEAD:main\n"
        )
        hook.chmod(0o755)


@pytest.fixture(autouse=True)
def _git_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    isolate_git_config(tmp_path, monkeypatch)


@pytest.fixture
def repos(tmp_path: Path) -> Repos:
    remote = tmp_path / "remote.git"
    seeded_bare(tmp_path, remote)
    vault = tmp_path / "vault"
    person = tmp_path / "person"
    git(tmp_path, "clone", "-q", str(remote), str(vault))
    git(tmp_path, "clone", "-q", str(remote), str(person))
    outside = tmp_path / "outside"
    outside.mkdir()
    return Repos(remote, vault, person, outside)


def task(number: int, status: str = "active", name: str | None = None, **fields: object) -> tasks_pb2.Task:
    """A task as the tasks domain hands it over; times are fixed so that renders are repeatable."""
    t = tasks_pb2.Task(
        id=number,
        task_id=f"T{number}",
        name=name if name is not None else f"Task {number}",
        type="code",
        status=tasks_pb2.TaskStatus.Value(f"TASK_STATUS_{status.upper()}"),
        priority="high",
        repos=["org/app"],
    )
    t.created_at.seconds = T0 + number
    t.updated_at.seconds = T0 + number + 60
    if status in ("completed", "failed", "cancelled"):
        t.completed_at.seconds = T0 + number + 120
    for k, v in fields.items():
        if k.endswith("_at"):
            getattr(t, k).seconds = int(v)  # type: ignore[call-overload]
        elif isinstance(v, list):
            field = getattr(t, k)
            del field[:]
            field.extend(v)
        else:
            setattr(t, k, v)
    return t
