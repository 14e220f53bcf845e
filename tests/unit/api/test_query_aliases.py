"""`(lobwife.v1.http_query_alias)`: another name of a field as an HTTP query parameter, read from the contract."""

from __future__ import annotations

import pytest
from google.protobuf import descriptor_pb2, descriptor_pool

from lobwife.v1 import annotations_pb2, tasks_pb2
from lobwife_server.api import gateway

FD = descriptor_pb2.FieldDescriptorProto


def test_list_tasks_takes_since_and_until() -> None:
    aliases = gateway._query_aliases(tasks_pb2.ListTasksRequest.DESCRIPTOR, frozenset(), "ListTasks")
    assert {a: fp.path for a, fp in aliases.items()} == {"since": "created_after", "until": "created_before"}


def test_an_alias_that_is_already_a_field_name_stops_the_start() -> None:
    pool = descriptor_pool.DescriptorPool()
    for dep in (descriptor_pb2.DESCRIPTOR, annotations_pb2.DESCRIPTOR):
        proto = descriptor_pb2.FileDescriptorProto()
        dep.CopyToProto(proto)
        pool.Add(proto)
    f = descriptor_pb2.FileDescriptorProto(
        name="alias_test.proto", package="aliastest", syntax="proto3", dependency=["lobwife/v1/annotations.proto"]
    )
    m = f.message_type.add(name="Req")
    m.field.add(name="since", number=1, type=FD.TYPE_STRING, label=FD.LABEL_OPTIONAL)
    other = m.field.add(name="created_after", number=2, type=FD.TYPE_STRING, label=FD.LABEL_OPTIONAL)
    other.options.Extensions[annotations_pb2.http_query_alias].append("since")
    pool.Add(f)
    desc = pool.FindMessageTypeByName("aliastest.Req")
    with pytest.raises(ValueError, match="query alias 'since' of created_after is already the name of a field"):
        gateway._query_aliases(desc, frozenset(), "Req")
