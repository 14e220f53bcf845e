"""What the auth and broker methods send, the bearer token's handling, and the task estimate's two fields.

The builders are called directly: each returns the request its method sends (no channel needed).
"""

from __future__ import annotations

from datetime import timedelta

import pytest

from lobwife.client import Client, estimate_minutes
from lobwife.client import _builders as b
from lobwife.client._channel import metadata, resolve_token
from lobwife.client._requests import _create_request, _update_request
from lobwife.v1 import auth_pb2, broker_pb2, tasks_pb2

Role = auth_pb2.Role


def test_mint_token_request() -> None:
    call = b.mint_token("task", task=42, subject="worker", ttl=timedelta(minutes=90))
    req = call.request
    assert isinstance(req, auth_pb2.MintTokenRequest)
    assert (req.role, req.task_id, req.subject, req.ttl.seconds) == (Role.ROLE_TASK, "42", "worker", 5400)
    plain = b.mint_token(Role.ROLE_READER).request
    assert isinstance(plain, auth_pb2.MintTokenRequest)
    assert (plain.role, plain.task_id, plain.subject, plain.HasField("ttl")) == (Role.ROLE_READER, "", "", False)
    assert b.mint_token("ROLE_ADMIN", ttl=30.5).request.ttl.ToNanoseconds() == 30_500_000_000  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match="role: unknown value 'root' \\(one of admin, service, task, reader\\)"):
        b.mint_token("root")
    with pytest.raises(TypeError, match="ttl"):
        b.mint_token("admin", ttl="1h")  # type: ignore[arg-type]


def test_broker_requests() -> None:
    reg = b.broker_register("T7", ["o/a", "o/b"], lobster_type="qa").request
    assert reg == broker_pb2.RegisterTaskRequest(task_id="T7", repos=["o/a", "o/b"], lobster_type="qa")
    with pytest.raises(TypeError, match="repos must be a list of strings"):
        b.broker_register("T7", "o/a")
    assert b.broker_deregister(7).request == broker_pb2.DeregisterTaskRequest(task_id="7")
    assert b.issue_task_token("lobster-3").request == broker_pb2.IssueTaskTokenRequest(task_id="lobster-3")
    assert b.issue_service_token("lobboss").request == broker_pb2.IssueServiceTokenRequest(service="lobboss")
    page = b.list_token_audit(task_ref="T7", page_size=5, page_token="abc").request
    assert page == broker_pb2.ListTokenAuditRequest(task_id="T7", page_size=5, page_token="abc")
    assert b.list_token_audit().request == broker_pb2.ListTokenAuditRequest()
    # The paged form asks for the next page with each page's token, and yields the entries.
    paged = b.iter_token_audit(task_ref="T7", page_size=2)
    second = paged.page("tok")
    assert second.request == broker_pb2.ListTokenAuditRequest(task_id="T7", page_size=2, page_token="tok")
    resp = broker_pb2.ListTokenAuditResponse(entries=[broker_pb2.TokenAuditEntry(action="token_issued")])
    assert [e.action for e in paged.items(resp)] == ["token_issued"]
    # What the unary methods return of their answer.
    regs = broker_pb2.ListRegistrationsResponse(registrations={"T7": broker_pb2.Registration(token_count=2)})
    assert b.broker_registrations().result(regs)["T7"].token_count == 2
    assert b.expire_registrations().result(broker_pb2.ExpireRegistrationsResponse(expired=3)) == 3


def test_resolve_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LOBWIFE_TOKEN", raising=False)
    assert resolve_token(None) is None
    assert resolve_token("  abc.def.ghi\n") == "abc.def.ghi"
    monkeypatch.setenv("LOBWIFE_TOKEN", "from-env\n")
    assert resolve_token(None) == "from-env"
    assert resolve_token("given") == "given"  # the argument wins
    assert resolve_token("") is None  # and "" means none, whatever the environment says
    for bad, says in (("two words", "printable ASCII"), ("Bearer abc", "without the 'Bearer ' prefix"), ("é", "ASCII")):
        with pytest.raises(ValueError, match=says) as info:
            resolve_token(bad)
        assert str(info.value).startswith("token: ") and bad not in str(info.value)
    monkeypatch.setenv("LOBWIFE_TOKEN", "tab\tinside")
    with pytest.raises(ValueError, match=r"^LOBWIFE_TOKEN: "):
        resolve_token(None)


def test_metadata_carries_the_token_but_never_shows_it() -> None:
    md = metadata("s3cret-token")
    assert tuple(md) == (("authorization", "Bearer s3cret-token"),)
    assert "s3cret" not in repr(md) and "s3cret" not in str(md) and "<redacted>" in repr(md)
    assert "s3cret" not in repr([md]) and "s3cret" not in f"{md}"
    assert tuple(metadata(None)) == ()


def test_client_repr_says_a_token_is_set_not_what_it_is(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LOBWIFE_TOKEN", raising=False)
    with Client("127.0.0.1:1", token="s3cret-token") as client:
        assert client.has_token and "s3cret" not in repr(client) and "token=<set>" in repr(client)
        assert "s3cret" not in repr(vars(client))
    with Client("127.0.0.1:1") as client:
        assert not client.has_token and "token" not in repr(client)


def test_the_estimate_is_sent_exact() -> None:
    req = _create_request(
        "x",
        type=None,
        status=None,
        priority=None,
        model=None,
        assigned_to=None,
        repos=None,
        discord_thread_id=None,
        estimate_minutes=12.5,
        requires_qa=None,
        workflow=None,
        slug=None,
        actor=None,
        request_id="r",
    )
    assert req.estimate_minutes_exact == 12.5 and not req.HasField("estimate_minutes")
    upd = _update_request("T1", None, {"estimate_minutes": 3})
    assert list(upd.update_mask.paths) == ["estimate_minutes_exact"] and upd.estimate_minutes_exact == 3.0
    assert not upd.HasField("estimate_minutes")
    with pytest.raises(TypeError, match="estimate_minutes: expected a number of minutes, not bool"):
        _update_request("T1", None, {"estimate_minutes": True})


def test_reading_the_estimate_falls_back_to_the_deprecated_field() -> None:
    assert estimate_minutes(tasks_pb2.Task(estimate_minutes_exact=12.5, estimate_minutes=12)) == 12.5
    assert estimate_minutes(tasks_pb2.Task(estimate_minutes=30)) == 30.0  # from a server without the exact field
    assert estimate_minutes(tasks_pb2.Task(estimate_minutes_exact=0)) == 0.0
    assert estimate_minutes(tasks_pb2.Task()) is None
