"""``lobwife broker ...`` and ``lobwife auth ...`` as subprocesses against the real server, run with
``--auth enforce`` and pointed at the GitHub stand-in (tests/fakes/github.py).

The admin token comes from ``lobwife auth mint --state-dir`` on the server's own state folder; every
later command sends it through ``LOBWIFE_TOKEN`` or ``--token``. What a token must never do: show up
on a command's stderr or in an error's text.
"""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from lobwife import cli
from lobwife.cli import main
from lobwife_server.broker.service import token_digest
from tests.conftest import ROOT, ServerProcess, start_server, subprocess_env
from tests.fakes.github import AppKey, FakeGitHub


@dataclass
class Fleet:
    server: ServerProcess
    gh: FakeGitHub
    admin: str  # an admin token, minted by the CLI from the state folder


def lobwife(
    srv: ServerProcess, *args: str, token: str | None = None, timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    env = {"LOBWIFE_ADDR": srv.grpc_addr, "LOBWIFE_TOKEN": token or ""}
    return subprocess.run(
        [sys.executable, "-m", "lobwife", *args],
        env=subprocess_env(**env),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def fake_repos(gh: FakeGitHub, token: str) -> list[str]:
    req = urllib.request.Request(gh.url + "/installation/repositories", headers={"Authorization": f"token {token}"})
    with urllib.request.urlopen(req, timeout=5) as r:
        return [x["full_name"] for x in json.load(r)["repositories"]]


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    state = tmp_path_factory.mktemp("cli-broker") / "state"
    with FakeGitHub(key=AppKey.generate()) as gh:
        env = {**gh.env(), "LOBWIFE_BROKER_GITHUB_TIMEOUT": "3"}
        srv = start_server(state, "--auth", "enforce", env=env)
        try:
            minted = lobwife(srv, "auth", "mint", "--state-dir", str(state), "--role", "admin", "--subject", "ops")
            assert minted.returncode == 0, minted.stderr
            yield Fleet(srv, gh, minted.stdout.strip())
        finally:
            srv.terminate()


def test_auth_mint_prints_the_token_alone_and_whoami_reads_it(fleet: Fleet) -> None:
    srv = fleet.server
    minted = lobwife(srv, "auth", "mint", "--state-dir", str(srv.state_dir), "--role", "reader", "--ttl", "2h")
    assert minted.returncode == 0, minted.stderr
    token = minted.stdout.strip()
    assert minted.stdout == token + "\n" and token.count(".") == 2  # one line: $(lobwife auth mint ...) works
    assert token not in minted.stderr and "subject reader, expires " in minted.stderr

    who = lobwife(srv, "auth", "whoami", "--json", token=token)
    assert who.returncode == 0, who.stderr
    data = json.loads(who.stdout)
    assert (data["role"], data["subject"], data["source"], data["auth_mode"]) == (
        "reader",
        "reader",
        "lobwife",
        "enforce",
    )
    # --token does what LOBWIFE_TOKEN does; text output is `key: value` lines.
    who = lobwife(srv, "--token", fleet.admin, "auth", "whoami")
    assert who.returncode == 0, who.stderr
    fields = {k.strip(): v.strip() for k, v in (line.split(":", 1) for line in who.stdout.splitlines())}
    assert (fields["role"], fields["subject"], fields["auth_mode"]) == ("admin", "ops", "enforce")


def test_auth_mint_through_the_server_needs_an_admin(fleet: Fleet) -> None:
    srv = fleet.server
    created = lobwife(srv, "tasks", "create", "a task for a worker", "--json", token=fleet.admin)
    assert created.returncode == 0, created.stderr
    ref = json.loads(created.stdout)["task_id"]
    minted = lobwife(srv, "auth", "mint", "--server", "--role", "task", "--task", ref, "--json", token=fleet.admin)
    assert minted.returncode == 0, minted.stderr
    data = json.loads(minted.stdout)
    assert data["subject"] == f"task-{ref}" and data["key_id"] and data["expires_at"]
    who = json.loads(lobwife(srv, "auth", "whoami", "--json", token=data["token"]).stdout)
    assert (who["role"], who["task_id"]) == ("task", ref)
    # A task token may not mint; the refusal is exit 1 and does not repeat the token.
    refused = lobwife(srv, "auth", "mint", "--server", "--role", "admin", token=data["token"])
    assert refused.returncode == 1 and refused.stderr.startswith("error: PERMISSION_DENIED: ")
    assert data["token"] not in refused.stderr and refused.stdout == ""


def test_no_or_a_bad_token_is_refused_without_echoing_it(fleet: Fleet) -> None:
    srv = fleet.server
    none = lobwife(srv, "broker", "status")
    assert none.returncode == 1 and none.stderr.startswith("error: UNAUTHENTICATED: ")
    forged = fleet.admin[:-6] + "AAAAAA"  # the admin token with its signature broken
    for args in (("--token", forged, "broker", "status"), ("broker", "audit")):
        bad = lobwife(srv, *args, token=forged)
        assert bad.returncode == 1 and bad.stderr.startswith("error: UNAUTHENTICATED: "), bad.stderr
        assert forged not in bad.stderr and forged not in bad.stdout
        assert forged[-40:] not in bad.stderr
    # A token that cannot be sent at all is a usage error naming where it came from, not what it is.
    spaced = "abc def" + fleet.admin
    unsendable = lobwife(srv, "auth", "whoami", token=spaced)
    assert unsendable.returncode == 2 and "LOBWIFE_TOKEN" in unsendable.stderr and spaced not in unsendable.stderr
    unsendable = lobwife(srv, "--token", spaced, "auth", "whoami")
    assert unsendable.returncode == 2 and unsendable.stderr.startswith("error: --token: ")
    assert fleet.admin not in unsendable.stderr


def test_the_token_can_come_from_a_file(fleet: Fleet, tmp_path: Path) -> None:
    srv = fleet.server
    path = tmp_path / "token"
    path.write_text(fleet.admin + "\n")
    who = lobwife(srv, "--token-file", str(path), "auth", "whoami", "--json")
    assert who.returncode == 0, who.stderr
    assert json.loads(who.stdout)["subject"] == "ops"
    env = {"LOBWIFE_ADDR": srv.grpc_addr, "LOBWIFE_TOKEN_FILE": str(path)}
    by_env = subprocess.run(
        [sys.executable, "-m", "lobwife", "auth", "whoami", "--json"],
        env=subprocess_env(**env),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert by_env.returncode == 0, by_env.stderr
    assert json.loads(by_env.stdout)["subject"] == "ops"
    missing = lobwife(srv, "--token-file", str(tmp_path / "nope"), "auth", "whoami")
    assert missing.returncode == 2 and missing.stderr.startswith("error: --token-file: cannot read "), missing.stderr
    both = lobwife(srv, "--token", fleet.admin, "--token-file", str(path), "auth", "whoami")
    assert both.returncode == 2 and "not both" in both.stderr and fleet.admin not in both.stderr


def test_broker_status_with_a_task_credential_shows_what_it_may(fleet: Fleet) -> None:
    srv = fleet.server
    created = lobwife(srv, "tasks", "create", "a worker's task", "--json", token=fleet.admin)
    assert created.returncode == 0, created.stderr
    ref = json.loads(created.stdout)["task_id"]
    minted = lobwife(srv, "auth", "mint", "--state-dir", str(srv.state_dir), "--role", "task", "--task", ref)
    assert minted.returncode == 0, minted.stderr
    status = lobwife(srv, "broker", "status", token=minted.stdout.strip())
    assert status.returncode == 0, status.stderr
    assert "enabled:             yes" in status.stdout  # the summary is public
    assert "registrations not shown: listing them needs a reader, service or admin credential" in status.stderr
    data = json.loads(lobwife(srv, "broker", "status", "--json", token=minted.stdout.strip()).stdout)
    assert data["broker"]["enabled"] is True and data["registrations"] is None


def test_register_token_audit_deregister(fleet: Fleet) -> None:
    srv, admin = fleet.server, fleet.admin
    repos = ("lobmob/repo1", "lobmob/repo2")
    reg = lobwife(srv, "broker", "register", "lobster-42", *repos, "--lobster-type", "swe", token=admin)
    assert (reg.returncode, reg.stdout) == (0, "registered lobster-42: lobmob/repo1, lobmob/repo2\n"), reg.stderr

    issued = lobwife(srv, "broker", "token", "lobster-42", token=admin)
    assert issued.returncode == 0, issued.stderr
    token = issued.stdout.strip()
    assert issued.stdout == token + "\n" and token.startswith("ghs_")  # GH_TOKEN=$(lobwife broker token ...)
    assert fake_repos(fleet.gh, token) == ["lobmob/repo1", "lobmob/repo2"]  # GitHub takes it, scoped
    assert token not in issued.stderr and issued.stderr.startswith("expires ")
    assert "lobmob/repo1, lobmob/repo2" in issued.stderr
    again = lobwife(srv, "broker", "token", "lobster-42", "--json", token=admin)
    data = json.loads(again.stdout)
    assert data["token"] == token and data["repos"] == ["lobmob/repo1", "lobmob/repo2"] and data["expires_at"]

    status = lobwife(srv, "broker", "status", token=admin)
    assert status.returncode == 0, status.stderr
    assert "enabled:             yes" in status.stdout and "app_id:              4242" in status.stdout
    row = next(line for line in status.stdout.splitlines() if line.startswith("lobster-42"))
    assert row.split()[:5] == ["lobster-42", "active", "-", "swe", "2"]
    assert token not in status.stdout
    data = json.loads(lobwife(srv, "broker", "status", "--json", token=admin).stdout)
    assert data["broker"]["enabled"] is True and data["registrations"]["lobster-42"]["token_count"] == 2

    audit = lobwife(srv, "broker", "audit", "--task", "lobster-42", "--json", token=admin)
    entries = json.loads(audit.stdout)["entries"]
    assert [e["action"] for e in entries] == ["token_issued", "token_issued", "task_registered"]
    assert [e["reused"] for e in entries[:2]] == [True, False]
    assert entries[0]["token_sha256_prefix"] == token_digest(token) and all("ops" in e["identity"] for e in entries)
    assert token not in audit.stdout
    # One entry a page: the hint to go on is on stderr, and --all fetches them all.
    paged = lobwife(srv, "broker", "audit", "--task", "lobster-42", "--limit", "1", token=admin)
    assert len(paged.stdout.splitlines()) == 2 and "more: --page-token " in paged.stderr
    every = lobwife(srv, "broker", "audit", "--task", "lobster-42", "--limit", "1", "--all", "--json", token=admin)
    assert len(json.loads(every.stdout)["entries"]) == 3

    gone = lobwife(srv, "broker", "deregister", "lobster-42", token=admin)
    assert (gone.returncode, gone.stdout) == (0, "deregistered lobster-42\n"), gone.stderr
    refused = lobwife(srv, "broker", "token", "lobster-42", token=admin)
    assert refused.returncode == 1 and refused.stdout == ""
    assert refused.stderr.startswith("error: PERMISSION_DENIED: ") and "not registered" in refused.stderr
    assert token not in refused.stderr and admin not in refused.stderr
    expired = lobwife(srv, "broker", "expire", "--json", token=admin)
    assert expired.returncode == 0 and json.loads(expired.stdout) == {"expired": 0}


def test_service_token(fleet: Fleet) -> None:
    issued = lobwife(fleet.server, "broker", "service-token", "lobboss", token=fleet.admin)
    assert issued.returncode == 0, issued.stderr
    token = issued.stdout.strip()
    assert token.startswith("ghs_") and len(fake_repos(fleet.gh, token)) == 21 and token not in issued.stderr


def test_mint_refuses_bad_arguments_before_anything(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    state = str(tmp_path / "state")
    for args, says in (
        (["--role", "task"], "--task: a task token must name its task"),
        (["--role", "admin", "--task", "T1"], "only a task token names a task"),
        (["--role", "admin", "--ttl", "soon"], "not a duration"),
        (["--role", "root"], "invalid choice: 'root'"),
    ):
        with pytest.raises(SystemExit) as info:
            main(["auth", "mint", "--state-dir", state, *args])
        assert info.value.code == 2 and says in capsys.readouterr().err, args
    with pytest.raises(SystemExit):
        main(["auth", "mint", "--role", "admin"])  # neither --state-dir nor --server
    assert "one of the arguments --state-dir --server is required" in capsys.readouterr().err
    assert main(["auth", "mint", "--state-dir", state, "--role", "task", "--task", "x1"]) == 2
    assert capsys.readouterr().err == "error: task: must be a task number like 42 or T42, got 'x1'\n"


def test_mint_without_the_server_package_says_what_to_do(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # As on a machine with only `pip install lobwife`: the server package cannot be imported.
    monkeypatch.setitem(sys.modules, "lobwife_server.auth", None)
    code = main(["auth", "mint", "--state-dir", str(tmp_path), "--role", "admin"])
    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    assert err.startswith(f"error: {cli.auth.SERVER_AUTH_MISSING}\n") and "pip install 'lobwife[server]'" in err
    assert "--server" in err
    assert not (tmp_path / "auth").exists()
