"""One table of methods, two faces: every RPC of the contract has a method on both Client and
AsyncClient, with the same signature, built from the same builder; the table has nothing more.

The contract is lobwife.v1.services (generated from the protos). The only RPCs without a method
are those of the services the server lists as not built yet (lobwife_server.app.NOT_BUILT:
they answer UNIMPLEMENTED, and their messages may still change): the client had no method for
them before either. When a service leaves NOT_BUILT, this test asks for its methods.
"""

from __future__ import annotations

import inspect
from typing import Any

import pytest

from lobwife.client import AsyncClient, Client
from lobwife.client._builders import METHODS, RPCS
from lobwife.client._rpc import Rpc
from lobwife.v1 import tasks_pb2
from lobwife.v1.services import SERVICES
from lobwife_server.app import NOT_BUILT

CONTRACT = {m.full_name: m for s in SERVICES for m in s.methods}
EXPECTED = {name for name, m in CONTRACT.items() if m.containing_service.full_name not in NOT_BUILT}
FACES = (Client, AsyncClient)


def test_every_built_rpc_has_a_method() -> None:
    covered = {m.rpc.full_name for m in METHODS.values()}
    missing = sorted(EXPECTED - covered)
    assert not missing, f"RPCs of the contract without a client method (add a builder to _builders): {missing}"


def test_the_table_has_nothing_the_contract_lacks() -> None:
    assert set(RPCS) <= set(CONTRACT)
    assert not set(RPCS) - EXPECTED, "a method for a service listed as not built: take it off NOT_BUILT"
    for m in METHODS.values():
        rpc = CONTRACT[m.rpc.full_name]
        assert m.rpc.request.DESCRIPTOR.full_name == rpc.input_type.full_name
        assert m.rpc.response.DESCRIPTOR.full_name == rpc.output_type.full_name
        assert (m.kind == "watch") == rpc.server_streaming, m.name


def test_an_rpc_the_contract_lacks_cannot_be_named() -> None:
    with pytest.raises(LookupError, match="NoSuchRpc"):
        Rpc("TaskService", "NoSuchRpc", tasks_pb2.GetTaskRequest, tasks_pb2.GetTaskResponse)
    with pytest.raises(TypeError, match="GetTaskRequest"):
        Rpc("TaskService", "GetTask", tasks_pb2.ListTasksRequest, tasks_pb2.GetTaskResponse)


@pytest.mark.parametrize("face", FACES, ids=lambda f: f.__name__)
def test_each_face_has_every_method_of_the_table_and_no_other(face: type[Any]) -> None:
    public = {n for n, v in vars(face).items() if not n.startswith("_") and callable(v)} - {"close"}
    assert public == set(METHODS), f"{face.__name__}: missing {set(METHODS) - public}, extra {public - set(METHODS)}"


@pytest.mark.parametrize("name", sorted(METHODS))
def test_both_faces_call_the_same_builder_with_its_signature(name: str) -> None:
    build = METHODS[name].build
    want = [inspect.Parameter("self", inspect.Parameter.POSITIONAL_ONLY), *inspect.signature(build).parameters.values()]
    for face in FACES:
        method = getattr(face, name, None)
        assert method is not None, f"{face.__name__}.{name} is missing"
        # One builder behind both: no argument handling written twice.
        assert inspect.unwrap(method) is build, f"{face.__name__}.{name} is not made from _builders.{name}"
        assert list(inspect.signature(method).parameters.values()) == want, f"{face.__name__}.{name}"
        assert method.__doc__ == build.__doc__ and method.__doc__
    sync, aio = getattr(Client, name), getattr(AsyncClient, name)
    assert inspect.signature(sync).parameters == inspect.signature(aio).parameters
    kind = METHODS[name].kind
    if kind == "unary":
        assert not inspect.iscoroutinefunction(sync) and inspect.iscoroutinefunction(aio)
    else:  # pages and watches: generators, the async one an async generator
        assert inspect.isgeneratorfunction(sync) and inspect.isasyncgenfunction(aio)


def test_the_signatures_are_the_public_ones() -> None:
    """A few that callers rely on, spelled out (the rest follow from the builders)."""
    params = inspect.signature(Client.watch_tasks).parameters
    assert [p for p in params if p != "self"] == [
        "after_cursor",
        "from_now",
        "task_id",
        "timeout",
        "reconnect",
        "on_reconnect",
    ]
    assert all(params[p].kind is inspect.Parameter.KEYWORD_ONLY for p in params if p != "self")
    assert (params["after_cursor"].default, params["from_now"].default, params["reconnect"].default) == (0, False, True)
    update = inspect.signature(AsyncClient.update_task).parameters
    assert list(update) == ["self", "task_id", "actor", "timeout", "fields"]
    assert update["fields"].kind is inspect.Parameter.VAR_KEYWORD
