"""The vault pushes to a GitHub-like remote with a broker service token: the real server, configured with
the GitHub App stand-in, keeps a vault whose origin is a real git smart-HTTP server (``git http-backend``)
that takes only tokens the stand-in issued and still honours. The token is audited as the vault's and is
in no log, no file of the vault's .git, no sync status and no run; a token GitHub no longer takes fails
the run saying where, keeps the commit, and never leaves the vault mid-rebase."""

from __future__ import annotations

import base64
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from lobwife_server.broker.token_cache import token_digest
from tests.conftest import ServerProcess, start_server
from tests.fakes.git_http import GitHttp
from tests.fakes.github import AppKey, FakeGitHub, Installation
from tests.git_util import git, isolate_git_config, seeded_bare
from tests.http_util import curl

REPO = "lobmob/vault"
SYNC = "/api/jobs/lobwife-vault-sync"


@dataclass
class World:
    gh: FakeGitHub
    remote: GitHttp
    bare: Path
    vault: Path
    person: Path
    state: Path

    def serve(self) -> ServerProcess:
        env = {
            **self.gh.env(),
            "LOBWIFE_BROKER_GITHUB_TIMEOUT": "3",
            "VAULT_PATH": str(self.vault),
            "VAULT_SYNC_INTERVAL": "3600",
        }
        return start_server(self.state, "--log-level", "debug", env=env)

    def on_remote(self, rel: str) -> str | None:
        out = subprocess.run(["git", "show", f"main:{rel}"], cwd=self.bare, capture_output=True, text=True)
        return out.stdout if out.returncode == 0 else None

    def pushed_tokens(self) -> list[str]:
        """The tokens of the pushes the remote took."""
        return [
            s.token
            for s in self.remote.requests
            if s.path.endswith("/git-receive-pack") and s.status == 200 and s.token
        ]

    def person_push(self, rel: str, text: str, message: str) -> None:
        git(self.person, "pull", "-q", "--rebase", "origin", "main")
        path = self.person / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        git(self.person, "add", rel)
        git(self.person, "commit", "-q", "-m", message)
        git(self.person, "push", "-q", "origin", "HEAD:main")


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, app_key: AppKey) -> Iterator[World]:
    isolate_git_config(tmp_path, monkeypatch)
    with (
        FakeGitHub(key=app_key, installations=[Installation(1001, "lobmob", ["vault", "app"])]) as gh,
        GitHttp(tmp_path / "git", gh) as remote,
    ):
        bare = remote.bare(REPO)
        seeded_bare(tmp_path, bare)
        # A person works on the bare repository directly (their own access is not under test).
        person = tmp_path / "person"
        git(tmp_path, "clone", "-q", str(bare), str(person))
        vault = tmp_path / "vault"
        git(tmp_path, "clone", "-q", str(bare), str(vault))
        # The vault's origin is the HTTP remote, with no credential in the URL or the clone's config.
        git(vault, "remote", "set-url", "origin", remote.url(REPO))
        yield World(gh, remote, bare, vault, person, tmp_path / "state")


def sync_run(srv: ServerProcess, timeout: float = 20.0) -> dict[str, Any]:
    """Runs the built-in sync job now and returns its finished run."""
    r = curl("POST", srv.http_url + SYNC + "/trigger")
    assert r.status == 200, r.body
    run_id = r.json["run"]["run_id"]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = curl("GET", srv.http_url + f"/api/v1/jobs/lobwife-vault-sync/runs/{run_id}").json
        if run["status"] not in ("pending", "running"):
            return dict(run)
        time.sleep(0.1)
    raise AssertionError(f"run {run_id} not finished within {timeout}s")


def secrets_of(token: str) -> list[bytes]:
    basic = base64.b64encode(f"x-access-token:{token}".encode()).decode()
    return [token.encode(), token[4:20].encode(), basic.encode()]


def files_under(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file() and not p.is_symlink()}


