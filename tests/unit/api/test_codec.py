"""The gateway's JSON <-> proto codec: every type rule, every error, round trips."""

from __future__ import annotations

import math
from typing import Any

import grpc
import orjson
import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import Message

from lobwife.v1 import costs_pb2, jobs_pb2, tasks_pb2
from lobwife_server.api import codec
from lobwife_server.core.errors import ApiError

# --------------------------------------------------------------------------- helpers


def _type_zoo() -> type[Message]:
    """A message with the field types the lobwife protos do not use (unsigned,
    sint, float, bytes, repeated enum, int/bool map keys) and a recursive field."""
    F = descriptor_pb2.FieldDescriptorProto
    fdp = descriptor_pb2.FileDescriptorProto(name="codec_zoo.proto", package="zoo", syntax="proto3")
    color = fdp.enum_type.add(name="Color")
    for name, number in (("COLOR_UNSPECIFIED", 0), ("COLOR_RED", 1), ("COLOR_DARK_BLUE", 2)):
        color.value.add(name=name, number=number)
    m = fdp.message_type.add(name="Zoo")

    def add(name: str, number: int, type_: int, *, repeated: bool = False, type_name: str = "") -> None:
        f = m.field.add(name=name, number=number, type=type_)
        f.label = F.LABEL_REPEATED if repeated else F.LABEL_OPTIONAL
        if type_name:
            f.type_name = type_name

    def add_map(name: str, number: int, key_type: int, value_type: int) -> None:
        entry_name = "".join(p.capitalize() for p in name.split("_")) + "Entry"
        entry = m.nested_type.add(name=entry_name)
        entry.options.map_entry = True
        entry.field.add(name="key", number=1, type=key_type, label=F.LABEL_OPTIONAL)
        entry.field.add(name="value", number=2, type=value_type, label=F.LABEL_OPTIONAL)
        add(name, number, F.TYPE_MESSAGE, repeated=True, type_name=f".zoo.Zoo.{entry_name}")

    add("u32", 1, F.TYPE_UINT32)
    add("u64", 2, F.TYPE_UINT64)
    add("s32", 3, F.TYPE_SINT32)
    add("f32", 4, F.TYPE_FLOAT)
    add("f64", 5, F.TYPE_DOUBLE)
    add("raw", 6, F.TYPE_BYTES)
    add("flag", 7, F.TYPE_BOOL)
    add("colors", 8, F.TYPE_ENUM, repeated=True, type_name=".zoo.Color")
    add_map("by_id", 9, F.TYPE_INT32, F.TYPE_STRING)
    add_map("by_flag", 10, F.TYPE_BOOL, F.TYPE_INT64)
    add("child", 11, F.TYPE_MESSAGE, type_name=".zoo.Zoo")
    add("children", 12, F.TYPE_MESSAGE, repeated=True, type_name=".zoo.Zoo")
    add("color", 13, F.TYPE_ENUM, type_name=".zoo.Color")
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("zoo.Zoo"))


# A dynamic message class: no stubs, so fields are reached untyped.
Zoo: Any = _type_zoo()


#: Task's JSON keys, in order: estimate_minutes_exact is `estimate_minutes`, in the place of the int32 it supersedes.
TASK_KEYS = [f.name for f in tasks_pb2.Task.DESCRIPTOR.fields if f.name != "estimate_minutes_exact"]


def full_task() -> tasks_pb2.Task:
    t = tasks_pb2.Task(
        id=2**62 + 1,
        task_id="T42",
        name="Fix the flaky test",
        slug="flaky",
        type="swe",
        status=tasks_pb2.TASK_STATUS_ACTIVE,
        priority="high",
        model="opus",
        assigned_to="lobster-7",
        repos=["org/a", "org/b"],
        discord_thread_id="123456789012345678",
        estimate_minutes=30,
        estimate_minutes_exact=30,
        requires_qa=True,
        workflow="default",
        broker_repos=["org/a"],
        broker_status="active",
        token_count=3,
        created_by="lobboss",
    )
    t.created_at.FromSeconds(1771243200)  # 2026-02-16T12:00:00Z
    t.updated_at.seconds, t.updated_at.nanos = 1771243201, 250_000_000
    t.queued_at.seconds, t.queued_at.nanos = 1771243202, 123_456_789
    t.assigned_at.FromSeconds(1771243300)
    t.broker_registered_at.FromSeconds(1771243400)
    return t


