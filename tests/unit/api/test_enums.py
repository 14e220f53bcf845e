"""One enum short-name rule (lobwife.enums) over every enum of the contract: gateway, client and CLI agree."""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Iterator
from typing import Any

import pytest
from google.protobuf import descriptor, descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import Message

import lobwife.v1
from lobwife import cli, client, enums
from lobwife_server.api import codec


def _walk(messages: Any) -> Iterator[tuple[Any, Any]]:
    for m in messages:
        for e in m.enum_types:
            yield e, m
        yield from _walk(m.nested_types)


def _contract_enums() -> list[Any]:
    """Every enum type of every generated *_pb2 module, nested ones included."""
    found: dict[str, Any] = {}
    for info in pkgutil.iter_modules(lobwife.v1.__path__):
        if not info.name.endswith("_pb2"):
            continue
        file = importlib.import_module(f"lobwife.v1.{info.name}").DESCRIPTOR
        for e in file.enum_types_by_name.values():
            found[e.full_name] = e
        for e, _ in _walk(file.message_types_by_name.values()):
            found[e.full_name] = e
    return sorted(found.values(), key=lambda e: e.full_name)


CONTRACT_ENUMS = _contract_enums()


def _a_field_of(enum: Any) -> tuple[type[Message], str] | None:
    """A message of the contract with a singular field of this enum type (to go through the codecs)."""
    for info in pkgutil.iter_modules(lobwife.v1.__path__):
        if not info.name.endswith("_pb2"):
            continue
        file = importlib.import_module(f"lobwife.v1.{info.name}").DESCRIPTOR
        stack = list(file.message_types_by_name.values())
        while stack:
            m = stack.pop()
            stack.extend(m.nested_types)
            for fd in m.fields:
                if fd.enum_type is enum and not fd.is_repeated:
                    return message_factory.GetMessageClass(m), fd.name
    return None


def test_the_contract_has_enums_and_their_values_carry_the_prefix() -> None:
    names = {e.full_name for e in CONTRACT_ENUMS}
    assert {"lobwife.v1.TaskStatus", "lobwife.v1.RunStatus", "lobwife.v1.CatchUpPolicy"} <= names
    for e in CONTRACT_ENUMS:
        prefix = enums.value_prefix(e)
        # buf's ENUM_VALUE_PREFIX: so no short name falls back to a whole name.
        assert all(v.name.startswith(prefix) for v in e.values), (e.full_name, prefix)
        assert enums.is_unspecified(e.values_by_number[0]), e.full_name


def _agree(e: Any, where: tuple[type[Message], str] | None) -> None:
    shorts = enums.short_names(e)
    assert codec.enum_short_names(e) == shorts  # the gateway's names are these
    seen: set[str] = set()
    for v in e.values:
        short = shorts[v.number]
        if enums.is_unspecified(v):
            assert short is None
            assert enums.parse(e, v.name) is None and enums.parse(e, "unspecified") is None
            assert cli.enum_text(e, v.number) == "-"
            with pytest.raises(ValueError):
                client.parse_enum(e, v.name, "f")
            continue
        assert short is not None and short == short.lower() and short not in seen
        seen.add(short)
        # Round trip: the short name, the full name (any case) and the number all mean this value.
        assert enums.short_name(e, v.number) == short
        assert enums.parse(e, short) == v.number
        assert enums.parse(e, short.upper()) == v.number
        assert enums.parse(e, v.name) == v.number
        assert client.parse_enum(e, short, "f") == v.number
        assert client.parse_enum(e, v.name, "f") == v.number
        assert client.parse_enum(e, short.replace("_", "-"), "f") == v.number
        assert cli.enum_text(e, v.number) == short
        if where is None:
            continue
        cls, name = where
        msg = cls(**{name: v.number})
        assert codec.to_json_obj(msg)[name] == short  # the gateway's output
        assert cli.message_to_dict(msg)[name] == short  # the CLI's --json output
        parsed, _ = codec.from_json_obj({name: short}, cls)  # the gateway's input
        assert getattr(parsed, name) == v.number
    if where is not None:
        cls, name = where
        # The unset value: null from the gateway and the CLI alike.
        assert codec.to_json_obj(cls())[name] is None
        assert cli.message_to_dict(cls())[name] is None


