"""The RPCs the client calls, checked against the contract, and what a builder hands a face to do.

:class:`Rpc` names one RPC of ``lobwife.v1`` with its message types; making one for an RPC the
contract lacks (or with other types) fails at import. :class:`Unary` is one call and the part of
its answer the method returns; :class:`Pages` is a list call repeated with each page token.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

from google.protobuf.descriptor import MethodDescriptor
from google.protobuf.message import Message

from lobwife.v1.services import SERVICES

ReqT = TypeVar("ReqT", bound=Message)
RespT = TypeVar("RespT", bound=Message)
R = TypeVar("R")

#: Every RPC of the contract, by full name (``lobwife.v1.TaskService.CreateTask``).
CONTRACT: dict[str, MethodDescriptor] = {m.full_name: m for s in SERVICES for m in s.methods}


@dataclass(frozen=True)
class Rpc(Generic[ReqT, RespT]):
    """One RPC of the contract: ``Rpc("TaskService", "GetTask", GetTaskRequest, GetTaskResponse)``."""

    service: str
    name: str
    request: type[ReqT]
    response: type[RespT]
    descriptor: MethodDescriptor = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        found = CONTRACT.get(self.full_name)
        if found is None:
            raise LookupError(f"{self.full_name} is not an RPC of the contract")
        if (found.input_type.full_name, found.output_type.full_name) != (
            self.request.DESCRIPTOR.full_name,
            self.response.DESCRIPTOR.full_name,
        ):
            takes, answers = found.input_type.full_name, found.output_type.full_name
            raise TypeError(f"{self.full_name} takes {takes} and answers {answers}")
        object.__setattr__(self, "descriptor", found)

    @property
    def full_name(self) -> str:
        return f"lobwife.v1.{self.service}.{self.name}"

    @property
    def streaming(self) -> bool:
        return bool(self.descriptor.server_streaming)


def stubs(channel: Any, rpcs: Iterable[Rpc[Any, Any]]) -> dict[str, Any]:
    """The callable of each RPC on ``channel`` (grpc or grpc.aio: the generated stubs take either), by full name."""
    made: dict[str, Any] = {}
    out: dict[str, Any] = {}
    for rpc in rpcs:
        service = rpc.descriptor.containing_service
        stub = made.get(service.full_name)
        if stub is None:
            # lobwife/v1/tasks.proto -> lobwife.v1.tasks_pb2_grpc.TaskServiceStub
            module = importlib.import_module(service.file.name.removesuffix(".proto").replace("/", ".") + "_pb2_grpc")
            stub = made[service.full_name] = getattr(module, f"{service.name}Stub")(channel)
        out[rpc.full_name] = getattr(stub, rpc.name)
    return out


@dataclass(frozen=True, slots=True)
class Unary(Generic[R]):
    """One unary call: ``request`` to ``rpc`` (deadline ``timeout``, else the client's); returns ``result(answer)``."""

    rpc: Rpc[Any, Any]
    request: Message
    timeout: float | None
    result: Callable[[Any], R]


def unary(rpc: Rpc[ReqT, RespT], request: ReqT, timeout: float | None, result: Callable[[RespT], R]) -> Unary[R]:
    """A :class:`Unary`, typed: the request must be the RPC's, ``result`` takes its answer."""
    return Unary(rpc, request, timeout, result)


def whole(rpc: Rpc[ReqT, RespT], request: ReqT, timeout: float | None) -> Unary[RespT]:
    """A :class:`Unary` whose method returns the whole answer."""
    return Unary(rpc, request, timeout, _itself)


def _itself(answer: RespT) -> RespT:
    return answer


class Page(Protocol):
    """A list response: anything with a ``next_page_token``."""

    @property
    def next_page_token(self) -> str: ...


PageT = TypeVar("PageT", bound=Page)


@dataclass(frozen=True, slots=True)
class Pages(Generic[R]):
    """A list call repeated with each ``next_page_token`` until it is empty, yielding ``items(page)``."""

    page: Callable[[str], Unary[Any]]
    items: Callable[[Any], Iterable[R]]


def pages(page: Callable[[str], Unary[PageT]], items: Callable[[PageT], Iterable[R]]) -> Pages[R]:
    """:class:`Pages`, typed: ``page(token)`` is the call for one page, ``items`` what to yield of it."""
    return Pages(page, items)