def full_job() -> jobs_pb2.Job:
    j = jobs_pb2.Job(
        name="nightly",
        description="Nightly backup",
        command=["bash", "-c", "backup.sh"],
        script="backup.sh",
        env={"A": "1", "B": ""},
        schedule="every 90s",
        time_zone="UTC",
        enabled=True,
        concurrency=jobs_pb2.CONCURRENCY_POLICY_FORBID,
        catch_up=jobs_pb2.CATCH_UP_POLICY_ONCE,
        run_on_startup=True,
        last_status=jobs_pb2.RUN_STATUS_SUCCESS,
        last_duration=1.25,
        run_count=2**40,
        fail_count=1,
        last_output="ok\n",
    )
    j.interval.seconds, j.interval.nanos = 90, 500_000_000
    j.timeout.FromSeconds(600)
    j.retry.max_retries = 3
    j.retry.initial_backoff.FromMilliseconds(1500)
    j.retry.multiplier = 2.0
    j.last_run.FromSeconds(1771243200)
    for s in (1771243290, 1771243380):
        j.next_runs.add(seconds=s)
    return j


def err(fn: Any, *args: Any, **kwargs: Any) -> ApiError:
    with pytest.raises(ApiError) as info:
        fn(*args, **kwargs)
    assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT
    return info.value


def parse_err(obj: Any, cls: type[Message] = tasks_pb2.CreateTaskRequest) -> str:
    e = err(codec.from_json_obj, obj, cls)
    # Every field error is also a BadRequest field violation naming the field.
    assert len(e.violations) == 1
    field, desc = e.violations[0]
    assert e.message == f"{field}: {desc}"
    return e.message


# --------------------------------------------------------------------------- output


def test_task_to_json_numbers_enums_timestamps() -> None:
    out = codec.to_json_obj(full_task())
    assert out["id"] == 2**62 + 1 and type(out["id"]) is int  # int64 as a JSON number, exact
    assert out["estimate_minutes"] == 30 and out["token_count"] == 3
    assert out["status"] == "active"
    assert out["requires_qa"] is True
    assert out["repos"] == ["org/a", "org/b"]
    assert out["created_at"] == "2026-02-16T12:00:00Z"
    assert out["updated_at"] == "2026-02-16T12:00:01.250000Z"  # microseconds when non-zero
    assert out["queued_at"] == "2026-02-16T12:00:02.123456789Z"  # nanoseconds when needed
    assert out["completed_at"] is None
    # Field names are proto names and come in field order (estimate_minutes_exact takes the key and
    # the place of the int32 estimate_minutes it supersedes).
    assert list(out) == TASK_KEYS
    text = codec.encode(out)
    assert b'"id":4611686018427387905' in text and b'"status":"active"' in text


def test_every_field_present_with_stable_shape() -> None:
    out = codec.to_json_obj(tasks_pb2.Task())
    assert list(out) == TASK_KEYS
    assert out["id"] == 0 and out["name"] == "" and out["requires_qa"] is False  # plain scalars: their value
    assert out["status"] is None  # the UNSPECIFIED zero value
    assert out["slug"] is None and out["estimate_minutes"] is None  # proto3 optional, unset
    assert out["created_at"] is None  # message, unset
    assert out["repos"] == [] and out["broker_repos"] == []
    job = codec.to_json_obj(jobs_pb2.Job())
    assert job["env"] == {} and job["cron"] is None and job["interval"] is None and job["retry"] is None
    # An optional field set to its default is present, and shown.
    t = tasks_pb2.Task(estimate_minutes_exact=0, slug="")
    out = codec.to_json_obj(t)
    assert out["estimate_minutes"] == 0 and out["slug"] == ""


def test_empty_containers_are_fresh_objects() -> None:
    a = codec.to_json_obj(tasks_pb2.Task())
    a["repos"].append("x")
    a_job = codec.to_json_obj(jobs_pb2.Job())
    a_job["env"]["k"] = "v"
    assert codec.to_json_obj(tasks_pb2.Task())["repos"] == []
    assert codec.to_json_obj(jobs_pb2.Job())["env"] == {}


def test_job_to_json_durations_maps_nested() -> None:
    out = codec.to_json_obj(full_job())
    assert out["interval"] == "90.5s"
    assert out["timeout"] == "600s"
    assert out["retry"] == {
        "max_retries": 3,
        "initial_backoff": "1.5s",
        "max_backoff": None,
        "multiplier": 2.0,
        "jitter": 0.0,
    }
    assert out["env"] == {"A": "1", "B": ""}
    assert out["concurrency"] == "forbid" and out["catch_up"] == "once" and out["last_status"] == "success"
    assert out["source"] is None
    assert out["run_count"] == 2**40
    assert out["last_duration"] == 1.25
    assert out["next_runs"] == ["2026-02-16T12:01:30Z", "2026-02-16T12:03:00Z"]
    summary = jobs_pb2.JobSummary(schedule="every 90.5s", run_count=2**40, last_duration=1.25)
    status = jobs_pb2.GetStatusResponse(status="ok", jobs={"nightly": summary})
    rendered = codec.to_json_obj(status)
    assert rendered["jobs"]["nightly"]["schedule"] == "every 90.5s"
    assert rendered["jobs"]["nightly"]["run_count"] == 2**40 and rendered["jobs"]["nightly"]["last_status"] is None
    assert "env" not in rendered["jobs"]["nightly"]
    assert rendered["broker"] is None