def test_the_vault_pushes_with_a_service_token_it_never_keeps(world: World) -> None:
    # The remote takes no anonymous git at all, as GitHub would not for a private repository.
    anonymous = subprocess.run(
        ["git", "ls-remote", world.remote.url(REPO)],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "GIT_TERMINAL_PROMPT": "0", "HOME": str(world.state.parent)},
        timeout=30,
    )
    assert anonymous.returncode != 0 and world.remote.requests[-1].status == 401
    srv = world.serve()
    try:
        u = srv.http_url
        assert curl("POST", u + "/api/v1/tasks", {"name": "Fix login", "type": "swe"}).status == 201
        assert curl("POST", u + "/api/v1/tasks", {"name": "Write docs"}).status == 201
        assert curl("PATCH", u + "/api/v1/tasks/T1", {"status": "completed"}).status == 200
        run = sync_run(srv)
        assert run["status"] == "success", run
        assert "pushed True" in run["output"], run
        assert "status: completed" in (world.on_remote("010-tasks/completed/T1.md") or "")
        assert world.on_remote("010-tasks/active/T2.md") is not None
        assert "lobwife" in git(world.bare, "log", "--format=%an", "main").split()
        # The push authenticated with one installation token the stand-in issued for the whole installation.
        pushed = world.pushed_tokens()
        assert pushed and len(set(pushed)) == 1
        token = pushed[0]
        issued = world.gh.token_state(token)
        assert issued is not None and issued.repositories is None
        # Audited as the vault's service token, with the digest IssueServiceToken records.
        audit = curl("GET", u + "/api/token/audit?limit=100").json
        rows = [e for e in audit if e["action"] == "service_token_issued"]
        assert len(rows) == 1, audit
        assert (rows[0]["task_id"], rows[0]["identity"]) == ("lobwife-vault", "lobwife-vault")
        assert rows[0]["token_sha256_prefix"] == token_digest(token)
        # A second cycle with a new change reuses the cached token (audited as reused).
        assert curl("PATCH", u + "/api/v1/tasks/T2", {"status": "failed"}).status == 200
        assert sync_run(srv)["status"] == "success"
        assert world.on_remote("010-tasks/failed/T2.md") is not None
        assert set(world.pushed_tokens()) == {token}
        audit = curl("GET", u + "/api/token/audit?limit=100").json
        assert [e["reused"] for e in audit if e["action"] == "service_token_issued"] == [True, False]
        seen = {
            "sync status": curl("GET", u + "/api/v1/sync").body,
            "runs": curl("GET", u + "/api/v1/jobs/lobwife-vault-sync/runs").body,
            "job": curl("GET", u + SYNC).body,
        }
    finally:
        assert srv.terminate() == 0
    seen["log"] = srv.log().encode()
    assert b"vault git push" in seen["log"]  # the debug log of git commands was on
    for rel, data in files_under(world.vault / ".git").items():
        seen[f".git/{rel}"] = data
    for rel, data in files_under(world.state).items():
        seen[f"state/{rel}"] = data
    assert "url = " + world.remote.url(REPO) in (world.vault / ".git" / "config").read_text()
    for secret in secrets_of(token):
        for where, data in seen.items():
            assert secret not in data, f"the token is in {where}"


