"""The typed clients' auth and broker methods against the real server (``--auth enforce``, the GitHub
stand-in of tests/fakes/github.py): both faces, the token sent from ``token=`` or ``$LOBWIFE_TOKEN``,
and never shown in a repr or an error."""

from __future__ import annotations

import asyncio
import json
import os
import pickle
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import grpc
import pytest

from lobwife.client import AsyncClient, Client, LobwifeError, Registration
from lobwife.v1 import auth_pb2
from lobwife_server.auth import mint_from_state_dir
from lobwife_server.broker.service import token_digest
from tests.conftest import ServerProcess, start_server
from tests.fakes.github import AppKey, FakeGitHub

Role = auth_pb2.Role


@dataclass
class Fleet:
    server: ServerProcess
    gh: FakeGitHub
    admin: str


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    state = tmp_path_factory.mktemp("client-broker") / "state"
    with FakeGitHub(key=AppKey.generate()) as gh:
        srv = start_server(state, "--auth", "enforce", env={**gh.env(), "LOBWIFE_BROKER_GITHUB_TIMEOUT": "3"})
        try:
            yield Fleet(srv, gh, mint_from_state_dir(state, "admin", subject="ops"))
        finally:
            srv.terminate()


@pytest.fixture
def lw(fleet: Fleet) -> Iterator[Client]:
    with Client(fleet.server.grpc_addr, timeout=10, token=fleet.admin) as client:
        yield client


def fake_repos(gh: FakeGitHub, token: str) -> list[str]:
    req = urllib.request.Request(gh.url + "/installation/repositories", headers={"Authorization": f"token {token}"})
    with urllib.request.urlopen(req, timeout=5) as r:
        return [x["full_name"] for x in json.load(r)["repositories"]]


def test_whoami_and_mint_token(lw: Client, fleet: Fleet) -> None:
    me = lw.whoami()
    assert (me.role, me.subject, me.source, me.auth_mode) == (Role.ROLE_ADMIN, "ops", "lobwife", "enforce")
    minted = lw.mint_token("reader", subject="grafana", ttl=timedelta(hours=2))
    assert minted.subject == "grafana" and minted.key_id and minted.token.count(".") == 2
    ttl = minted.expires_at.ToSeconds() - me.expires_at.ToSeconds() + 3600  # admin: 1 h, reader: 2 h
    assert abs(ttl - 7200) < 60, ttl
    with Client(fleet.server.grpc_addr, token=minted.token) as reader:
        who = reader.whoami()
        assert (who.role, who.subject) == (Role.ROLE_READER, "grafana")
        # A reader may not mint: PERMISSION_DENIED, and the error does not carry the credential.
        with pytest.raises(LobwifeError) as info:
            reader.mint_token(Role.ROLE_ADMIN)
        assert info.value.code == grpc.StatusCode.PERMISSION_DENIED
        for text in (str(info.value), repr(info.value), str(pickle.loads(pickle.dumps(info.value)))):
            assert minted.token not in text
    with pytest.raises(ValueError, match="role: unknown value 'root'"):
        lw.mint_token("root")
    with pytest.raises(LobwifeError) as info:
        lw.mint_token("task")  # a task token names its task
    assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT and info.value.field_violations[0].field == "task_id"