def test_duration_and_mask_output_forms() -> None:
    d = jobs_pb2.Job()
    d.timeout.seconds, d.timeout.nanos = -1, -500_000_000
    d.start_jitter.nanos = 250_000
    assert codec.to_json_obj(d)["timeout"] == "-1.5s"
    assert codec.to_json_obj(d)["start_jitter"] == "0.00025s"
    req = tasks_pb2.UpdateTaskRequest(task_id="T1")
    req.update_mask.paths.extend(["status", "slug"])
    assert codec.to_json_obj(req)["update_mask"] == ["status", "slug"]


def test_zoo_types_output() -> None:
    z = Zoo(u32=2**32 - 1, u64=2**64 - 1, s32=-5, f32=1.5, f64=math.inf, raw=b"\x00\xffhi", flag=True)
    z.colors.extend([1, 2, 0, 7])
    z.by_id[3] = "three"
    z.by_flag[True] = 2**50
    z.child.u32 = 1
    z.children.add(s32=1)
    out = codec.to_json_obj(z)
    assert out["u64"] == 2**64 - 1 and out["u32"] == 2**32 - 1 and out["s32"] == -5
    assert out["f32"] == 1.5 and out["f64"] == "Infinity"
    assert out["raw"] == "AP9oaQ=="
    # Short names drop the enum's own prefix; an unknown number stays a number.
    assert out["colors"] == ["red", "dark_blue", None, 7]
    assert out["color"] is None
    assert out["by_id"] == {"3": "three"} and out["by_flag"] == {"true": 2**50}
    assert out["child"]["u32"] == 1 and out["child"]["child"] is None
    assert out["children"][0]["s32"] == 1
    assert orjson.loads(codec.encode(out))["u64"] == 2**64 - 1
    assert codec.to_json_obj(Zoo(f64=math.nan))["f64"] == "NaN"


def test_field_to_json() -> None:
    resp = tasks_pb2.ListTasksResponse(tasks=[tasks_pb2.Task(id=1), tasks_pb2.Task(id=2)])
    assert [t["id"] for t in codec.field_to_json(resp, "tasks")] == [1, 2]
    assert codec.field_to_json(tasks_pb2.ListTasksResponse(), "tasks") == []
    status = jobs_pb2.GetStatusResponse(jobs={"a": jobs_pb2.JobSummary(description="d")})
    assert codec.field_to_json(status, "jobs")["a"]["description"] == "d"
    got = codec.field_to_json(tasks_pb2.GetTaskResponse(task=tasks_pb2.Task(id=5)), "task")
    assert got["id"] == 5
    # An unset message renders as its defaults, not null (grpc-gateway does the same).
    assert codec.field_to_json(tasks_pb2.GetTaskResponse(), "task")["id"] == 0
    assert codec.field_to_json(tasks_pb2.CancelTaskResponse(), "status") is None


# --------------------------------------------------------------------------- round trips


def roundtrip(msg: Message) -> Message:
    text = codec.encode(codec.to_json_obj(msg))
    back, _ = codec.from_json_obj(codec.decode(text), type(msg))
    return back


def test_task_round_trip() -> None:
    t = full_task()
    t.ClearField("estimate_minutes")  # gRPC-only (estimate_minutes_exact took its key): not in the JSON
    assert roundtrip(t) == t
    assert roundtrip(tasks_pb2.Task()) == tasks_pb2.Task()


def test_job_round_trip() -> None:
    j = full_job()
    assert roundtrip(j) == j
    z = Zoo(u32=7, u64=2**64 - 1, s32=-3, f32=0.5, f64=-2.25, raw=b"\x01\x02", flag=True, color=2)
    z.colors.extend([1, 2])
    z.by_id[-4] = "x"
    z.by_flag[False] = -9
    z.child.child.u32 = 9
    z.children.add(raw=b"q")
    assert roundtrip(z) == z


def test_round_trip_other_task_messages() -> None:
    ev = tasks_pb2.WatchTasksResponse(cursor=17, event=tasks_pb2.TaskEvent(id=17, task_id=42, event_type="created"))
    ev.event.created_at.FromSeconds(1)
    ev.task.CopyFrom(full_task())
    ev.task.ClearField("estimate_minutes")  # gRPC-only: not in the JSON
    assert roundtrip(ev) == ev
    req = tasks_pb2.UpdateTaskRequest(task_id="T1", status=tasks_pb2.TASK_STATUS_BLOCKED, requires_qa=False)
    req.update_mask.paths.extend(["status", "requires_qa"])
    assert roundtrip(req) == req


# --------------------------------------------------------------------------- input: names, presence


