"""The vault sync wired into the real server: VAULT_PATH turns it on, the built-in job is listed, the
first cycle writes every task and pushes to a bare remote, a finished task is synced soon after
(debounced) and moves folder, TriggerSync and GetSyncStatus answer, a person's edit pushed meanwhile
survives, and a path that is not a git clone stops the start saying why."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import ROOT, start_server, subprocess_env
from tests.http_util import curl

PERSON = ("-c", "user.name=Person", "-c", "user.email=person@example.com")


def git(cwd: Path, *args: str) -> str:
    out = subprocess.run(["git", *PERSON, *args], cwd=cwd, capture_output=True, text=True, check=False)
    assert out.returncode == 0, f"git {' '.join(args)}: {out.stdout}{out.stderr}"
    return out.stdout


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
    cfg = tmp_path / "gitconfig"
    cfg.write_text("[init]\n\tdefaultBranch = main\n")
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(cfg))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    remote = tmp_path / "remote.git"
    git(tmp_path, "init", "-q", "--bare", "-b", "main", str(remote))
    seed = tmp_path / "seed"
    git(tmp_path, "clone", "-q", str(remote), str(seed))
    (seed / "README.md").write_text("# the vault\n")
    git(seed, "add", "README.md")
    git(seed, "commit", "-q", "-m", "seed")
    git(seed, "push", "-q", "origin", "HEAD:main")
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
        assert curl("GET", srv.http_url + "/api/v1/sync").json == {
            "enabled": False,
            "last_sync": None,
            "running": False,
        }
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