def test_a_token_github_no_longer_takes_fails_one_run_and_the_next_gets_another(world: World) -> None:
    srv = world.serve()
    reasons: list[str] = []
    try:
        u = srv.http_url
        assert curl("POST", u + "/api/v1/tasks", {"name": "Fix login"}).status == 201
        assert sync_run(srv)["status"] == "success"
        token = world.pushed_tokens()[-1]
        # A person pushes meanwhile, and GitHub ends the token before its expiry while the broker's cache
        # still holds it: the cycle's first pull is refused.
        world.person_push("010-tasks/active/notes.md", "people's notes\n", "notes")
        world.gh.expire(token)
        assert curl("PATCH", u + "/api/v1/tasks/T1", {"status": "completed"}).status == 200
        run = sync_run(srv)
        assert run["status"] == "failed", run
        assert "the remote refused the token from the broker (a new one is asked for next cycle)" in run["reason"]
        assert "git pull --rebase failed" in run["reason"] and "could not read Username" in run["reason"], run
        assert world.remote.requests[-1].status == 401
        assert not (world.vault / ".git" / "rebase-merge").exists()
        assert not (world.vault / ".git" / "rebase-apply").exists()
        assert world.on_remote("010-tasks/completed/T1.md") is None
        reasons.append(run["reason"])
        # The broker dropped the refused token: the next cycle, on the same server, gets another and pushes.
        assert sync_run(srv)["status"] == "success"
        assert world.pushed_tokens()[-1] != token and len(world.gh.issued) == 2
        assert "status: completed" in (world.on_remote("010-tasks/completed/T1.md") or "")
        assert world.on_remote("010-tasks/active/notes.md") == "people's notes\n"

        # This time GitHub stops taking the token between the cycle's pull and its push: the pull
        # rebases, the push is refused, the commit is kept, the vault is clean.
        def expire_all() -> None:
            for live in world.gh.live_tokens():
                world.gh.expire(live)

        world.remote.before_push = expire_all
        assert curl("PATCH", u + "/api/v1/tasks/T1", {"priority": "high"}).status == 200
        run = sync_run(srv)
        assert run["status"] == "failed", run
        assert "git push failed; the commit is kept for the next cycle" in run["reason"], run
        assert "the remote refused the token from the broker" in run["reason"], run
        reasons.append(run["reason"])
        assert not (world.vault / ".git" / "rebase-merge").exists()
        assert not (world.vault / ".git" / "rebase-apply").exists()
        assert git(world.vault, "status", "--porcelain") == ""
        assert git(world.vault, "rev-list", "--count", "origin/main..HEAD").strip() == "1"
        assert "priority: high" not in (world.on_remote("010-tasks/completed/T1.md") or "")
        # GitHub takes tokens again: the next cycle gets a fresh one and pushes the kept commit.
        world.remote.before_push = None
        assert sync_run(srv)["status"] == "success"
        assert "priority: high" in (world.on_remote("010-tasks/completed/T1.md") or "")
        assert len(world.gh.issued) == 3
    finally:
        assert srv.terminate() == 0
    log = srv.log()
    assert log.count("broker: a remote refused a service token; dropped from the cache") == 2
    for secret in (s for t in world.gh.issued for s in secrets_of(t)):
        for where, text in (("log", log), *enumerate(reasons)):
            assert secret.decode() not in text, f"a token is in {where!r}"


def test_github_failing_to_give_a_token_fails_the_run_and_the_log_says_why(world: World) -> None:
    world.gh.fail_next(50, status=502, endpoint="access_tokens")
    srv = world.serve()
    try:
        assert curl("POST", srv.http_url + "/api/v1/tasks", {"name": "Fix login"}).status == 201
        run = sync_run(srv)
        assert run["status"] == "failed" and "the token provider failed: " in run["reason"], run
        assert "GitHub" in run["reason"] or "502" in run["reason"], run  # the broker's own words: why
        # Nothing reached the remote: no token, no git request at all.
        assert world.remote.requests == [] and world.on_remote("010-tasks/active/T1.md") is None
        audit = curl("GET", srv.http_url + "/api/token/audit").json
        assert "service_token_issued" not in [e["action"] for e in audit]
        world.gh.clear_faults()
        assert sync_run(srv)["status"] == "success"  # GitHub is back: the next cycle pushes
        assert world.on_remote("010-tasks/active/T1.md") is not None
    finally:
        assert srv.terminate() == 0
    assert "vault: no service token from the broker: " in srv.log()