def test_json_name_limit_and_proto_name() -> None:
    by_json, present = codec.from_json_obj({"limit": 5}, tasks_pb2.ListTasksRequest)
    by_proto, _ = codec.from_json_obj({"page_size": 5}, tasks_pb2.ListTasksRequest)
    assert by_json.page_size == by_proto.page_size == 5
    assert present == ["page_size"]
    camel, _ = codec.from_json_obj({"estimateMinutes": 3}, tasks_pb2.CreateTaskRequest)
    assert camel.estimate_minutes_exact == 3  # the superseded field's JSON name sets its successor
    msg = parse_err({"limit": 5, "page_size": 6}, tasks_pb2.ListTasksRequest)
    assert "page_size" in msg and "more than once" in msg
    assert parse_err({"limit": "x"}, tasks_pb2.ListTasksRequest) == "limit: expected an integer, got string"


def test_http_json_key_supersedes_the_older_field() -> None:
    # Task.estimate_minutes_exact (double) is `estimate_minutes` over HTTP; the int32 it supersedes is not there.
    t = tasks_pb2.Task(estimate_minutes=12, estimate_minutes_exact=12.5)
    out = codec.to_json_obj(t)
    assert out["estimate_minutes"] == 12.5 and "estimate_minutes_exact" not in out
    assert not any(k.startswith("\x00") for k in out)
    # Whole values stay JSON integers, as the old integer key's clients read them.
    assert (
        codec.encode(codec.to_json_obj(tasks_pb2.Task(estimate_minutes_exact=30))).count(b'"estimate_minutes":30,') == 1
    )
    # Every name sets the new field: its key, its own proto and JSON names, the old field's JSON name.
    for key in ("estimate_minutes", "estimate_minutes_exact", "estimateMinutesExact", "estimateMinutes"):
        msg, present = codec.from_json_obj({key: 12.5}, tasks_pb2.UpdateTaskRequest)
        assert msg.estimate_minutes_exact == 12.5 and not msg.HasField("estimate_minutes")
        assert present == ["estimate_minutes_exact"]
    msg2 = parse_err({"estimate_minutes": 1, "estimateMinutes": 2}, tasks_pb2.UpdateTaskRequest)
    assert "more than once" in msg2
    assert parse_err({"estimate_minutes": "soon"}) == "estimate_minutes: expected a number, got string"


def test_null_is_present_but_unset_and_unknown_keys_ignored() -> None:
    msg, present = codec.from_json_obj(
        {"slug": None, "repos": None, "status": "blocked", "no_such_field": {"x": 1}, "queued_at": None},
        tasks_pb2.UpdateTaskRequest,
    )
    assert present == ["slug", "repos", "status", "queued_at"]
    assert not msg.HasField("slug") and not msg.HasField("queued_at") and list(msg.repos) == []
    assert msg.status == tasks_pb2.TASK_STATUS_BLOCKED


def test_top_level_must_be_object() -> None:
    for bad in ([1], "x", 3, None, True):
        assert err(codec.from_json_obj, bad, tasks_pb2.CreateTaskRequest).message.startswith(
            "body: expected a JSON object"
        )
    assert err(codec.merge_json_obj, [], jobs_pb2.Job(), "job.").message.startswith("job: expected a JSON object")


# --------------------------------------------------------------------------- input: integers


@pytest.mark.parametrize(
    ("value", "expected"),
    [(30, 30), ("30", 30), ("-7", -7), (5.0, 5), (2**31 - 1, 2**31 - 1), (-(2**31), -(2**31)), (1e3, 1000)],
)
def test_int32_accepts(value: Any, expected: int) -> None:
    msg, _ = codec.from_json_obj({"page_size": value}, tasks_pb2.ListTasksRequest)
    assert msg.page_size == expected


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("abc", "page_size: expected an integer, got string"),
        ("1.5", "page_size: expected an integer, got string"),
        (" 7", "page_size: expected an integer, got string"),
        ("1_000", "page_size: expected an integer, got string"),
        ("٣", "page_size: expected an integer, got string"),  # a non-ASCII digit
        ("", "page_size: expected an integer, got string"),
        (1.5, "page_size: expected an integer, got 1.5"),
        (True, "page_size: expected an integer, got boolean"),
        ([1], "page_size: expected an integer, got array"),
        ({}, "page_size: expected an integer, got object"),
        (2**31, "page_size: 2147483648 is out of range for int32"),
        (-(2**31) - 1, "page_size: -2147483649 is out of range for int32"),
        ("99999999999", "page_size: 99999999999 is out of range for int32"),
        ("9" * 400, "is out of range for int32"),
        (1e23, "is out of range for int32"),
    ],
)
def test_int32_rejects(value: Any, message: str) -> None:
    assert message in parse_err({"page_size": value}, tasks_pb2.ListTasksRequest)