def test_the_token_comes_from_the_environment_and_stays_out_of_reprs(
    fleet: Fleet, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LOBWIFE_TOKEN", fleet.admin + "\n")  # as read from a file: the newline is dropped
    with Client(fleet.server.grpc_addr) as client:
        assert client.whoami().subject == "ops" and client.has_token
        assert fleet.admin not in repr(client) and "token=<set>" in repr(client)
        assert fleet.admin not in str(vars(client))
    with Client(fleet.server.grpc_addr, token="") as anonymous:  # "" overrides the environment: no token
        assert not anonymous.has_token
        with pytest.raises(LobwifeError) as info:
            anonymous.whoami()
        assert info.value.code == grpc.StatusCode.UNAUTHENTICATED
    monkeypatch.setenv("LOBWIFE_TOKEN", "two words")
    with pytest.raises(ValueError, match="LOBWIFE_TOKEN: a bearer token is printable ASCII") as bad:
        Client(fleet.server.grpc_addr)
    assert "two words" not in str(bad.value)
    with pytest.raises(ValueError, match="without the 'Bearer ' prefix"):
        Client(fleet.server.grpc_addr, token="Bearer " + fleet.admin)


def _swap_token(directory: Path, token: str, n: int) -> None:
    """Replace the token as the kubelet does a projected volume: a new file, then one rename of a link."""
    (directory / f"..data{n}").write_text(token + "\n")
    (directory / "next").symlink_to(f"..data{n}")
    os.replace(directory / "next", directory / "token")


def test_a_token_file_is_read_again_when_the_kubelet_replaces_it(
    fleet: Fleet, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reader = mint_from_state_dir(fleet.server.state_dir, "reader", subject="grafana")
    _swap_token(tmp_path, reader, 1)
    monkeypatch.delenv("LOBWIFE_TOKEN", raising=False)
    with Client(fleet.server.grpc_addr, token_file=tmp_path / "token") as client:
        assert client.whoami().subject == "grafana" and client.has_token
        assert reader not in repr(client) and str(tmp_path / "token") in repr(client)
        _swap_token(tmp_path, fleet.admin, 2)
        assert client.whoami().subject == "ops"  # the same client, the new token
        (tmp_path / "token").unlink()  # mid-swap, or gone: the last good token is kept
        assert client.whoami().subject == "ops"
    # $LOBWIFE_TOKEN_FILE when no token is given; $LOBWIFE_TOKEN first.
    _swap_token(tmp_path, reader, 3)
    monkeypatch.setenv("LOBWIFE_TOKEN_FILE", str(tmp_path / "token"))
    with Client(fleet.server.grpc_addr) as client:
        assert client.whoami().subject == "grafana"
    monkeypatch.setenv("LOBWIFE_TOKEN", fleet.admin)
    with Client(fleet.server.grpc_addr) as client:
        assert client.whoami().subject == "ops"

    async def both() -> tuple[str, str]:
        async with AsyncClient(fleet.server.grpc_addr, token_file=tmp_path / "token") as client:
            first = (await client.whoami()).subject
            _swap_token(tmp_path, fleet.admin, 4)
            return first, (await client.whoami()).subject

    assert asyncio.run(both()) == ("grafana", "ops")


def test_a_token_file_that_cannot_be_used_is_refused_at_once(fleet: Fleet, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"^token_file: cannot read .*missing"):
        Client(fleet.server.grpc_addr, token_file=tmp_path / "missing")
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(ValueError, match=r"^token_file: .*empty is empty"):
        Client(fleet.server.grpc_addr, token_file=tmp_path / "empty")
    (tmp_path / "spaced").write_text("two words " + fleet.admin)
    with pytest.raises(ValueError, match="printable ASCII") as bad:
        Client(fleet.server.grpc_addr, token_file=tmp_path / "spaced")
    assert fleet.admin not in str(bad.value)
    with pytest.raises(ValueError, match="not both"):
        Client(fleet.server.grpc_addr, token=fleet.admin, token_file=tmp_path / "spaced")


def test_register_token_audit_deregister(lw: Client, fleet: Fleet) -> None:
    registered = lw.broker_register("T77", ["lobmob/repo3"], lobster_type="swe")
    assert (registered.status, registered.task_id) == ("registered", "T77")
    issued = lw.issue_task_token("T77")
    assert issued.token.startswith("ghs_") and list(issued.repos) == ["lobmob/repo3"]
    assert fake_repos(fleet.gh, issued.token) == ["lobmob/repo3"]
    assert lw.issue_task_token("T77").token == issued.token  # from the cache

    registrations = lw.broker_registrations()
    reg = registrations["T77"]
    assert isinstance(reg, Registration)
    assert (list(reg.repos), reg.lobster_type, reg.status, reg.token_count) == (["lobmob/repo3"], "swe", "active", 2)

    # Page by page (one entry each) and in one go: the same entries, newest first.
    page = lw.list_token_audit(task_ref="T77", page_size=1)
    assert len(page.entries) == 1 and page.next_page_token
    entries = list(lw.iter_token_audit(task_ref="T77", page_size=1))
    assert [e.action for e in entries] == ["token_issued", "token_issued", "task_registered"]
    assert entries[0].token_sha256_prefix == token_digest(issued.token) and entries[0].reused
    assert [e.action for e in lw.iter_token_audit(task_ref="T77")] == [e.action for e in entries]

    service = lw.issue_service_token("lobboss")
    assert service.token.startswith("ghs_") and len(fake_repos(fleet.gh, service.token)) == 21
    assert lw.expire_registrations() == 0

    gone = lw.broker_deregister("T77")
    assert (gone.status, gone.task_id) == ("removed", "T77")
    with pytest.raises(LobwifeError) as info:
        lw.issue_task_token("T77")
    err = info.value
    assert err.code == grpc.StatusCode.PERMISSION_DENIED and "not registered" in err.message
    for text in (str(err), repr(err)):
        assert issued.token not in text and fleet.admin not in text
    with pytest.raises(TypeError, match="repos must be a list"):
        lw.broker_register("T78", "lobmob/repo1")


def test_the_async_face(fleet: Fleet) -> None:
    async def go() -> tuple[str, list[str], int]:
        async with AsyncClient(fleet.server.grpc_addr, token=fleet.admin) as client:
            await client.broker_register("async-ref", ["lobmob/repo4"])
            token = (await client.issue_task_token("async-ref")).token
            actions = [e.action async for e in client.iter_token_audit(task_ref="async-ref", page_size=1)]
            regs = await client.broker_registrations()
            await client.broker_deregister("async-ref")
            return token, actions, regs["async-ref"].token_count

    token, actions, count = asyncio.run(go())
    assert token.startswith("ghs_") and actions == ["token_issued", "task_registered"] and count == 1
