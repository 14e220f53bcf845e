"""Auth against the real server: the matrix of every RPC of the contract x every role over both transports
(``--auth enforce``), what a task identity may do, bad credentials, what stays open, permissive and off.

The matrix is generated from the contract (``lobwife.v1.services.SERVICES`` and each RPC's
``google.api.http`` binding) and its expectations from the rule table: an RPC without a rule fails
it (and the server would not start). A cell is 401, 403, or "admitted": any other answer, the call
may well fail for its own reasons (NOT_FOUND, INVALID_ARGUMENT, UNIMPLEMENTED...). One server per
mode; the cells run a few at a time, each bounded by a timeout.
"""

from __future__ import annotations

import http.client
import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import jwt
import pytest
from google.api import annotations_pb2
from google.protobuf import descriptor, field_mask_pb2, message_factory
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_status import rpc_status

from lobwife.v1 import tasks_pb2, tasks_pb2_grpc
from lobwife.v1.services import SERVICES
from lobwife_server.auth import mint_from_state_dir
from lobwife_server.auth.policy import RULES, Role
from tests.conftest import ServerProcess, start_server, subprocess_env
from tests.fakes.oidc import FakeOIDC

ROWS = ("admin", "service", "reader", "task-own", "task-other", "none", "bad")
POD = "lobster-t1-pod"


@dataclass(frozen=True)
class Case:
    service: str
    method: descriptor.MethodDescriptor

    @property
    def full_name(self) -> str:
        return f"/{self.service}/{self.method.name}"


CASES = [Case(s.full_name, m) for s in SERVICES for m in s.methods]


def expected(case: Case, row: str) -> str:
    rule = RULES[case.full_name]  # KeyError: an RPC without a rule fails the matrix
    if rule.public:
        return "admitted"
    if row in ("none", "bad"):
        return "401"
    if row == "admin":
        return "admitted"
    if row in ("service", "reader"):
        return "admitted" if rule.admits(Role(row)) else "403"
    if not rule.admits(Role.TASK):
        return "403"
    if rule.any_task:
        return "admitted"
    return "admitted" if row == "task-own" else "403"


# --------------------------------------------------------------------------- servers


@dataclass
class Fleet:
    server: ServerProcess
    tokens: dict[str, str | None]
    oidc: FakeOIDC | None = None

    def md(self, row: str) -> tuple[tuple[str, str], ...]:
        token = self.tokens[row]
        return (("authorization", f"Bearer {token}"),) if token else ()


def _admin_md(state: Path) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {mint_from_state_dir(state, 'admin', subject='matrix-admin')}"),)


def _setup_tasks(srv: ServerProcess, md: tuple[tuple[str, str], ...]) -> None:
    with grpc.insecure_channel(srv.grpc_addr) as ch:
        stub = tasks_pb2_grpc.TaskServiceStub(ch)
        own = stub.CreateTask(tasks_pb2.CreateTaskRequest(name="own task", assigned_to=POD), metadata=md, timeout=10)
        other = stub.CreateTask(tasks_pb2.CreateTaskRequest(name="other task"), metadata=md, timeout=10)
        assert (own.task.task_id, other.task.task_id) == ("T1", "T2")


def _tokens(state: Path) -> dict[str, str | None]:
    task = mint_from_state_dir(state, "task", "T1")
    elsewhere = state.parent / "another-lobwife"
    return {
        "admin": mint_from_state_dir(state, "admin", subject="ops"),
        "service": mint_from_state_dir(state, "service", subject="lobsigliere"),
        "reader": mint_from_state_dir(state, "reader", subject="grafana"),
        "task-own": task,
        "task-other": task,  # the same T1 token, used on T2
        "none": None,
        # Well formed, admin, but signed by another lobwife's key.
        "bad": mint_from_state_dir(elsewhere, "admin"),
    }


@pytest.fixture(scope="module")
def oidc() -> Iterator[FakeOIDC]:
    with FakeOIDC() as fake:
        yield fake