def test_int64_and_unsigned_ranges() -> None:
    ok, _ = codec.from_json_obj({"after_cursor": str(2**63 - 1)}, tasks_pb2.WatchTasksRequest)
    assert ok.after_cursor == 2**63 - 1
    assert "out of range for int64" in parse_err({"after_cursor": 2**63}, tasks_pb2.WatchTasksRequest)
    z, _ = codec.from_json_obj({"u64": 2**64 - 1, "u32": "4294967295", "s32": -1}, Zoo)
    assert (z.u64, z.u32, z.s32) == (2**64 - 1, 2**32 - 1, -1)
    assert "-1 is out of range for uint32" in parse_err({"u32": -1}, Zoo)
    assert "out of range for uint64" in parse_err({"u64": "18446744073709551616"}, Zoo)
    # orjson turns a JSON integer beyond 64 bits into a float: still out of range, never wrapped.
    assert "out of range for uint64" in parse_err(codec.decode(b'{"u64": 99999999999999999999999}'), Zoo)


# --------------------------------------------------------------------------- input: other scalars


def test_floats() -> None:
    z, _ = codec.from_json_obj({"f64": 3, "f32": 0.25}, Zoo)
    assert z.f64 == 3.0 and z.f32 == 0.25
    z, _ = codec.from_json_obj({"f64": "-Infinity"}, Zoo)
    assert z.f64 == -math.inf
    assert parse_err({"f64": "3.5"}, Zoo) == "f64: expected a number, got string"
    assert parse_err({"f64": True}, Zoo) == "f64: expected a number, got boolean"
    assert "out of range for float" in parse_err({"f32": 1e39}, Zoo)


def test_bools_strings_bytes() -> None:
    msg, _ = codec.from_json_obj({"requires_qa": True, "name": "n"}, tasks_pb2.CreateTaskRequest)
    assert msg.requires_qa is True and msg.name == "n"
    bad: Any
    for bad in ("true", 1, 0, []):
        assert parse_err({"requires_qa": bad}).startswith("requires_qa: expected a boolean")
    assert parse_err({"name": 5}) == "name: expected a string, got number"
    assert parse_err({"name": ["a"]}) == "name: expected a string, got array"
    z, _ = codec.from_json_obj({"raw": "AP9oaQ"}, Zoo)  # unpadded
    assert z.raw == b"\x00\xffhi"
    z, _ = codec.from_json_obj({"raw": "-_8="}, Zoo)  # URL-safe alphabet
    assert z.raw == b"\xfb\xff"
    assert parse_err({"raw": "***"}, Zoo) == "raw: expected base64-encoded bytes"
    assert parse_err({"raw": 1}, Zoo) == "raw: expected a base64 string, got number"


# --------------------------------------------------------------------------- input: enums


@pytest.mark.parametrize("value", ["queued", "QUEUED", "Queued", "TASK_STATUS_QUEUED", "task_status_queued", 1])
def test_enum_accepts(value: Any) -> None:
    msg, _ = codec.from_json_obj({"status": value}, tasks_pb2.CreateTaskRequest)
    assert msg.status == tasks_pb2.TASK_STATUS_QUEUED


@pytest.mark.parametrize("value", ["bogus", "unspecified", "TASK_STATUS_UNSPECIFIED", 0, 99, ""])
def test_enum_rejects_unknown_and_unspecified(value: Any) -> None:
    msg = parse_err({"status": value})
    assert msg.startswith("status: unknown value")
    assert "expected one of: queued, active, completed, failed, cancelled, blocked" in msg


def test_enum_wrong_type_and_multiword_names() -> None:
    assert parse_err({"status": True}).startswith("status: expected a string (one of: queued, active")
    z, _ = codec.from_json_obj({"colors": ["red", "DARK_BLUE", "color_dark_blue"]}, Zoo)
    assert list(z.colors) == [1, 2, 2]
    req, _ = codec.from_json_obj({"group_by": "day"}, costs_pb2.SummarizeCostsRequest)
    assert req.group_by == costs_pb2.COST_GROUP_BY_DAY  # prefix from the enum name CostGroupBy


# --------------------------------------------------------------------------- input: timestamps, durations, masks


@pytest.mark.parametrize(
    ("text", "seconds", "nanos"),
    [
        ("2026-02-16T12:00:00Z", 1771243200, 0),
        ("2026-02-16T12:00:00z", 1771243200, 0),
        ("2026-02-16T13:30:00+01:30", 1771243200, 0),
        ("2026-02-16T07:00:00-0500", 1771243200, 0),
        ("2026-02-16T12:00:00.5Z", 1771243200, 500_000_000),
        ("2026-02-16T12:00:00.123456789Z", 1771243200, 123_456_789),
        ("2026-02-16 12:00:00", 1771243200, 0),  # naive: UTC
        ("2026-02-16T12:00", 1771243200, 0),
        ("2026-02-16", 1771200000, 0),
        ("1969-12-31T23:59:59Z", -1, 0),
    ],
)
def test_timestamp_accepts(text: str, seconds: int, nanos: int) -> None:
    msg, _ = codec.from_json_obj({"created_after": text}, tasks_pb2.ListTasksRequest)
    assert (msg.created_after.seconds, msg.created_after.nanos) == (seconds, nanos)


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("yesterday", "expected an RFC 3339 timestamp such as 2026-02-16T12:00:00Z"),
        ("2026-02-30T00:00:00Z", "invalid timestamp"),
        ("2026-02-16T25:00:00Z", "invalid timestamp"),
        ("2026-02-16T12:00:00+24:00", "invalid UTC offset"),
        ("2026-02-16T12:00:00.1234567891Z", "expected an RFC 3339 timestamp"),
        (1771243200, "expected an RFC 3339 timestamp string, got number"),
        ("0000-01-01T00:00:00Z", "invalid timestamp"),
    ],
)
def test_timestamp_rejects(value: Any, fragment: str) -> None:
    msg = parse_err({"created_after": value}, tasks_pb2.ListTasksRequest)
    assert msg.startswith("created_after: ") and fragment in msg


