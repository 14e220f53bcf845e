"""The method table and the one dispatch path that both transports use.

Every RPC of the contract is found by walking the service descriptors; a
service implementation is a plain object with one ``async def Name(request,
ctx)`` per RPC it implements (an async generator for server-streaming RPCs).
An RPC with no method answers UNIMPLEMENTED. The gRPC binding below and the
HTTP gateway both call :meth:`Dispatcher.unary` / :meth:`Dispatcher.stream`, so
validation, the auth hook, error mapping, logging and metrics are one code path.
Validation there is the contract's: after the auth hook, each request's REQUIRED
fields (``google.api.field_behavior``) are checked by a check built once per method
(:mod:`lobwife_server.api.fields`), before the implementation sees the request.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import grpc
from google.protobuf import descriptor, message, message_factory
from grpc_status import rpc_status

from lobwife.v1.services import SERVICES
from lobwife_server.api import fields
from lobwife_server.core import metrics
from lobwife_server.core.errors import ApiError, internal, invalid_argument, unimplemented

log = logging.getLogger("lobwife.rpc")

#: Every service of the contract: generated from the protos (lobwife.v1.services), never kept by hand.
SERVICE_DESCRIPTORS: tuple[descriptor.ServiceDescriptor, ...] = SERVICES
#: An attribute of an implementation that looks like an RPC (``GetTask``): one the contract does not
#: define is a typo that would otherwise answer UNIMPLEMENTED without a word.
_RPC_NAME = re.compile(r"^[A-Z][A-Za-z0-9]*$")


class ContractError(Exception):
    """The implementations and the contract disagree; the server refuses to start."""


class CallContext:
    """What a handler may know about the call, whatever the transport."""

    __slots__ = ("_metadata", "_metadata_source", "_peer", "http_status", "identity", "method", "transport")

    def __init__(
        self,
        method: str,
        transport: str,
        metadata_source: Callable[[], Mapping[str, str]],
        peer: str | Callable[[], str] = "",
    ) -> None:
        self.method = method
        self.transport = transport
        self._peer = peer
        self.identity: object | None = None
        #: Set by a handler to answer a successful call with another HTTP status than the route's (as
        #: grpc-gateway's ``x-http-code``): ``GET /health`` is 503 while the server is starting. gRPC
        #: ignores it.
        self.http_status: int | None = None
        self._metadata_source = metadata_source
        self._metadata: Mapping[str, str] | None = None

    @property
    def peer(self) -> str:
        """The client's address; asked of the transport on first use (grpc's costs a call into its core)."""
        if not isinstance(self._peer, str):
            self._peer = self._peer()
        return self._peer

    @property
    def metadata(self) -> Mapping[str, str]:
        """Request metadata (gRPC) or headers (HTTP), keys lowercased; built on first use."""
        if self._metadata is None:
            self._metadata = self._metadata_source()
        return self._metadata

    def caller(self) -> str:
        """Who asked, for an audit trail: ``role:subject`` of the credential (auth on), else the peer's
        address (``anonymous@...``). Never the credential itself."""
        identity = self.identity
        subject = getattr(identity, "subject", None)
        if isinstance(subject, str) and subject:
            role = getattr(identity, "role", None)
            role_name = getattr(role, "value", role)
            return f"{role_name}:{subject}" if isinstance(role_name, str) and role_name else subject
        return f"anonymous@{self.peer}" if self.peer else "anonymous"


class Authorizer(Protocol):
    """The hook every call passes before anything else looks at it (lobwife_server.auth implements it).

    It gets the parsed request so that a rule bound to one task can compare the task the request
    names with the caller's. It is a coroutine because a credential may need I/O to check (a
    signing-key refetch, a task's state); a cached credential costs no suspension.
    """

    async def authorize(self, method: MethodInfo, request: message.Message, ctx: CallContext) -> None:
        """Raise ApiError (UNAUTHENTICATED / PERMISSION_DENIED) to refuse the call; may set ``ctx.identity``."""


class AllowAll:
    """The default hook: no authentication configured, every call allowed."""

    async def authorize(self, method: MethodInfo, request: message.Message, ctx: CallContext) -> None:
        return None


@dataclass(frozen=True)
class MethodInfo:
    """One RPC of the contract as the dispatcher serves it: its descriptor, message types, implementation (None:
    UNIMPLEMENTED), meters and REQUIRED check, all decided at start."""

    service: str
    name: str
    full_name: str  # "/lobwife.v1.TaskService/GetTask"
    descriptor: descriptor.MethodDescriptor
    request_type: type[message.Message]
    response_type: type[message.Message]
    server_streaming: bool
    impl: Callable[..., Any] | None
    meters: Mapping[str, metrics.CallMeter]
    #: The check of the request's REQUIRED fields (api.fields), None when it has none.
    check_required: fields.Check | None = None


class WireMessage:
    """A response message whose message-typed fields are given already serialized.

    A handler that keeps messages in wire form (the task cache keeps each task's
    serialized bytes) returns this instead of copying those messages into a fresh
    response only for the transport to serialize them again. Both transports take
    it wherever a handler may return a message:

    - gRPC sends ``base``'s encoding followed by each part framed as its field.
      Concatenated encodings of a message parse as their merge, so a peer reads one
      ordinary message (``base`` must leave the parts' fields unset).
    - The HTTP gateway renders each part's JSON from its bytes through the codec's
      content-addressed cache (:func:`codec.wire_json`), so an element seen before
      costs a dict lookup instead of a conversion.

    ``parts`` maps the name of a message-typed field of ``base`` to the serialized
    value (a singular field) or values (a repeated field). ``messages``, when the
    handler has them, gives the same parts as messages: the gateway then renders
    those directly and leaves its fragment cache alone (a snapshot just written is
    new, so caching its JSON would only push out entries that lists reuse).
    """

    __slots__ = ("base", "encoded", "messages", "parts")

    def __init__(
        self,
        base: message.Message,
        parts: Mapping[str, bytes | Sequence[bytes]],
        messages: Mapping[str, message.Message] | None = None,
        encoded: bytes | None = None,
    ) -> None:
        self.base = base
        self.parts = parts
        self.messages = messages
        #: The whole response's encoding, when whoever built it already made it
        #: (see :func:`single_part`); else it is assembled on demand.
        self.encoded = encoded

    def SerializeToString(self) -> bytes:
        # The protobuf method name, so that one serializer takes either kind of response.
        if self.encoded is not None:
            return self.encoded
        out = [self.base.SerializeToString()]
        add = out.append  # pieces joined once: no concatenated copy of each part
        desc: Any = self.base.DESCRIPTOR
        for name, value in self.parts.items():
            tag = _field_tag(desc, name)
            for v in (value,) if isinstance(value, bytes) else value:
                add(tag)
                add(_length(len(v)))
                add(v)
        return b"".join(out)

    def to_message(self) -> message.Message:
        """The response as an ordinary message (for in-process callers and tests)."""
        msg = type(self.base)()
        msg.ParseFromString(self.SerializeToString())
        return msg


Response = message.Message | WireMessage


def single_part(base: message.Message, name: str, data: bytes, msg: message.Message | None = None) -> WireMessage:
    """A response whose only set field is the message field ``name``, given as ``data``, encoded now.

    For a thread that builds responses off the event loop (the storage writer does,
    for creates): the loop is then left with nothing to assemble. ``base`` must be
    empty, and is not copied: a shared instance that nobody mutates is fine.
    """
    encoded = b"".join((_field_tag(base.DESCRIPTOR, name), _length(len(data)), data))
    return WireMessage(base, {name: data}, None if msg is None else {name: msg}, encoded)


_tags: dict[tuple[Any, str], bytes] = {}
_lengths: dict[int, bytes] = {}


def _varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _field_tag(desc: Any, name: str) -> bytes:
    tag = _tags.get((desc, name))
    if tag is None:
        fd = desc.fields_by_name[name]
        if fd.type != descriptor.FieldDescriptor.TYPE_MESSAGE:
            raise TypeError(f"{desc.full_name}.{name} is not a message field")
        tag = _tags[(desc, name)] = _varint(fd.number << 3 | 2)  # wire type 2: length-delimited
    return tag


def _length(n: int) -> bytes:
    prefix = _lengths.get(n)
    if prefix is None:
        prefix = _varint(n)
        if n < 1 << 16:  # bounded: messages this size are the common case
            _lengths[n] = prefix
    return prefix


#: The transports a CallContext names; each method gets a metrics.CallMeter for each.
TRANSPORTS = ("grpc", "http")


class Dispatcher:
    """The one path of every call, gRPC or HTTP: the method table built from the contract, admission (built,
    allowed, complete), errors to status codes, metrics.

    Refuses (ContractError) implementations that disagree with the contract.
    """

    def __init__(self, implementations: Mapping[str, object], authorizer: Authorizer | None = None) -> None:
        self.authorizer = authorizer or AllowAll()
        self.methods: dict[str, MethodInfo] = {}
        _check_known(implementations)
        for svc in SERVICE_DESCRIPTORS:
            impl_obj = implementations.get(svc.full_name)
            for m in svc.methods:
                impl = getattr(impl_obj, m.name, None) if impl_obj is not None else None
                info = MethodInfo(
                    service=svc.full_name,
                    name=m.name,
                    full_name=f"/{svc.full_name}/{m.name}",
                    descriptor=m,
                    request_type=message_factory.GetMessageClass(m.input_type),
                    response_type=message_factory.GetMessageClass(m.output_type),
                    server_streaming=m.server_streaming,
                    impl=impl,
                    meters={t: metrics.CallMeter(svc.full_name, m.name, t) for t in TRANSPORTS},
                    check_required=fields.required_check(m.input_type),
                )
                self.methods[info.full_name] = info

    @property
    def authorizer(self) -> Authorizer:
        return self._authorizer

    @authorizer.setter
    def authorizer(self, value: Authorizer) -> None:
        self._authorizer = value
        # Read on every call: with the default hook the call skips the await altogether.
        self._checks_auth = type(value) is not AllowAll

    def check_complete(self, not_built: Mapping[str, str]) -> None:
        """ContractError unless every RPC is implemented or listed in ``not_built``.

        ``not_built`` maps a service (``lobwife.v1.BrokerService``) or one method
        (``/lobwife.v1.JobService/TriggerSync``) to why it answers UNIMPLEMENTED; an entry
        that is implemented after all, or names nothing in the contract, is an error too.
        """
        problems = []
        for m in self.methods.values():
            listed = m.full_name in not_built or m.service in not_built
            if m.impl is None and not listed:
                problems.append(f"{m.full_name} is neither implemented nor listed as not built yet")
            elif m.impl is not None and m.full_name in not_built:
                problems.append(f"{m.full_name} is implemented but listed as not built yet")
        known = {m.full_name for m in self.methods.values()} | {m.service for m in self.methods.values()}
        for key in not_built:
            if key not in known:
                problems.append(f"{key} is listed as not built yet, but the contract has no such RPC")
        if problems:
            raise ContractError("; ".join(problems))

    def _admit(self, m: MethodInfo, request: message.Message, ctx: CallContext) -> None:
        """What every allowed call passes before its implementation, on both transports: built, complete.

        The auth hook runs before it (in unary/stream: it is awaited), so a caller that may not call an
        RPC learns nothing from it, not even whether it is built or what its request lacks.
        """
        if m.impl is None:
            raise unimplemented(m.full_name)
        if m.check_required is not None:
            m.check_required(request)

    async def unary(self, m: MethodInfo, request: message.Message, ctx: CallContext) -> Response:
        start = time.perf_counter()
        code = "OK"
        try:
            if self._checks_auth:  # the default allows all: no call into it
                await self._authorizer.authorize(m, request, ctx)
            self._admit(m, request, ctx)
            assert m.impl is not None
            result: Response = await m.impl(request, ctx)
            return result
        except Exception as e:
            code, err = _failure(m, ctx, e)
            if err is e:
                raise
            raise err from e
        finally:
            m.meters[ctx.transport].observe(code, time.perf_counter() - start)

    async def stream(self, m: MethodInfo, request: message.Message, ctx: CallContext) -> AsyncIterator[message.Message]:
        code = "OK"
        start = time.perf_counter()
        try:
            if self._checks_auth:
                await self._authorizer.authorize(m, request, ctx)
            self._admit(m, request, ctx)
            assert m.impl is not None
            async for item in m.impl(request, ctx):
                yield item
        except Exception as e:
            code, err = _failure(m, ctx, e)
            if err is e:
                raise
            raise err from e
        finally:
            m.meters[ctx.transport].observe(code, time.perf_counter() - start)

    def grpc_handlers(self) -> list[grpc.GenericRpcHandler[Any, Any]]:
        by_service: dict[str, dict[str, grpc.RpcMethodHandler[Any, Any]]] = {}
        for m in self.methods.values():
            by_service.setdefault(m.service, {})[m.name] = self._grpc_handler(m)
        return [grpc.method_handlers_generic_handler(svc, handlers) for svc, handlers in by_service.items()]

    def _grpc_handler(self, m: MethodInfo) -> grpc.RpcMethodHandler[Any, Any]:
        # Requests arrive as bytes and are parsed here, not by grpc's
        # deserializer: a message grpc cannot parse (a string field with
        # invalid UTF-8, say) then gets INVALID_ARGUMENT instead of INTERNAL.
        parse = m.request_type.FromString
        serialize = m.response_type.SerializeToString
        dispatcher = self

        if m.server_streaming:

            async def stream_handler(raw: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
                ctx = _GrpcCallContext(m.full_name, context)
                try:
                    async for item in dispatcher.stream(m, _parse(parse, raw), ctx):
                        yield item
                except ApiError as e:
                    await _abort(context, e)

            return grpc.unary_stream_rpc_method_handler(stream_handler, response_serializer=serialize)

        async def unary_handler(raw: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            try:
                # dispatcher.unary turns anything its method raises into an ApiError,
                # so a DecodeError here can only be this request's.
                return await dispatcher.unary(m, parse(raw), _GrpcCallContext(m.full_name, context))
            except message.DecodeError as e:
                await _abort(context, _undecodable(e))
            except ApiError as e:
                await _abort(context, e)

        return grpc.unary_unary_rpc_method_handler(unary_handler, response_serializer=_serialize)


def _serialize(resp: Response) -> bytes:
    # A message or a WireMessage: both spell it SerializeToString.
    return resp.SerializeToString()


def _parse(parse: Callable[[bytes], message.Message], raw: bytes) -> message.Message:
    try:
        return parse(raw)
    except message.DecodeError as e:
        raise _undecodable(e) from None


def _undecodable(e: message.DecodeError) -> ApiError:
    # The decoder names the problem (e.g. "String field had bad UTF-8") but not the field.
    return invalid_argument("request", f"cannot be parsed: {str(e).rpartition(': ')[2]}")


async def _abort(context: grpc.aio.ServicerContext[Any, Any], e: ApiError) -> None:
    """End the call with the error's google.rpc.Status (code, message, and details in the trailers)."""
    status = rpc_status.to_status(e.to_status())
    await context.abort(status.code, status.details, status.trailing_metadata)


class _GrpcCallContext(CallContext):
    """A CallContext over a grpc.aio call: metadata and peer are asked of grpc only when used."""

    __slots__ = ("_context",)

    def __init__(self, method: str, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        # No super().__init__: this runs on every gRPC call, and the base's sources are not used.
        self.method = method
        self.transport = "grpc"
        self.identity = None
        self.http_status = None
        self._metadata = None
        self._peer = ""
        self._context = context

    @property
    def peer(self) -> str:
        peer = self._peer
        if not isinstance(peer, str) or not peer:
            peer = self._peer = self._context.peer()
        return peer

    @property
    def metadata(self) -> Mapping[str, str]:
        if self._metadata is None:
            md = self._context.invocation_metadata() or ()
            self._metadata = {k.lower(): v if isinstance(v, str) else v.decode("latin-1") for k, v in md}
        return self._metadata


def _log_error(m: MethodInfo, ctx: CallContext, e: ApiError) -> None:
    level = logging.WARNING if e.code in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNAVAILABLE) else logging.INFO
    log.log(
        level,
        "%s failed: %s %s",
        m.full_name,
        e.code.name,
        e.message,
        extra={"method": m.full_name, "code": e.code.name, "transport": ctx.transport},
    )


def _check_known(implementations: Mapping[str, object]) -> None:
    """ContractError for a service the contract lacks, or an RPC-looking method it does not define."""
    services = {s.full_name: s for s in SERVICE_DESCRIPTORS}
    problems = []
    for name, impl in implementations.items():
        svc = services.get(name)
        if svc is None:
            problems.append(f"{name} is not a service of the contract")
            continue
        methods = set(svc.methods_by_name)
        for attr in dir(type(impl)):
            if _RPC_NAME.match(attr) and callable(getattr(impl, attr, None)) and attr not in methods:
                problems.append(f"{type(impl).__name__}.{attr} is not an RPC of {name}")
    if problems:
        raise ContractError("; ".join(problems))


def _failure(m: MethodInfo, ctx: CallContext, e: Exception) -> tuple[str, ApiError]:
    """The status code a failed call is counted under and the error it answers (one rule for both kinds
    of call): an ApiError as it is, anything else INTERNAL, logged with its traceback."""
    if isinstance(e, ApiError):
        _log_error(m, ctx, e)
        return e.code.name, e
    log.error("unhandled error in %s", m.full_name, exc_info=e, extra={"method": m.full_name})
    return "INTERNAL", internal()