@pytest.fixture(scope="module")
def enforce(tmp_path_factory: pytest.TempPathFactory, oidc: FakeOIDC) -> Iterator[Fleet]:
    state = tmp_path_factory.mktemp("enforce") / "state"
    srv = start_server(
        state,
        "--auth",
        "enforce",
        "--k8s-issuer",
        oidc.issuer,
        "--k8s-role",
        "lobmob/lobster=task",
        "--k8s-role",
        "lobmob/lobboss=admin",
        "--k8s-refetch-interval",
        "0",
    )
    try:
        _setup_tasks(srv, _admin_md(state))
        yield Fleet(srv, _tokens(state), oidc)
    finally:
        srv.terminate()


@pytest.fixture(scope="module")
def permissive(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    state = tmp_path_factory.mktemp("permissive") / "state"
    srv = start_server(state, "--auth", "permissive")
    try:
        _setup_tasks(srv, ())
        yield Fleet(srv, _tokens(state))
    finally:
        srv.terminate()


@pytest.fixture(scope="module")
def off(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    state = tmp_path_factory.mktemp("off") / "state"
    srv = start_server(state)  # the default
    try:
        _setup_tasks(srv, ())
        yield Fleet(srv, _tokens(state))
    finally:
        srv.terminate()


# --------------------------------------------------------------------------- one call, either transport


def _target(row: str) -> str:
    return "T1" if row == "task-own" else "T2"


def _request(case: Case, row: str) -> Any:
    req = message_factory.GetMessageClass(case.method.input_type)()
    field = RULES[case.full_name].task_field or "task_id"
    outer, _, inner = field.partition(".")
    if inner:  # a batch (`items.task_id`): one item naming the row's task
        getattr(req, outer).add(**{inner: _target(row)})
        return req
    fd = case.method.input_type.fields_by_name.get("task_id")
    if fd is not None and fd.type == descriptor.FieldDescriptor.TYPE_STRING:
        req.task_id = _target(row)
    return req


def grpc_verdict(ch: grpc.Channel, case: Case, req: Any, md: tuple[tuple[str, str], ...]) -> str:
    path = case.full_name
    try:
        if case.method.server_streaming:
            call = ch.unary_stream(path, request_serializer=lambda m: m.SerializeToString())(
                req, metadata=md, timeout=2
            )
            try:
                next(iter(call))
            finally:
                call.cancel()
        else:
            ch.unary_unary(path, request_serializer=lambda m: m.SerializeToString())(req, metadata=md, timeout=10)
    except grpc.RpcError as e:
        return _grpc_code(e)
    return "admitted"


def _grpc_code(e: grpc.RpcError) -> str:
    code = e.code()  # type: ignore[attr-defined]
    if code == grpc.StatusCode.UNAUTHENTICATED:
        return "401"
    if code == grpc.StatusCode.PERMISSION_DENIED and _auth_reason(e):
        return "403"
    return "admitted"


def _auth_reason(e: grpc.RpcError) -> str:
    status = rpc_status.from_call(e)  # type: ignore[arg-type]
    for d in status.details if status else []:
        info = error_details_pb2.ErrorInfo()
        if d.Unpack(info) and info.reason.startswith("AUTH_"):
            return info.reason
    return ""


def _binding(case: Case) -> Any:
    rule = case.method.GetOptions().Extensions[annotations_pb2.http]
    return rule


_VAR = re.compile(r"\{([^}=]+)(?:=[^}]*)?\}")


def http_request(case: Case, row: str) -> tuple[str, str, bytes | None]:
    rule = _binding(case)
    verb = rule.WhichOneof("pattern")
    template = getattr(rule, verb)
    bound: set[str] = set()

    def fill(m: re.Match[str]) -> str:
        var = m.group(1)
        bound.add(var)
        if var == "task_id":
            return _target(row)
        return "1" if var.rsplit(".", 1)[-1] in ("id", "run_id") else "nojob"

    path = _VAR.sub(fill, template)
    has_task = "task_id" in case.method.input_type.fields_by_name and "task_id" not in bound
    body: bytes | None = None
    batch = (RULES[case.full_name].task_field or "").partition(".")
    if rule.body == "*" and batch[2]:  # `items.task_id`: one item naming the row's task
        body = json.dumps({batch[0]: [{batch[2]: _target(row)}]}).encode()
    elif rule.body == "*":
        body = json.dumps({"task_id": _target(row)} if has_task else {}).encode()
    elif rule.body:
        body = b"{}"
    elif has_task:
        path += f"?task_id={_target(row)}"
    return verb.upper(), path, body


def http_verdict(port: int, case: Case, row: str, token: str | None) -> str:
    verb, path, body = http_request(case, row)
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(verb, path, body=body, headers=headers)
        resp = conn.getresponse()  # a stream answers its headers within a second; its body is not read
        if resp.status == 401:
            assert resp.getheader("WWW-Authenticate", "").startswith("Bearer"), path
            return "401"
        if resp.status == 403:
            msg = json.loads(resp.read()).get("message", "")
            return "403" if msg.startswith("auth: ") else "admitted"
        return "admitted"
    finally:
        conn.close()


def _cells() -> list[tuple[Case, str]]:
    return [(c, r) for c in CASES for r in ROWS]


def _report(found: dict[tuple[str, str], str]) -> list[str]:
    return [
        f"{name} as {row}: got {got}, expected {expected(case, row)}"
        for (case, row) in _cells()
        for name in [case.full_name]
        if (got := found[(name, row)]) != expected(case, row)
    ]


# --------------------------------------------------------------------------- the matrix


def test_the_matrix_over_grpc(enforce: Fleet) -> None:
    with grpc.insecure_channel(enforce.server.grpc_addr) as ch, ThreadPoolExecutor(8) as pool:
        futures = {
            (c.full_name, r): pool.submit(grpc_verdict, ch, c, _request(c, r), enforce.md(r)) for c, r in _cells()
        }
        found = {k: f.result() for k, f in futures.items()}
    assert _report(found) == []
    tally = {v: list(found.values()).count(v) for v in ("401", "403", "admitted")}
    assert tally["401"] >= 2 * (len(CASES) - 1) and tally["403"] > 50 and tally["admitted"] > 50, tally


def test_the_matrix_over_http(enforce: Fleet) -> None:
    port = enforce.server.http_port
    with ThreadPoolExecutor(8) as pool:
        futures = {
            (c.full_name, r): pool.submit(http_verdict, port, c, r, enforce.tokens[r])
            for c, r in _cells()
            if c.method.GetOptions().HasExtension(annotations_pb2.http)
        }
        found = {k: f.result() for k, f in futures.items()}
    assert len(found) == len(CASES) * len(ROWS)  # every RPC has an HTTP binding
    assert _report(found) == []


# --------------------------------------------------------------------------- what a task may do


def _code(call: Any) -> str:
    try:
        call()
    except grpc.RpcError as e:
        return str(e.code().name)  # type: ignore[attr-defined]
    return "OK"


def test_a_task_gets_its_own_token_and_403_for_everything_of_another_task(enforce: Fleet) -> None:
    from lobwife.v1 import broker_pb2, broker_pb2_grpc

    own = enforce.md("task-own")
    admin = enforce.md("admin")
    with grpc.insecure_channel(enforce.server.grpc_addr) as ch:
        tasks = tasks_pb2_grpc.TaskServiceStub(ch)
        broker = broker_pb2_grpc.BrokerServiceStub(ch)
        before = tasks.GetTask(tasks_pb2.GetTaskRequest(task_id="T2"), metadata=admin, timeout=5).task
        events = tasks.ListTaskEvents(tasks_pb2.ListTaskEventsRequest(task_id="T2"), metadata=admin, timeout=5)
        # Its own token: admitted (the broker answers for itself: not an auth refusal).
        own_token = _code(lambda: broker.IssueTaskToken(broker_pb2.IssueTaskTokenRequest(task_id="T1"), metadata=own))
        assert own_token not in ("UNAUTHENTICATED", "PERMISSION_DENIED") or "AUTH_" not in own_token
        calls = {
            "get": lambda: tasks.GetTask(tasks_pb2.GetTaskRequest(task_id="T2"), metadata=own, timeout=5),
            "patch": lambda: tasks.UpdateTask(
                tasks_pb2.UpdateTaskRequest(task_id="T2", name="hijacked"), metadata=own, timeout=5
            ),
            "events": lambda: tasks.CreateTaskEvent(
                tasks_pb2.CreateTaskEventRequest(task_id="T2", event_type="note"), metadata=own, timeout=5
            ),
            "token": lambda: broker.IssueTaskToken(broker_pb2.IssueTaskTokenRequest(task_id="T2"), metadata=own),
            "register": lambda: tasks.RegisterTaskRepos(
                tasks_pb2.RegisterTaskReposRequest(task_id="T2", repos=["o/r"]), metadata=own, timeout=5
            ),
            "register (broker)": lambda: broker.RegisterTask(
                broker_pb2.RegisterTaskRequest(task_id="T2", repos=["o/r"]), metadata=own, timeout=5
            ),
            "service token": lambda: broker.IssueServiceToken(
                broker_pb2.IssueServiceTokenRequest(service="lobboss"), metadata=own, timeout=5
            ),
        }
        got = {what: _code(call) for what, call in calls.items()}
        assert got == dict.fromkeys(calls, "PERMISSION_DENIED")
        after = tasks.GetTask(tasks_pb2.GetTaskRequest(task_id="T2"), metadata=admin, timeout=5).task
        events_after = tasks.ListTaskEvents(tasks_pb2.ListTaskEventsRequest(task_id="T2"), metadata=admin, timeout=5)
        assert after == before and events_after == events  # nothing stored changed
        # Its own task it may read, update and log on.
        assert tasks.GetTask(tasks_pb2.GetTaskRequest(task_id="T1"), metadata=own, timeout=5).task.task_id == "T1"
        ev = tasks.CreateTaskEvent(
            tasks_pb2.CreateTaskEventRequest(task_id="T1", event_type="progress"), metadata=own, timeout=5
        )
        assert ev.task_id == "T1"
        # But never its budget, nor its type (whose default budget may be the one that holds).
        for req in (
            tasks_pb2.UpdateTaskRequest(task_id="T1", budget_usd=1_000_000),
            tasks_pb2.UpdateTaskRequest(task_id="T1", update_mask=field_mask_pb2.FieldMask(paths=["budget_usd"])),
            tasks_pb2.UpdateTaskRequest(task_id="T1", type="no-default"),
        ):
            with pytest.raises(grpc.RpcError) as info:
                tasks.UpdateTask(req, metadata=own, timeout=5)
            assert info.value.code() is grpc.StatusCode.PERMISSION_DENIED
            assert "a task credential may not change its task's budget or type" in (info.value.details() or "")
        mine = tasks.UpdateTask(tasks_pb2.UpdateTaskRequest(task_id="T1", priority="high"), metadata=own, timeout=5)
        assert mine.updated == ["priority"]  # the rest of its own task it may change
        # An admin may.
        upd = tasks.UpdateTask(tasks_pb2.UpdateTaskRequest(task_id="T1", budget_usd=3), metadata=admin, timeout=5)
        assert upd.task.budget_usd == 3


def test_a_reader_writing_changes_nothing(enforce: Fleet) -> None:
    admin, reader = enforce.md("admin"), enforce.md("reader")
    with grpc.insecure_channel(enforce.server.grpc_addr) as ch:
        tasks = tasks_pb2_grpc.TaskServiceStub(ch)
        count = len(tasks.ListTasks(tasks_pb2.ListTasksRequest(), metadata=admin, timeout=5).tasks)
        assert _code(lambda: tasks.CreateTask(tasks_pb2.CreateTaskRequest(name="x"), metadata=reader)) == (
            "PERMISSION_DENIED"
        )
        assert len(tasks.ListTasks(tasks_pb2.ListTasksRequest(), metadata=reader, timeout=5).tasks) == count


def test_a_task_token_stops_working_when_its_task_ends(enforce: Fleet) -> None:
    admin = enforce.md("admin")
    with grpc.insecure_channel(enforce.server.grpc_addr) as ch:
        tasks = tasks_pb2_grpc.TaskServiceStub(ch)
        t = tasks.CreateTask(tasks_pb2.CreateTaskRequest(name="short-lived"), metadata=admin, timeout=5).task
        md = (("authorization", f"Bearer {mint_from_state_dir(enforce.server.state_dir, 'task', t.task_id)}"),)
        assert _code(lambda: tasks.GetTask(tasks_pb2.GetTaskRequest(task_id=t.task_id), metadata=md)) == "OK"
        tasks.UpdateTask(
            tasks_pb2.UpdateTaskRequest(task_id=t.task_id, status=tasks_pb2.TASK_STATUS_COMPLETED),
            metadata=admin,
            timeout=5,
        )
        assert _code(lambda: tasks.GetTask(tasks_pb2.GetTaskRequest(task_id=t.task_id), metadata=md)) == (
            "UNAUTHENTICATED"
        )


# --------------------------------------------------------------------------- bad credentials


def _forged(state: Path) -> dict[str, str]:
    """Tokens that must each be 401, made with the server's own key where a signature is needed."""
    from lobwife_server.auth.keys import KeyRing
    from lobwife_server.auth.tokens import LobwifeTokens

    ring = KeyRing.load_or_create(state)
    key = ring.current
    now = int(time.time())
    base = {"iss": "lobwife", "aud": "lobwife", "sub": "x", "iat": now, "nbf": now, "exp": now + 600, "role": "admin"}

    def sign(**over: Any) -> str:
        return jwt.encode({**base, **over}, key.private, algorithm="EdDSA", headers={"kid": key.kid})

    import base64
    import hashlib
    import hmac

    from cryptography.hazmat.primitives import serialization

    def b64(d: bytes) -> str:
        return base64.urlsafe_b64encode(d).rstrip(b"=").decode()

    pub = key.public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    head = b64(json.dumps({"alg": "HS256", "kid": key.kid}).encode())
    body = b64(json.dumps(base).encode())
    confused = f"{head}.{body}.{b64(hmac.new(pub, f'{head}.{body}'.encode(), hashlib.sha256).digest())}"
    return {
        "expired": LobwifeTokens(ring, clock=lambda: now - 7200).mint(Role.ADMIN, ttl=600)[0],
        "not yet valid": LobwifeTokens(ring, clock=lambda: now + 3600).mint(Role.ADMIN)[0],
        "wrong audience": sign(aud="vault"),
        "wrong issuer": sign(iss="evil"),
        "alg none": jwt.encode(base, None, algorithm="none"),
        "HS256 with the public key": confused,
        "garbage": "garbage",
    }


def test_each_bad_credential_is_401_over_both_transports_and_nothing_leaks(enforce: Fleet) -> None:
    forged = _forged(enforce.server.state_dir)
    with grpc.insecure_channel(enforce.server.grpc_addr) as ch:
        tasks = tasks_pb2_grpc.TaskServiceStub(ch)
        for what, token in forged.items():
            md = (("authorization", f"Bearer {token}"),)
            with pytest.raises(grpc.RpcError) as e:
                tasks.CreateTask(tasks_pb2.CreateTaskRequest(name=f"forged {what}"), metadata=md, timeout=5)
            assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED, what  # type: ignore[attr-defined]
            assert token not in (e.value.details() or ""), what  # type: ignore[attr-defined]
            conn = http.client.HTTPConnection("127.0.0.1", enforce.server.http_port, timeout=10)
            conn.request(
                "POST", "/api/v1/tasks", body=b'{"name": "forged"}', headers={"Authorization": f"Bearer {token}"}
            )
            resp = conn.getresponse()
            text = resp.read().decode()
            conn.close()
            assert resp.status == 401, (what, text)
            assert token not in text and "auth: " in text, what
        names = [t.name for t in tasks.ListTasks(tasks_pb2.ListTasksRequest(), metadata=enforce.md("admin")).tasks]
        assert not any(n.startswith("forged") for n in names)  # nothing stored


# --------------------------------------------------------------------------- open, counted, logged


def test_health_reflection_and_metrics_stay_open(enforce: Fleet) -> None:
    srv = enforce.server
    with grpc.insecure_channel(srv.grpc_addr) as ch:
        health = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
        assert health.status == health_pb2.HealthCheckResponse.SERVING
        stub = reflection_pb2_grpc.ServerReflectionStub(ch)
        answers = list(stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")])))
        names = {s.name for s in answers[0].list_services_response.service}
        assert "lobwife.v1.AuthService" in names and "lobwife.v1.TaskService" in names
    for path in ("/health", "/metrics", "/"):
        conn = http.client.HTTPConnection("127.0.0.1", srv.http_port, timeout=10)
        conn.request("GET", path)
        assert conn.getresponse().status == 200, path
        conn.close()


def _metrics(srv: ServerProcess) -> str:
    conn = http.client.HTTPConnection("127.0.0.1", srv.http_port, timeout=10)
    conn.request("GET", "/metrics")
    text = conn.getresponse().read().decode()
    conn.close()
    return text


def test_denials_are_counted_by_rule_and_logged_without_the_credential(tmp_path: Path) -> None:
    # A server of its own: denials are logged under a rate limit per rule (core.logs), and the
    # module's shared server has refused CancelTask more than a burst's worth by now.
    state = tmp_path / "state"
    srv = start_server(state, "--auth", "enforce")
    try:
        _setup_tasks(srv, _admin_md(state))
        fleet = Fleet(srv, _tokens(state))
        with grpc.insecure_channel(srv.grpc_addr) as ch:
            tasks = tasks_pb2_grpc.TaskServiceStub(ch)
            denied = _code(
                lambda: tasks.CancelTask(tasks_pb2.CancelTaskRequest(task_id="T2"), metadata=fleet.md("reader"))
            )
        assert denied == "PERMISSION_DENIED"
        text = _metrics(srv)
        assert re.search(
            r'lobwife_auth_denied_total\{reason="role",rule="/lobwife.v1.TaskService/CancelTask"\} 1\.0', text
        )
        for token in filter(None, fleet.tokens.values()):
            assert token.split(".")[2] not in text
        log = srv.log()
    finally:
        srv.terminate()
    lines = [json.loads(x) for x in log.splitlines() if x.startswith("{") and "auth denied" in x]
    cancel = [x for x in lines if x.get("method") == "/lobwife.v1.TaskService/CancelTask" and x["reason"] == "role"]
    assert len(cancel) == 1 and cancel[0]["subject"] == "grafana" and cancel[0]["role"] == "reader"
    for token in filter(None, fleet.tokens.values()):
        assert token not in log and token.split(".")[2] not in log


def test_an_admin_mints_tokens_over_http_and_no_one_else_may(enforce: Fleet) -> None:
    def post(token: str | None, body: dict[str, Any]) -> tuple[int, Any]:
        conn = http.client.HTTPConnection("127.0.0.1", enforce.server.http_port, timeout=10)
        conn.request("POST", "/api/v1/auth/tokens", body=json.dumps(body), headers={"Authorization": f"Bearer {token}"})
        resp = conn.getresponse()
        out = (resp.status, json.loads(resp.read()))
        conn.close()
        return out

    status, minted = post(enforce.tokens["admin"], {"role": "reader", "subject": "dash", "ttl": "120s"})
    assert status == 200 and minted["subject"] == "dash", minted
    with grpc.insecure_channel(enforce.server.grpc_addr) as ch:
        md = (("authorization", f"Bearer {minted['token']}"),)
        assert tasks_pb2_grpc.TaskServiceStub(ch).ListTasks(tasks_pb2.ListTasksRequest(), metadata=md, timeout=5)
    assert post(enforce.tokens["service"], {"role": "admin"})[0] == 403
    assert post(enforce.tokens["admin"], {"role": "task", "task_id": "T999"})[0] == 409
    assert post(enforce.tokens["admin"], {"role": "task"})[0] == 400


def test_a_rotated_key_is_taken_by_the_running_server(enforce: Fleet) -> None:
    state = enforce.server.state_dir
    old = enforce.tokens["reader"]
    done = subprocess.run(
        [sys.executable, "-m", "lobwife_server.auth", "rotate", "--state-dir", str(state), "--grace", "1h"],
        capture_output=True,
        text=True,
        env=subprocess_env(),
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    new = mint_from_state_dir(state, "reader")
    assert jwt.get_unverified_header(new)["kid"] == done.stdout.strip() != jwt.get_unverified_header(old)["kid"]
    with grpc.insecure_channel(enforce.server.grpc_addr) as ch:
        tasks = tasks_pb2_grpc.TaskServiceStub(ch)
        for token in (new, old):  # the new key at once; the old one within its grace
            md = (("authorization", f"Bearer {token}"),)
            assert _code(lambda md=md: tasks.ListTasks(tasks_pb2.ListTasksRequest(), metadata=md, timeout=5)) == "OK"


# --------------------------------------------------------------------------- Kubernetes tokens


def test_a_pod_token_is_bound_to_the_task_that_recorded_the_pod(enforce: Fleet) -> None:
    assert enforce.oidc is not None
    oidc = enforce.oidc
    pod = (("authorization", f"Bearer {oidc.sa_token('lobmob', 'lobster', pod=POD)}"),)
    stranger = (("authorization", f"Bearer {oidc.sa_token('lobmob', 'lobster', pod='lobster-unknown')}"),)
    boss = (("authorization", f"Bearer {oidc.sa_token('lobmob', 'lobboss')}"),)
    nobody = (("authorization", f"Bearer {oidc.sa_token('default', 'default')}"),)
    wrong_aud = (("authorization", f"Bearer {oidc.sa_token('lobmob', 'lobboss', audience='vault')}"),)
    with grpc.insecure_channel(enforce.server.grpc_addr) as ch:
        tasks = tasks_pb2_grpc.TaskServiceStub(ch)

        def get(ref: str, md: tuple[tuple[str, str], ...]) -> str:
            return _code(lambda: tasks.GetTask(tasks_pb2.GetTaskRequest(task_id=ref), metadata=md, timeout=5))

        assert get("T1", pod) == "OK"
        assert get("T2", pod) == "PERMISSION_DENIED"
        assert get("T1", stranger) == "PERMISSION_DENIED"  # no task names that pod
        assert get("T2", boss) == "OK"
        assert get("T1", nobody) == "PERMISSION_DENIED"  # an account the role map does not name
        assert get("T1", wrong_aud) == "UNAUTHENTICATED"
        oidc.rotate(keep_old=False)  # the cluster rotates its key: fetched on the first token that names it
        fresh = (("authorization", f"Bearer {oidc.sa_token('lobmob', 'lobboss')}"),)
        assert get("T2", fresh) == "OK"


# --------------------------------------------------------------------------- permissive and off


def test_permissive_lets_every_call_through_and_counts_what_enforce_would_deny(permissive: Fleet) -> None:
    with grpc.insecure_channel(permissive.server.grpc_addr) as ch, ThreadPoolExecutor(8) as pool:
        rows = ("none", "bad", "reader", "task-other")
        futures = {
            (c.full_name, r): pool.submit(grpc_verdict, ch, c, _request(c, r), permissive.md(r))
            for c in CASES
            for r in rows
        }
        found = {k: f.result() for k, f in futures.items()}
    assert set(found.values()) == {"admitted"}
    text = _metrics(permissive.server)
    would = {
        (m["rule"], m["reason"]): float(m["n"])
        for m in re.finditer(
            r'lobwife_auth_would_deny_total\{reason="(?P<reason>\w+)",rule="(?P<rule>[^"]+)"\} (?P<n>\S+)', text
        )
    }
    # Counted by rule: every RPC but the open one, for a missing credential and a bad one.
    assert {rule for rule, reason in would if reason == "missing"} == {c.full_name for c in CASES} - {
        "/lobwife.v1.SystemService/GetHealth"
    }
    assert would[("/lobwife.v1.TaskService/CreateTask", "missing")] >= 1
    assert would[("/lobwife.v1.TaskService/CreateTask", "role")] >= 1  # the reader (and the task)
    assert would[("/lobwife.v1.TaskService/GetTask", "other_task")] == 1
    assert would[("/lobwife.v1.TaskService/GetTask", "unknown_key")] == 1  # the bad token
    assert "lobwife_auth_denied_total{" not in text
    assert http_verdict(permissive.server.http_port, CASES[0], "none", None) == "admitted"


def test_off_is_unchanged_and_warns_at_start(off: Fleet) -> None:
    with grpc.insecure_channel(off.server.grpc_addr) as ch:
        for row in ("none", "bad", "reader"):
            tasks = tasks_pb2_grpc.TaskServiceStub(ch)
            made = tasks.CreateTask(tasks_pb2.CreateTaskRequest(name=f"as {row}"), metadata=off.md(row), timeout=5)
            assert made.task.name == f"as {row}"
    log = off.server.log()
    assert "auth is off: every call is allowed" in log
    assert "lobwife_auth_would_deny_total{" not in _metrics(off.server)


def test_a_bad_signing_key_stops_the_server_with_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "key.pem"
    bad.write_text("-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n")
    srv = start_server(tmp_path / "state", "--auth", "enforce", "--auth-signing-key", str(bad), wait=False)
    assert srv.proc.wait(timeout=30) == 1
    log = srv.log()
    assert "cannot start" in log and str(bad) in log and "not an unencrypted PEM private key" in log
    assert "not a key" not in log and "Traceback" not in log