def test_durations() -> None:
    def dur(v: Any) -> tuple[int, int]:
        msg, _ = codec.from_json_obj({"timeout": v}, jobs_pb2.Job)
        return msg.timeout.seconds, msg.timeout.nanos

    assert dur("1.5s") == (1, 500_000_000)
    assert dur("-0.25s") == (0, -250_000_000)
    assert dur("90s") == (90, 0)
    assert dur(1.5) == (1, 500_000_000)
    assert dur(30) == (30, 0)
    assert dur("0.000000001s") == (0, 1)
    assert dur("2.5") == (2, 500_000_000)  # a bare number in a string reads as seconds
    bad: Any
    for bad in ("1.5m", "s", "1.1234567891s", "", True, []):
        assert parse_err({"timeout": bad}, jobs_pb2.Job).startswith("timeout: expected a duration")
    assert "out of range" in parse_err({"timeout": "999999999999s"}, jobs_pb2.Job)


def test_field_mask_input() -> None:
    msg, _ = codec.from_json_obj({"update_mask": ["status", "slug"]}, tasks_pb2.UpdateTaskRequest)
    assert list(msg.update_mask.paths) == ["status", "slug"]
    msg, _ = codec.from_json_obj({"update_mask": "status, slug"}, tasks_pb2.UpdateTaskRequest)
    assert list(msg.update_mask.paths) == ["status", "slug"]
    assert parse_err({"update_mask": [1]}, tasks_pb2.UpdateTaskRequest) == (
        "update_mask[0]: expected a field path string, got number"
    )
    assert parse_err({"update_mask": 3}, tasks_pb2.UpdateTaskRequest).startswith("update_mask: expected a list")


# --------------------------------------------------------------------------- input: containers, nesting


def test_repeated_and_maps() -> None:
    msg, _ = codec.from_json_obj({"repos": ["a/b", "c/d"]}, tasks_pb2.CreateTaskRequest)
    assert list(msg.repos) == ["a/b", "c/d"]
    assert parse_err({"repos": "a/b"}) == "repos: expected an array, got string"
    assert parse_err({"repos": ["a", 3]}) == "repos[1]: expected a string, got number"
    assert parse_err({"repos": ["a", None]}) == "repos[1]: null is not allowed here"
    job, _ = codec.from_json_obj({"env": {"A": "1"}}, jobs_pb2.Job)
    assert dict(job.env) == {"A": "1"}
    assert parse_err({"env": ["A"]}, jobs_pb2.Job) == "env: expected an object, got array"
    assert parse_err({"env": {"A": 1}}, jobs_pb2.Job) == "env.A: expected a string, got number"
    z, _ = codec.from_json_obj({"by_id": {"-3": "x"}, "by_flag": {"true": "5"}}, Zoo)
    assert dict(z.by_id) == {-3: "x"} and dict(z.by_flag) == {True: 5}
    assert parse_err({"by_id": {"x": "y"}}, Zoo) == "by_id.x: expected an integer, got string"
    st, _ = codec.from_json_obj({"jobs": {"a": {"enabled": True}}}, jobs_pb2.GetStatusResponse)
    assert st.jobs["a"].enabled is True
    assert parse_err({"jobs": {"a": 1}}, jobs_pb2.GetStatusResponse) == "jobs.a: expected an object, got number"


def test_nested_messages_and_dotted_paths() -> None:
    msg, _ = codec.from_json_obj(
        {"job": {"retry": {"max_retries": 2, "initial_backoff": "2s"}}}, jobs_pb2.CreateJobRequest
    )
    assert msg.job.retry.max_retries == 2 and msg.job.retry.initial_backoff.seconds == 2
    empty, _ = codec.from_json_obj({"job": {}}, jobs_pb2.CreateJobRequest)
    assert empty.HasField("job")  # `{}` sets the message
    assert (
        parse_err({"job": {"retry": {"max_retries": "many"}}}, jobs_pb2.CreateJobRequest)
        == "job.retry.max_retries: expected an integer, got string"
    )
    assert parse_err({"job": {"retry": []}}, jobs_pb2.CreateJobRequest) == "job.retry: expected an object, got array"
    assert parse_err({"children": [{"u32": -1}]}, Zoo) == "children[0].u32: -1 is out of range for uint32"