@pytest.mark.parametrize("enum", CONTRACT_ENUMS, ids=lambda e: e.full_name)
def test_every_enum_round_trips_and_gateway_client_and_cli_agree(enum: Any) -> None:
    _agree(enum, _a_field_of(enum))


def test_prefixes_of_acronyms_digits_and_nested_enums() -> None:
    def prefix(name: str) -> str:
        return enums.value_prefix(descriptor_pb2.EnumDescriptorProto(name=name))  # type: ignore[arg-type]

    assert prefix("TaskStatus") == "TASK_STATUS_"
    assert prefix("JWTRole") == "JWT_ROLE_"
    assert prefix("HTTPServerV2") == "HTTP_SERVER_V2_"
    assert prefix("Severity") == "SEVERITY_"
    assert prefix("OAuth2Scope") == "O_AUTH2_SCOPE_"


def _acronym_contract() -> tuple[Any, Any, type[Message]]:
    """A JWTRole enum and an enum nested in a message, in a file of their own."""
    pool = descriptor_pool.Default()
    name = "lobwife_test/enums.proto"
    try:
        pool.FindFileByName(name)
    except KeyError:
        f = descriptor_pb2.FileDescriptorProto(name=name, package="lobwife_test.enums", syntax="proto3")
        role = f.enum_type.add(name="JWTRole")
        for i, v in enumerate(["JWT_ROLE_UNSPECIFIED", "JWT_ROLE_ADMIN", "JWT_ROLE_READ_ONLY"]):
            role.value.add(name=v, number=i)
        token = f.message_type.add(name="Token")
        mode = token.enum_type.add(name="HTTPMode")
        for i, v in enumerate(["HTTP_MODE_UNSPECIFIED", "HTTP_MODE_TLS", "HTTP_MODE_PLAIN_TEXT"]):
            mode.value.add(name=v, number=i)
        T = descriptor_pb2.FieldDescriptorProto
        token.field.add(name="role", number=1, type=T.TYPE_ENUM, type_name=".lobwife_test.enums.JWTRole")
        token.field.add(name="mode", number=2, type=T.TYPE_ENUM, type_name=".lobwife_test.enums.Token.HTTPMode")
        pool.Add(f)
    tok = pool.FindMessageTypeByName("lobwife_test.enums.Token")
    return (
        pool.FindEnumTypeByName("lobwife_test.enums.JWTRole"),
        tok.enum_types_by_name["HTTPMode"],
        (message_factory.GetMessageClass(tok)),
    )


def test_an_acronym_enum_gets_the_same_names_everywhere() -> None:
    role, mode, token = _acronym_contract()
    assert dict(enums.short_names(role)) == {0: None, 1: "admin", 2: "read_only"}
    assert dict(enums.short_names(mode)) == {0: None, 1: "tls", 2: "plain_text"}
    _agree(role, (token, "role"))
    _agree(mode, (token, "mode"))
    assert client.parse_enum(role, "read-only", "role") == 2
    # A number the enum lacks stays a number for people, and is refused by the client.
    assert cli.enum_text(role, 7) == "7"
    with pytest.raises(ValueError, match=r"role: unknown value 7 \(one of admin, read_only\)"):
        client.parse_enum(role, 7, "role")


def test_a_value_without_the_prefix_keeps_its_whole_name() -> None:
    pool = descriptor_pool.DescriptorPool()
    f = descriptor_pb2.FileDescriptorProto(name="odd.proto", package="odd", syntax="proto3")
    e = f.enum_type.add(name="Colour")
    for i, v in enumerate(["COLOUR_UNSPECIFIED", "RED", "COLOUR_"]):
        e.value.add(name=v, number=i)
    pool.Add(f)
    colour: descriptor.EnumDescriptor = pool.FindEnumTypeByName("odd.Colour")
    assert dict(enums.short_names(colour)) == {0: None, 1: "red", 2: "colour_"}
    assert enums.lookup(colour) == {"red": 1, "colour_": 2}


def test_the_clients_task_status_helpers_use_the_same_names() -> None:
    e = client.TaskStatus.DESCRIPTOR
    for number, short in enums.short_names(e).items():
        if short is None:
            continue
        assert client.status_name(number) == short
        assert client.parse_status(short) == number
        assert client.parse_status(e.values_by_number[number].name) == number
