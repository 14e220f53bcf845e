"""The contract's REQUIRED fields, checked once by the dispatcher for both transports (api.fields)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from google.api import field_behavior_pb2
from google.protobuf import descriptor, descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import Message

from lobwife.v1 import jobs_pb2, tasks_pb2
from lobwife.v1.services import SERVICES
from lobwife_server.api import fields
from lobwife_server.api.rpc import CallContext, Dispatcher
from lobwife_server.core.errors import ApiError, invalid_argument

FD = descriptor.FieldDescriptor


def _every_request() -> list[descriptor.Descriptor]:
    return [m.input_type for svc in SERVICES for m in svc.methods]


def test_the_required_paths_of_the_contract() -> None:
    paths = {m.input_type.name: fields.required_paths(m.input_type) for svc in SERVICES for m in svc.methods}
    assert paths["CreateTaskRequest"] == ("name",)
    assert paths["GetTaskRequest"] == ("task_id",)
    assert paths["CreateTaskEventRequest"] == ("task_id", "event_type")
    assert paths["RegisterTaskReposRequest"] == ("task_id", "repos")
    assert paths["CreateJobRequest"] == ("job",)  # Job.name is IDENTIFIER, not REQUIRED: the service checks it
    # A REQUIRED number without presence cannot be told missing (0 is a value): not checked.
    assert paths["GetJobRunRequest"] == ("name",)
    assert paths["GetFindingRequest"] == ()
    # An enum's *_UNSPECIFIED zero is "not set".
    assert paths["SummarizeCostsRequest"] == ("group_by",)
    assert paths["ListTasksRequest"] == () and paths["WatchTasksRequest"] == ()


def _fill(msg: Message, fd: Any) -> None:
    """Give field ``fd`` of ``msg`` a value that is not missing."""
    if fd.is_repeated:
        if fd.message_type is not None and fd.message_type.GetOptions().map_entry:
            getattr(msg, fd.name)["k"] = "v"  # every map of the contract is string -> string
        elif fd.type == FD.TYPE_STRING:
            getattr(msg, fd.name).append("x")
        else:
            getattr(msg, fd.name).add()
    elif fd.type == FD.TYPE_MESSAGE:
        getattr(msg, fd.name).SetInParent()
    elif fd.type == FD.TYPE_STRING:
        setattr(msg, fd.name, "x")
    elif fd.type == FD.TYPE_BYTES:
        setattr(msg, fd.name, b"x")
    elif fd.type == FD.TYPE_ENUM:
        setattr(msg, fd.name, 1)
    elif fd.type == FD.TYPE_BOOL:
        setattr(msg, fd.name, True)
    else:
        setattr(msg, fd.name, 1)


@pytest.mark.parametrize("desc", _every_request(), ids=lambda d: d.name)
def test_every_required_field_of_every_request_is_named_when_missing(desc: Any) -> None:
    check = fields.required_check(desc)
    required = fields.required_paths(desc)
    assert (check is None) == (not required)
    if check is None:
        return
    cls = message_factory.GetMessageClass(desc)
    top = [fd for fd in desc.fields if fd.name in required]
    for missing in top:
        msg = cls()
        for fd in top:
            if fd is not missing:
                _fill(msg, fd)
        with pytest.raises(ApiError) as info:
            check(msg)
        e = info.value
        assert e.code == grpc.StatusCode.INVALID_ARGUMENT
        assert e.violations == ((missing.name, e.message.partition(": ")[2]),)
        assert e.message.startswith(f"{missing.name}: is required")
    full = cls()
    for fd in top:
        _fill(full, fd)
    check(full)  # nothing missing: no error


def test_blank_is_the_services_to_judge_and_numbers_are_never_missing() -> None:
    check = fields.required_check(tasks_pb2.CreateTaskRequest.DESCRIPTOR)
    assert check is not None
    check(tasks_pb2.CreateTaskRequest(name="   "))  # blank, not empty: "must not be blank" is the service's
    run = fields.required_check(jobs_pb2.GetJobRunRequest.DESCRIPTOR)
    assert run is not None
    run(jobs_pb2.GetJobRunRequest(name="j", run_id=0))
    with pytest.raises(ApiError, match=r"^name: is required$"):
        run(jobs_pb2.GetJobRunRequest(run_id=3))
    repos = fields.required_check(tasks_pb2.RegisterTaskReposRequest.DESCRIPTOR)
    assert repos is not None
    with pytest.raises(ApiError, match=r"^repos: is required: at least one item$"):
        repos(tasks_pb2.RegisterTaskReposRequest(task_id="T1"))


# A contract of its own for the rules the real one does not exercise: nesting, presence, bytes, maps, recursion.
_R = field_behavior_pb2.REQUIRED


def _pool_messages() -> dict[str, type[Message]]:
    pool = descriptor_pool.Default()
    name = "lobwife_test/required.proto"
    try:
        pool.FindFileByName(name)
    except KeyError:
        f = descriptor_pb2.FileDescriptorProto(
            name=name, package="lobwife_test.required", syntax="proto3", dependency=["google/api/field_behavior.proto"]
        )
        T = descriptor_pb2.FieldDescriptorProto

        def add(
            msg: descriptor_pb2.DescriptorProto,
            fname: str,
            number: int,
            ftype: int,
            *,
            required: bool = False,
            type_name: str = "",
            label: int = T.LABEL_OPTIONAL,
            optional: bool = False,
        ) -> None:
            fd = msg.field.add(name=fname, number=number, type=ftype, label=label)  # type: ignore[arg-type]
            if type_name:
                fd.type_name = type_name
            if optional:
                fd.proto3_optional = True
                msg.oneof_decl.add(name="_" + fname)
                fd.oneof_index = len(msg.oneof_decl) - 1
            if required:
                fd.options.Extensions[field_behavior_pb2.field_behavior].append(_R)

        inner = f.message_type.add(name="Inner")
        add(inner, "label", 1, T.TYPE_STRING, required=True)
        add(inner, "blob", 2, T.TYPE_BYTES, required=True)
        add(inner, "again", 3, T.TYPE_MESSAGE, type_name=".lobwife_test.required.Inner")  # recursive: no loop
        outer = f.message_type.add(name="Outer")
        add(outer, "parent", 1, T.TYPE_MESSAGE, required=True, type_name=".lobwife_test.required.Inner")
        add(outer, "maybe", 2, T.TYPE_MESSAGE, type_name=".lobwife_test.required.Inner")
        add(outer, "count", 3, T.TYPE_INT32, required=True, optional=True)
        add(outer, "flag", 4, T.TYPE_BOOL, required=True)
        pool.Add(f)
    return {
        n: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"lobwife_test.required.{n}"))
        for n in ("Inner", "Outer")
    }


def test_nested_presence_and_recursion_rules() -> None:
    cls = _pool_messages()
    outer, inner = cls["Outer"], cls["Inner"]
    desc = outer.DESCRIPTOR
    # `flag` is a bool without presence: REQUIRED, but never missing. `maybe` is optional: its
    # REQUIRED fields count when it is set. The recursive `again` is walked once.
    assert fields.required_paths(desc) == (
        "parent",
        "parent.label",
        "parent.blob",
        "maybe.label",
        "maybe.blob",
        "count",
    )
    check = fields.required_check(desc)
    assert check is not None

    def error(**kw: Any) -> str:
        with pytest.raises(ApiError) as info:
            check(outer(**kw))
        assert info.value.violations[0][0] == info.value.message.split(":")[0]
        return info.value.message

    assert error() == "parent: is required"
    assert error(parent=inner()) == "parent.label: is required"
    assert error(parent=inner(label="l")) == "parent.blob: is required"
    assert error(parent=inner(label="l", blob=b"b")) == "count: is required"
    check(outer(parent=inner(label="l", blob=b"b"), count=0))  # set to 0: present
    assert error(parent=inner(label="l", blob=b"b"), count=0, maybe=inner(blob=b"b")) == "maybe.label: is required"
    # A nested message's own nested optional message is not followed into when unset.
    check(outer(parent=inner(label="l", blob=b"b", again=inner(label="x", blob=b"y")), count=1))


class _Tasks:
    def __init__(self) -> None:
        self.calls: list[str] = []

    async def GetTask(self, req: tasks_pb2.GetTaskRequest, ctx: CallContext) -> tasks_pb2.GetTaskResponse:
        self.calls.append(req.task_id)
        return tasks_pb2.GetTaskResponse()

    async def WatchTasks(
        self, req: tasks_pb2.WatchTasksRequest, ctx: CallContext
    ) -> AsyncIterator[tasks_pb2.WatchTasksResponse]:
        yield tasks_pb2.WatchTasksResponse()


class _Jobs:
    def __init__(self) -> None:
        self.calls = 0

    async def WatchRuns(self, req: jobs_pb2.WatchRunsRequest, ctx: CallContext) -> AsyncIterator[Any]:
        self.calls += 1
        yield jobs_pb2.WatchRunsResponse()

    async def CreateJob(self, req: jobs_pb2.CreateJobRequest, ctx: CallContext) -> jobs_pb2.CreateJobResponse:
        self.calls += 1
        return jobs_pb2.CreateJobResponse()


def _ctx(method: str, transport: str = "grpc") -> CallContext:
    return CallContext(method, transport, dict)


async def test_the_dispatcher_refuses_a_missing_field_before_the_implementation_runs() -> None:
    tasks, jobs = _Tasks(), _Jobs()
    d = Dispatcher({"lobwife.v1.TaskService": tasks, "lobwife.v1.JobService": jobs})
    get = d.methods["/lobwife.v1.TaskService/GetTask"]
    assert get.check_required is not None
    assert d.methods["/lobwife.v1.TaskService/ListTasks"].check_required is None  # nothing to do per call
    for transport in ("grpc", "http"):
        with pytest.raises(ApiError) as info:
            await d.unary(get, tasks_pb2.GetTaskRequest(), _ctx(get.full_name, transport))
        assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT
        assert info.value.message == "task_id: is required"
        assert info.value.violations == (("task_id", "is required"),)
    assert tasks.calls == []
    await d.unary(get, tasks_pb2.GetTaskRequest(task_id="T1"), _ctx(get.full_name))
    assert tasks.calls == ["T1"]
    create = d.methods["/lobwife.v1.JobService/CreateJob"]
    with pytest.raises(ApiError, match=r"^job: is required$"):
        await d.unary(create, jobs_pb2.CreateJobRequest(request_id="r"), _ctx(create.full_name))
    assert jobs.calls == 0
    # The streaming path runs the same check (WatchRuns has no REQUIRED field: it just streams).
    watch = d.methods["/lobwife.v1.JobService/WatchRuns"]
    assert watch.check_required is None
    assert [m async for m in d.stream(watch, jobs_pb2.WatchRunsRequest(), _ctx(watch.full_name))]


async def test_the_stream_path_checks_required_fields() -> None:
    d = Dispatcher({"lobwife.v1.TaskService": _Tasks()})
    watch = d.methods["/lobwife.v1.TaskService/WatchTasks"]

    def refuse(msg: Message) -> None:
        raise invalid_argument("task_id", "is required")

    # No streaming RPC of the contract has a REQUIRED field yet: give this one a check to see it run.
    object.__setattr__(watch, "check_required", refuse)
    with pytest.raises(ApiError, match="task_id: is required"):
        [m async for m in d.stream(watch, tasks_pb2.WatchTasksRequest(), _ctx(watch.full_name))]