def test_oneof_conflict() -> None:
    msg = parse_err({"cron": "* * * * *", "interval": "5s"}, jobs_pb2.Job)
    assert msg.startswith("interval: only one of cron, interval, run_at may be set")
    ok, _ = codec.from_json_obj({"cron": None, "interval": "5s"}, jobs_pb2.Job)
    assert ok.WhichOneof("trigger") == "interval"


def test_recursion_depth_is_bounded() -> None:
    deep: dict[str, Any] = {}
    node = deep
    for _ in range(codec.MAX_DEPTH + 5):
        node["child"] = {}
        node = node["child"]
    msg = parse_err(deep, Zoo)
    assert "nested deeper than" in msg
    ok: dict[str, Any] = {}
    node = ok
    for _ in range(codec.MAX_DEPTH - 1):
        node["child"] = {}
        node = node["child"]
    codec.from_json_obj(ok, Zoo)


# --------------------------------------------------------------------------- query parameters


def test_query_params_grpc_gateway_rules() -> None:
    req = tasks_pb2.ListTasksRequest()
    codec.apply_query_params(
        req,
        {
            "status": ["queued"],
            "type": ["swe"],
            "limit": ["5"],
            "created_after": ["2026-02-16T12:00:00Z"],
            "unknown": ["x"],
            "status.nope": ["1"],
        },
        skip=set(),
    )
    assert req.status == tasks_pb2.TASK_STATUS_QUEUED and req.type == "swe" and req.page_size == 5
    assert req.created_after.seconds == 1771243200


def test_query_params_empty_values_mean_not_given() -> None:
    req = tasks_pb2.ListTasksRequest()
    codec.apply_query_params(req, {"status": [""], "type": [""], "limit": [""], "created_after": [""]}, skip=set())
    assert req == tasks_pb2.ListTasksRequest()


def test_query_params_repeated_nested_and_skip() -> None:
    req = tasks_pb2.CreateTaskRequest()
    codec.apply_query_params(req, {"repos": ["a/b", "c/d"], "name": ["n"], "requires_qa": ["true"]}, skip={"name"})
    assert list(req.repos) == ["a/b", "c/d"] and req.name == "" and req.requires_qa is True
    up = jobs_pb2.UpdateJobRequest()
    codec.apply_query_params(
        up, {"job.retry.max_retries": ["4"], "job.timeout": ["1.5s"], "update_mask": ["a,b", "c"]}, skip=set()
    )
    assert up.job.retry.max_retries == 4 and up.job.timeout.nanos == 500_000_000
    assert list(up.update_mask.paths) == ["a", "b", "c"]
    skipped = jobs_pb2.UpdateJobRequest()
    codec.apply_query_params(skipped, {"job.retry.max_retries": ["4"]}, skip={"job"})
    assert not skipped.HasField("job")
    lim = tasks_pb2.ListTaskEventsRequest()
    codec.apply_query_params(lim, {"limit": ["7"]}, skip={"task_id"})
    assert lim.page_size == 7


def test_query_params_errors() -> None:
    def q(params: dict[str, list[str]], cls: type[Message] = tasks_pb2.ListTasksRequest) -> str:
        return err(codec.apply_query_params, cls(), params, set()).message

    assert q({"limit": ["ten"]}) == "limit: expected an integer, got string"
    assert q({"page_size": ["1.5"]}) == "page_size: expected an integer, got string"
    assert q({"limit": ["1", "2"]}) == "limit: expected one value, got 2"
    assert q({"status": ["nope"]}).startswith('status: unknown value "nope"; expected one of: queued')
    assert q({"created_after": ["soon"]}).startswith("created_after: expected an RFC 3339 timestamp")
    assert (
        q({"requires_qa": ["maybe"]}, tasks_pb2.CreateTaskRequest) == 'requires_qa: expected true or false, got "maybe"'
    )
    assert q({"after_cursor": ["-1x"]}, tasks_pb2.WatchTasksRequest) == "after_cursor: expected an integer, got string"


def test_compile_field_path() -> None:
    fp = codec.compile_field_path(jobs_pb2.UpdateJobRequest.DESCRIPTOR, "job.name")
    req = jobs_pb2.UpdateJobRequest()
    fp.set_text(req, ["nightly"])
    assert req.job.name == "nightly"
    run = codec.compile_field_path(jobs_pb2.GetJobRunRequest.DESCRIPTOR, "run_id")
    with pytest.raises(ApiError) as e:
        run.set_text(jobs_pb2.GetJobRunRequest(), ["abc"])
    assert e.value.message == "run_id: expected an integer, got string"
    with pytest.raises(ValueError):
        codec.compile_field_path(jobs_pb2.UpdateJobRequest.DESCRIPTOR, "job.nope")
    with pytest.raises(ValueError):
        codec.compile_field_path(jobs_pb2.UpdateJobRequest.DESCRIPTOR, "job")  # a message: not from text


# --------------------------------------------------------------------------- bytes <-> JSON


def test_decode_errors() -> None:
    for body in (b"{", b"{'a': 1}", b"NaN", b"", b"\xff\xfe", b'{"a": "\xc3"}', b'"\\ud800"'):
        e = err(codec.decode, body)
        assert e.message.startswith("invalid JSON: "), e.message
    assert codec.decode(b'{"a": [1, 2.5, "\xc3\xa9"]}') == {"a": [1, 2.5, "é"]}
    assert codec.encode({"a": None, "b": 2**63}) == b'{"a":null,"b":9223372036854775808}'


# --------------------------------------------------------------------------- speed


# --------------------------------------------------------------------------- output from wire form (WireMessage)


def _wire_tasks() -> list[tasks_pb2.Task]:
    out = []
    for n in range(1, 6):
        t = tasks_pb2.Task(id=n, task_id=f"T{n}", name=f"task {n}", status=tasks_pb2.TASK_STATUS_QUEUED, repos=["o/r"])
        t.created_at.seconds = 1_700_000_000 + n
        t.updated_at.FromMicroseconds(1_700_000_000_123_456 + n)
        out.append(t)
    return out


def test_wire_json_spells_what_the_message_would() -> None:
    from lobwife_server.api.rpc import WireMessage

    tasks = _wire_tasks()
    full = tasks_pb2.ListTasksResponse(tasks=tasks, next_page_token="tok")
    wire = WireMessage(
        tasks_pb2.ListTasksResponse(next_page_token="tok"), {"tasks": [t.SerializeToString() for t in tasks]}
    )
    for _ in range(2):  # a miss, then hits from the fragment cache
        assert codec.wire_json(wire.base, wire.parts) == codec.encode(codec.to_json_obj(full))
        assert codec.wire_json(wire.base, wire.parts, "tasks") == codec.encode(codec.field_to_json(full, "tasks"))
        assert codec.wire_json(wire.base, wire.parts, "next_page_token") == b'"tok"'
    # The gRPC side: the bytes parse as the message they stand for.
    assert tasks_pb2.ListTasksResponse.FromString(wire.SerializeToString()) == full
    assert wire.to_message() == full
    empty = WireMessage(tasks_pb2.ListTasksResponse(), {"tasks": []})
    assert codec.wire_json(empty.base, empty.parts, "tasks") == b"[]"
    assert empty.to_message() == tasks_pb2.ListTasksResponse()


def test_wire_json_singular_part() -> None:
    from lobwife_server.api.rpc import WireMessage

    task = _wire_tasks()[0]
    full = tasks_pb2.GetTaskResponse(task=task)
    wire = WireMessage(tasks_pb2.GetTaskResponse(), {"task": task.SerializeToString()})
    assert codec.wire_json(wire.base, wire.parts, "task") == codec.encode(codec.field_to_json(full, "task"))
    assert codec.wire_json(wire.base, wire.parts) == codec.encode(codec.to_json_obj(full))
    assert wire.to_message() == full


def test_fragment_cache_is_content_addressed_and_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """A changed message has other bytes, so it can never be answered with an old JSON; and the cache stays bounded."""
    monkeypatch.setattr(codec, "FRAGMENT_CACHE_ENTRIES", 3)
    fd = tasks_pb2.ListTasksResponse.DESCRIPTOR.fields_by_name["tasks"]
    frags = codec._fragments_for(fd)
    frags.items.clear()
    frags.size = 0
    base = tasks_pb2.ListTasksResponse()
    task = _wire_tasks()[0]
    before = codec.wire_json(base, {"tasks": [task.SerializeToString()]}, "tasks")
    task.name = "renamed"
    after = codec.wire_json(base, {"tasks": [task.SerializeToString()]}, "tasks")
    assert b'"name":"renamed"' in after and after != before
    for t in _wire_tasks():
        codec.wire_json(base, {"tasks": [t.SerializeToString()]}, "tasks")
    assert len(frags.items) <= 3
    assert frags.size == sum(len(k) + len(v) for k, v in frags.items.items())


def test_single_part_is_encoded_as_the_message_would_be() -> None:
    from lobwife_server.api.rpc import WireMessage, single_part

    task = _wire_tasks()[0]
    data = task.SerializeToString()
    wire = single_part(tasks_pb2.CreateTaskResponse(), "task", data, task)
    assert wire.encoded is not None
    assert wire.SerializeToString() == tasks_pb2.CreateTaskResponse(task=task).SerializeToString()
    assert wire.SerializeToString() == WireMessage(tasks_pb2.CreateTaskResponse(), {"task": data}).SerializeToString()
    assert wire.to_message() == tasks_pb2.CreateTaskResponse(task=task)
    assert wire.messages == {"task": task}
    assert codec.wire_json(wire.base, wire.parts, "task") == codec.encode(
        codec.field_to_json(wire.to_message(), "task")
    )
