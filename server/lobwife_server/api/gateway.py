"""The HTTP/JSON gateway: grpc-gateway's conventions on aiohttp.

Every route comes from a method's ``google.api.http`` option (and its
``additional_bindings``); nothing here names an RPC. A request becomes the
RPC's request message -- body, then path parameters (which win), then query
parameters for fields bound by neither -- and goes through the same
:class:`~lobwife_server.api.rpc.Dispatcher` path as gRPC, so validation, auth,
errors and metrics are shared.

Performance: aiohttp sees one catch-all route and no middleware; this module's
router is a dict for literal paths plus a few compiled shapes per segment count,
and every binding precomputes what it needs (field paths, query filter, mask
rule, status), so a request costs a lookup, the codec and the dispatcher.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import urllib.parse
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import grpc
from aiohttp import web
from aiohttp.http import HttpVersion11
from aiohttp.streams import StreamReader
from aiohttp.web_protocol import RequestHandler, RequestPayloadError, _ErrInfo
from google.protobuf import descriptor, descriptor_pool
from google.protobuf.message import Message
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from lobwife.v1 import annotations_pb2
from lobwife_server.api import codec
from lobwife_server.api.limits import HttpLimits
from lobwife_server.api.rpc import CallContext, Dispatcher, MethodInfo, WireMessage
from lobwife_server.core import metrics
from lobwife_server.core.errors import HTTP_STATUS, ApiError, invalid_argument

log = logging.getLogger("lobwife.gateway")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
# An endpoint gets the request and the URL path split into raw segments (a
# custom verb already stripped off the last one).
_Endpoint = Callable[[web.Request, list[str]], Awaitable[web.StreamResponse]]

DEFAULT_MAX_BODY_BYTES = 1 << 20
_STATIC_DIR = Path(__file__).resolve().parent.parent / "static"

_JSON = "application/json"
_JSON_HEADERS = {"Content-Type": _JSON}
_NDJSON_HEADERS = {"Content-Type": "application/x-ndjson", "Cache-Control": "no-cache"}
# X-Accel-Buffering: a reverse proxy (nginx) must not hold events back.
_SSE_HEADERS = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
_BAD_REQUEST_TYPE = "type.googleapis.com/google.rpc.BadRequest"


@dataclass
class _GatewayState:
    draining: bool = False


_STATE = web.AppKey("lobwife_gateway_state", _GatewayState)


def set_draining(app: web.Application) -> None:
    """From now on every request answers 503 (shutdown: let clients go elsewhere)."""
    app[_STATE].draining = True


# --------------------------------------------------------------------------- responses


def _json_response(status: int, obj: Any, *, close: bool = False) -> web.Response:
    resp = web.Response(body=codec.encode(obj), status=status, headers=_JSON_HEADERS)
    if close:
        resp.force_close()
    return resp


def _error_obj(e: ApiError) -> dict[str, Any]:
    # `error` is the legacy key; `code` and `message` follow google.rpc.Status as
    # grpc-gateway renders it.
    body: dict[str, Any] = {"error": e.message, "code": e.code.value[0], "message": e.message}
    if e.violations:
        body["details"] = [
            {
                "@type": _BAD_REQUEST_TYPE,
                "field_violations": [{"field": f, "description": d} for f, d in e.violations],
            }
        ]
    return body


def _error_response(e: ApiError) -> web.Response:
    resp = _json_response(HTTP_STATUS.get(e.code, 500), _error_obj(e))
    if e.code == grpc.StatusCode.UNAUTHENTICATED:
        resp.headers["WWW-Authenticate"] = 'Bearer realm="lobwife"'  # RFC 6750: say which scheme is wanted
    return resp


def _plain_error(status: int, code: grpc.StatusCode, message: str, *, close: bool = False) -> web.Response:
    return _json_response(status, {"error": message, "code": code.value[0], "message": message}, close=close)


def _internal_error() -> web.Response:
    return _plain_error(500, grpc.StatusCode.INTERNAL, "internal error")


def _draining_response() -> web.Response:
    return _plain_error(503, grpc.StatusCode.UNAVAILABLE, "server is shutting down", close=True)


class _BodyTooLarge(Exception):
    pass


def _client_gone(request: web.Request) -> web.Response:
    # A client that hangs up mid-request is routine (timeouts, killed pods): one debug
    # line, and an answer nobody will read (aiohttp drops it).
    log.debug("HTTP %s %s: the client went away mid-request", request.method, request.path)
    return _plain_error(
        HTTP_STATUS[grpc.StatusCode.CANCELLED], grpc.StatusCode.CANCELLED, "the client went away", close=True
    )


def _too_large_response(limit: int) -> web.Response:
    # Connection: close -- the rest of the body is not read into memory; aiohttp
    # discards what the client still sends, then closes.
    return _plain_error(
        413,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        f"request body too large (limit {limit} bytes)",
        close=True,
    )


class _BadBody(Exception):
    """The body cannot be read: malformed (400) or too slow (408). The connection closes after the answer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message

    def response(self) -> web.Response:
        code = grpc.StatusCode.DEADLINE_EXCEEDED if self.status == 408 else grpc.StatusCode.INVALID_ARGUMENT
        return _plain_error(self.status, code, self.message, close=True)


async def _read_body(request: web.Request, limit: int) -> bytes:
    """The request body, reading no more than ``limit`` + 1 bytes."""
    try:
        return await _read_body_bytes(request, limit)
    except RequestPayloadError as e:
        # aiohttp's own verdict on the framing (bad chunk, bad compression).
        raise _BadBody(400, f"malformed request body: {e}") from None


async def _read_body_bytes(request: web.Request, limit: int) -> bytes:
    length = request.content_length
    if length is not None:
        if length > limit:
            raise _BodyTooLarge
        if length == 0:
            return b""
        try:
            return await request.content.readexactly(length)
        except asyncio.IncompleteReadError:
            raise invalid_argument("body", "the request body ended early") from None
    if not request.body_exists:
        return b""
    buf = bytearray()
    while True:
        chunk = await request.content.read(limit + 1 - len(buf))
        if not chunk:
            return bytes(buf)
        buf += chunk
        if len(buf) > limit:
            raise _BodyTooLarge


def _headers(request: web.Request) -> Callable[[], dict[str, str]]:
    return lambda: {k.lower(): v for k, v in request.headers.items()}


def _query_params(request: web.Request) -> dict[str, list[str]]:
    params: dict[str, list[str]] = {}
    for k, v in request.query.items():
        params.setdefault(k, []).append(v)
    return params


def _query_aliases(req_desc: Any, skip: frozenset[str], where: str) -> dict[str, codec.FieldPath]:
    """The request's ``(lobwife.v1.http_query_alias)`` names -> the field each sets.

    Read from the contract once per binding. An alias that is another field's name,
    or another field's alias, is a contract error at start-up, not a guess per request.
    """
    taken = {n for f in req_desc.fields for n in (f.name, f.json_name)}
    out: dict[str, codec.FieldPath] = {}
    for f in req_desc.fields:
        for alias in f.GetOptions().Extensions[annotations_pb2.http_query_alias]:
            if alias in taken or alias in out:
                raise ValueError(f"{where}: query alias {alias!r} of {f.name} is already the name of a field")
            if f.name not in skip:  # a field the path or body binds takes no query parameter
                out[alias] = codec.compile_field_path(req_desc, f.name)
    return out


def _apply_query_aliases(req: Any, params: dict[str, list[str]], aliases: dict[str, codec.FieldPath]) -> None:
    """Set the fields given by an alias (``?since=``), and take those parameters out of ``params``.

    An error names the parameter as the client wrote it; a field given both by an
    alias and by its own name is refused, naming both, rather than one silently winning.
    """
    for alias, fp in aliases.items():
        values = params.pop(alias, None)
        if values is None:
            continue
        for other in (fp.path, fp.field.json_name):
            if other in params:
                raise invalid_argument(fp.path, f"given twice, as {alias!r} and as {other!r}: they are one field")
        fp.set_text(req, values, alias)


# --------------------------------------------------------------------------- path templates


@dataclass(frozen=True)
class PathTemplate:
    """A parsed ``google.api.http`` path template.

    ``segments`` holds a literal per segment or None for a one-segment wildcard;
    ``tail`` is a final ``**``; ``variables`` maps a field path to its segment
    index (-1 = the ``**`` tail).
    """

    segments: tuple[str | None, ...]
    tail: bool
    verb: str
    variables: tuple[tuple[str, int], ...]

    @property
    def is_literal(self) -> bool:
        return not self.tail and all(s is not None for s in self.segments)

    def literal_path(self) -> str:
        return "/" + "/".join(s or "" for s in self.segments) + (":" + self.verb if self.verb else "")

    @property
    def shape(self) -> tuple[tuple[str | None, ...], bool, str]:
        return self.segments, self.tail, self.verb


_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*")
_LITERAL = re.compile(r"[^/{}*:]+")


def parse_template(template: str) -> PathTemplate:
    """Parse ``/api/v1/tasks/{task_id}``, ``/x/{a.b=*}``, ``/x/{rest=**}``,
    ``/api/v1/tasks:watch``, ``/f/{id}:resolve``. Multi-segment variable patterns
    (``{name=shelves/*}``) are not supported: ValueError."""
    if not template.startswith("/"):
        raise ValueError(f"path template must start with '/': {template!r}")
    if template == "/":
        return PathTemplate((), False, "", ())
    raw: list[str] = []
    cur: list[str] = []
    depth = 0
    for ch in template[1:]:
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
        if ch == "/" and depth == 0:
            raw.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    raw.append("".join(cur))
    if depth != 0:
        raise ValueError(f"unbalanced braces in {template!r}")
    verb = ""
    last = raw[-1]
    colon = last.rfind(":")
    if colon >= 0 and "}" not in last[colon:]:
        verb = last[colon + 1 :]
        raw[-1] = last[:colon]
        if not _LITERAL.fullmatch(verb):
            raise ValueError(f"bad custom verb in {template!r}")
    segments: list[str | None] = []
    variables: list[tuple[str, int]] = []
    tail = False
    for i, seg in enumerate(raw):
        is_last = i == len(raw) - 1
        if seg.startswith("{") and seg.endswith("}"):
            name, _, pattern = seg[1:-1].partition("=")
            if not _IDENT.fullmatch(name):
                raise ValueError(f"bad variable {seg!r} in {template!r}")
            if pattern in ("", "*"):
                variables.append((name, i))
                segments.append(None)
            elif pattern == "**" and is_last:
                variables.append((name, -1))
                tail = True
            else:
                raise ValueError(f"unsupported variable pattern {seg!r} in {template!r}")
        elif seg == "*":
            segments.append(None)
        elif seg == "**" and is_last:
            tail = True
        elif _LITERAL.fullmatch(seg):
            segments.append(seg)
        else:
            raise ValueError(f"bad segment {seg!r} in {template!r}")
    return PathTemplate(tuple(segments), tail, verb, tuple(variables))


class _Shape:
    """Every binding whose template has one shape, by HTTP method."""

    __slots__ = ("literal_count", "literals", "methods", "n", "suffix", "tail")

    def __init__(self, t: PathTemplate) -> None:
        self.literals = t.segments
        self.n = len(t.segments)
        self.tail = t.tail
        self.suffix = ":" + t.verb if t.verb else ""
        self.literal_count = sum(1 for s in t.segments if s is not None)
        self.methods: dict[str, _Endpoint] = {}

    def match(self, parts: list[str]) -> list[str] | None:
        if self.suffix:
            last = parts[-1]
            if not last.endswith(self.suffix) or len(last) == len(self.suffix):
                return None
            parts = [*parts[:-1], last[: -len(self.suffix)]]
        for lit, part in zip(self.literals, parts, strict=False):
            if lit is None:
                if not part:
                    return None
            elif lit != part:
                return None
        if self.tail and not all(parts[self.n :]):
            return None
        return parts


class Routes:
    """The gateway's route table; ``extra`` callables add non-RPC routes through
    :meth:`add_route` / :meth:`add_get` (exact paths)."""

    def __init__(self) -> None:
        self._static: dict[str, dict[str, _Endpoint]] = {}
        self._shapes: dict[tuple[tuple[str | None, ...], bool, str], _Shape] = {}
        self._by_count: dict[int, list[_Shape]] = {}
        self._tails: list[_Shape] = []

    def add_route(self, method: str, path: str, handler: Handler) -> None:
        async def endpoint(request: web.Request, parts: list[str]) -> web.StreamResponse:
            return await handler(request)

        t = parse_template(path)
        if not t.is_literal:
            raise ValueError(f"non-RPC routes take exact paths, not templates: {path!r}")
        self._add(method.upper(), t, endpoint)
        if method.upper() == "GET":
            self._add("HEAD", t, endpoint, replace=False)

    def add_get(self, path: str, handler: Handler) -> None:
        self.add_route("GET", path, handler)

    def _add(self, method: str, t: PathTemplate, endpoint: _Endpoint, *, replace: bool = True) -> None:
        if t.is_literal:
            methods = self._static.setdefault(t.literal_path(), {})
        else:
            shape = self._shapes.get(t.shape)
            if shape is None:
                shape = self._shapes[t.shape] = _Shape(t)
                bucket = self._tails if t.tail else self._by_count.setdefault(shape.n, [])
                bucket.append(shape)
                # More literal segments first, so `/a/b` beats `/a/{x}`; a verb
                # (more specific) before none.
                bucket.sort(key=lambda s: (-s.literal_count, not s.suffix))
            methods = shape.methods
        if method in methods:
            if not replace:
                return
            raise ValueError(f"two routes for {method} {t.literal_path()}")
        methods[method] = endpoint

    def lookup(self, method: str, raw_path: str) -> tuple[_Endpoint, list[str]] | set[str]:
        """The endpoint and path segments, or the set of allowed methods (empty: no such path)."""
        allowed: set[str] = set()
        methods = self._static.get(raw_path)
        parts = raw_path[1:].split("/")
        if methods is not None:
            ep = methods.get(method)
            if ep is not None:
                return ep, parts
            allowed.update(methods)
        for shape in self._by_count.get(len(parts), ()):
            matched = shape.match(parts)
            if matched is not None:
                ep = shape.methods.get(method)
                if ep is not None:
                    return ep, matched
                allowed.update(shape.methods)
        for shape in self._tails:
            if len(parts) > shape.n:
                matched = shape.match(parts)
                if matched is not None:
                    ep = shape.methods.get(method)
                    if ep is not None:
                        return ep, matched
                    allowed.update(shape.methods)
        return allowed

    def describe(self) -> list[str]:
        """`METHOD /path` of every route, for logs and tests."""
        out = [f"{m} {p}" for p, ms in self._static.items() for m in ms]
        for shape_key, shape in self._shapes.items():
            segs, tail, verb = shape_key
            path = "/" + "/".join(s if s is not None else "*" for s in segs) + ("/**" if tail else "")
            path += ":" + verb if verb else ""
            out.extend(f"{m} {path}" for m in shape.methods)
        return sorted(out)


_ROUTES = web.AppKey("lobwife_gateway_routes", Routes)

# --------------------------------------------------------------------------- RPC bindings

_BODY_NONE, _BODY_STAR, _BODY_FIELD = 0, 1, 2
_INT_CPP_TYPES = frozenset(
    {
        descriptor.FieldDescriptor.CPPTYPE_INT32,
        descriptor.FieldDescriptor.CPPTYPE_INT64,
        descriptor.FieldDescriptor.CPPTYPE_UINT32,
        descriptor.FieldDescriptor.CPPTYPE_UINT64,
    }
)


def _unquote(segment: str, field_path: str) -> str:
    if "%" not in segment:
        return segment
    try:
        return urllib.parse.unquote(segment, errors="strict")
    except UnicodeDecodeError:
        raise invalid_argument(field_path, "invalid UTF-8 in the URL path") from None


@dataclass
class _Binding:
    """One HTTP binding of one RPC, with everything a request needs precomputed."""

    dispatcher: Dispatcher
    method: MethodInfo
    verb: str
    template: PathTemplate
    body: str
    response_body: str
    status: int
    max_body: int
    sse_keepalive: float
    state: _GatewayState
    body_mode: int = _BODY_NONE
    path_fields: list[tuple[int, codec.FieldPath]] = field(default_factory=list)
    query_skip: frozenset[str] = frozenset()
    #: Query parameter names the contract gives a field besides its own (``http_query_alias``).
    query_aliases: dict[str, codec.FieldPath] = field(default_factory=dict)
    derive_mask: bool = False
    mask_exclude: frozenset[str] = frozenset()
    after_cursor: codec.FieldPath | None = None
    has_cursor: bool = False

    def __post_init__(self) -> None:
        req_desc: Any = self.method.request_type.DESCRIPTOR
        where = f"{self.method.full_name} ({self.verb} {self.template.literal_path()})"
        for path, index in self.template.variables:
            try:
                fp = codec.compile_field_path(req_desc, path)
            except ValueError as e:
                raise ValueError(f"{where}: {e}") from None
            if fp.field.is_repeated:
                raise ValueError(f"{where}: path variable {path} is a repeated field")
            self.path_fields.append((index, fp))
        path_bound = {fp.path for _, fp in self.path_fields}
        if self.body == "*":
            self.body_mode = _BODY_STAR
        elif self.body:
            if self.body not in req_desc.fields_by_name:
                raise ValueError(f"{where}: body field {self.body!r} does not exist")
            self.body_mode = _BODY_FIELD
        if self.response_body:
            resp_desc = self.method.response_type.DESCRIPTOR
            if self.response_body not in resp_desc.fields_by_name:
                raise ValueError(f"{where}: response_body field {self.response_body!r} does not exist")
        # grpc-gateway: query parameters fill what the path and body leave.
        self.query_skip = frozenset(path_bound | ({self.body} if self.body_mode == _BODY_FIELD else set()))
        if self.body_mode != _BODY_STAR:
            self.query_aliases = _query_aliases(req_desc, self.query_skip, where)
        mask = req_desc.fields_by_name.get("update_mask")
        if (
            self.verb == "PATCH"
            and self.body_mode != _BODY_NONE
            and mask is not None
            and mask.message_type is not None
            and mask.message_type.full_name == "google.protobuf.FieldMask"
        ):
            self.derive_mask = True
            if self.body_mode == _BODY_STAR:
                exclude = {p.split(".")[0] for p in path_bound} | {"update_mask"}
            else:
                # Paths of the mask are relative to the body message (AIP-134).
                pre = self.body + "."
                exclude = {p[len(pre) :].split(".")[0] for p in path_bound if p.startswith(pre)}
            self.mask_exclude = frozenset(exclude)
        cursor = req_desc.fields_by_name.get("after_cursor")
        if cursor is not None and cursor.cpp_type in _INT_CPP_TYPES and not cursor.is_repeated:
            self.after_cursor = codec.compile_field_path(req_desc, "after_cursor")
        out_cursor = self.method.response_type.DESCRIPTOR.fields_by_name.get("cursor")
        self.has_cursor = out_cursor is not None and out_cursor.cpp_type in _INT_CPP_TYPES

    # -- request -----------------------------------------------------------

    async def build_request(self, request: web.Request, parts: list[str]) -> Message:
        req = self.method.request_type()
        present: list[str] | None = None
        if self.body_mode:
            raw = await _read_body(request, self.max_body)
            # An empty body on a body-taking route is `{}` (curl -X POST with no -d).
            obj = codec.decode(raw) if raw else {}
            if self.body_mode == _BODY_STAR:
                present = codec.merge_json_obj(req, obj)
            else:
                present = self._merge_body_field(req, obj)
        for index, fp in self.path_fields:
            text = "/".join(parts[len(self.template.segments) :]) if index < 0 else parts[index]
            fp.set_text(req, (_unquote(text, fp.path),))
        if self.body_mode != _BODY_STAR and request.query_string:
            params = _query_params(request)
            if self.query_aliases:
                _apply_query_aliases(req, params, self.query_aliases)
            codec.apply_query_params(req, params, self.query_skip)
        if self.derive_mask and present:
            mask = getattr(req, "update_mask")  # noqa: B009 -- generic over request types
            if not mask.paths:
                paths = [p for p in present if p not in self.mask_exclude]
                if paths:
                    mask.paths.extend(paths)
        if self.after_cursor is not None:
            last_id = request.headers.get("Last-Event-ID")
            if last_id:
                # EventSource reconnects to the same URL with the id of the last
                # event it saw: that, not the original query, is where to resume.
                self.after_cursor.set_text(req, (last_id.strip(),), "Last-Event-ID")
                if "from_now" in req.DESCRIPTOR.fields_by_name:
                    # `?from_now=true` was where the stream began; it now resumes from the id.
                    req.ClearField("from_now")
        return req

    def _merge_body_field(self, req: Message, obj: Any) -> list[str]:
        fd = req.DESCRIPTOR.fields_by_name[self.body]
        if fd.type == descriptor.FieldDescriptor.TYPE_MESSAGE and not fd.is_repeated:
            sub = getattr(req, self.body)
            present = codec.merge_json_obj(sub, obj, self.body + ".")
            sub.SetInParent()
            return present
        # A repeated or scalar body field: the body is that field's JSON value.
        codec.merge_json_obj(req, {self.body: obj})
        return []

    # -- response ----------------------------------------------------------

    def render(self, resp: Message) -> Any:
        if self.response_body:
            return codec.field_to_json(resp, self.response_body)
        return codec.to_json_obj(resp)

    # -- endpoints -----------------------------------------------------------

    def _ctx(self, request: web.Request) -> CallContext:
        return CallContext(self.method.full_name, "http", _headers(request), request.remote or "")

    async def unary(self, request: web.Request, parts: list[str]) -> web.StreamResponse:
        try:
            req = await self.build_request(request, parts)
            ctx = self._ctx(request)
            resp = await self.dispatcher.unary(self.method, req, ctx)
            if isinstance(resp, WireMessage):
                fresh = resp.messages
                if fresh is not None and self.response_body in fresh:
                    body = codec.encode(codec.to_json_obj(fresh[self.response_body]))
                else:
                    body = codec.wire_json(resp.base, resp.parts, self.response_body)
            else:
                body = codec.encode(self.render(resp))
            return web.Response(body=body, status=ctx.http_status or self.status, headers=_JSON_HEADERS)
        except Exception as e:
            return self._failed(request, e)

    def _failed(self, request: web.Request, e: Exception) -> web.StreamResponse:
        """The answer to a call that raised before its response started (one table for unary and stream)."""
        if isinstance(e, ApiError):
            return _error_response(e)
        if isinstance(e, _BodyTooLarge):
            return _too_large_response(self.max_body)
        if isinstance(e, _BadBody):
            return e.response()
        if isinstance(e, ConnectionError):
            return _client_gone(request)
        log.error(
            "HTTP %s %s failed", request.method, request.path, exc_info=e, extra={"method": self.method.full_name}
        )
        return _internal_error()

    async def stream(self, request: web.Request, parts: list[str]) -> web.StreamResponse:
        try:
            req = await self.build_request(request, parts)
        except Exception as e:
            return self._failed(request, e)
        sse = "text/event-stream" in request.headers.get("Accept", "")
        agen = self.dispatcher.stream(self.method, req, self._ctx(request))
        try:
            return await self._pump(request, agen, sse)
        except ConnectionError:
            return _client_gone(request)
        except Exception:
            log.exception("HTTP stream %s failed", request.path, extra={"method": self.method.full_name})
            return _internal_error()
        finally:
            if isinstance(agen, AsyncGenerator):
                await agen.aclose()

    def _frame(self, item: Message, sse: bool) -> bytes:
        data = codec.encode(self.render(item))
        if not sse:
            return data + b"\n"
        cursor = getattr(item, "cursor", 0) if self.has_cursor else 0
        if cursor:
            return b"id: %d\ndata: %s\n\n" % (cursor, data)
        return b"data: %s\n\n" % data

    @staticmethod
    def _error_frame(e: ApiError, sse: bool) -> bytes:
        data = codec.encode(_error_obj(e))
        return b"event: error\ndata: %s\n\n" % data if sse else data + b"\n"

    async def _pump(self, request: web.Request, agen: AsyncIterator[Message], sse: bool) -> web.StreamResponse:
        loop = asyncio.get_running_loop()
        # Waiting for a message is bounded so that a client that went away is
        # noticed (aiohttp does not cancel the handler by default) and an idle
        # SSE stream gets its keepalive comments.
        poll = min(1.0, self.sse_keepalive)
        first_fut: asyncio.Future[Message] = asyncio.ensure_future(_next(agen))
        pending: asyncio.Future[Message] | None = first_fut
        try:
            # Headers wait for the first message (or error) for up to one poll
            # interval: an error raised at once (bad argument, not found,
            # unimplemented) is then an ordinary JSON error with its status code,
            # while a watch with nothing to say yet still gets its headers promptly.
            done, _ = await asyncio.wait((first_fut,), timeout=poll)
            first: Message | None = None
            ended = False
            if done:
                pending = None
                try:
                    first = first_fut.result()
                except StopAsyncIteration:
                    ended = True
                except ApiError as e:
                    return _error_response(e)
            resp = web.StreamResponse(status=200, headers=_SSE_HEADERS if sse else _NDJSON_HEADERS)
            try:
                await resp.prepare(request)
                if first is not None:
                    await resp.write(self._frame(first, sse))
                last_write = loop.time()
                # A draining server ends its streams (cleanly, so clients
                # reconnect elsewhere with their cursor) instead of holding up shutdown.
                while not ended and not self.state.draining:
                    if pending is None:
                        pending = asyncio.ensure_future(_next(agen))
                    if not (await asyncio.wait((pending,), timeout=poll))[0]:
                        transport = request.transport
                        if transport is None or transport.is_closing():
                            return resp
                        if sse and loop.time() - last_write >= self.sse_keepalive:
                            await resp.write(b": keepalive\n\n")
                            last_write = loop.time()
                        continue
                    fut, pending = pending, None
                    try:
                        item = fut.result()
                    except StopAsyncIteration:
                        break
                    except ApiError as e:
                        await resp.write(self._error_frame(e, sse))
                        break
                    await resp.write(self._frame(item, sse))
                    last_write = loop.time()
                await resp.write_eof()
            except ConnectionError:
                pass  # the client went away mid-stream: nothing to answer
            return resp
        finally:
            if pending is not None and not pending.done():
                pending.cancel()
                # However the generator ends now, there is nobody left to tell.
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await pending


async def _next(agen: AsyncIterator[Message]) -> Message:
    return await agen.__anext__()


# google.api.http, found in the default pool (the generated lobwife modules import
# google/api/annotations.proto) rather than imported from googleapis-common-protos,
# whose modules carry no type information.
_HTTP_EXT: Any = descriptor_pool.Default().FindExtensionByName("google.api.http")


def _http_rules(m: MethodInfo) -> list[Any]:
    """The method's HttpRule and its additional bindings (google.api.HttpRule messages)."""
    opts: Any = m.descriptor.GetOptions()
    if not opts.HasExtension(_HTTP_EXT):
        return []
    rule = opts.Extensions[_HTTP_EXT]
    return [rule, *rule.additional_bindings]


def _verb_and_path(rule: Any) -> tuple[str, str]:
    kind = rule.WhichOneof("pattern")
    if kind is None:
        raise ValueError("http rule without a pattern")
    if kind == "custom":
        return rule.custom.kind.upper(), rule.custom.path
    return kind.upper(), str(getattr(rule, kind))


def _success_code(m: MethodInfo) -> int:
    opts = m.descriptor.GetOptions()
    code = int(opts.Extensions[annotations_pb2.http_success_code])
    return code or 200


# --------------------------------------------------------------------------- the app


def build_app(
    dispatcher: Dispatcher,
    *,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    extra: Callable[[Routes], None] | None = None,
    sse_keepalive: float = 15.0,
) -> web.Application:
    """The gateway as an aiohttp application.

    ``extra(routes)`` may add non-RPC routes (``routes.add_get(path, handler)``)
    before the RPC routes are built; they are subject to draining like the rest.
    """
    state = _GatewayState()
    routes = Routes()
    index_html = (_STATIC_DIR / "index.html").read_bytes()

    async def index(request: web.Request) -> web.StreamResponse:
        return web.Response(body=index_html, headers={"Content-Type": "text/html; charset=utf-8"})

    async def metrics_endpoint(request: web.Request) -> web.StreamResponse:
        return web.Response(body=generate_latest(metrics.REGISTRY), headers={"Content-Type": CONTENT_TYPE_LATEST})

    routes.add_get("/", index)
    routes.add_get("/metrics", metrics_endpoint)
    if extra is not None:
        extra(routes)

    for m in dispatcher.methods.values():
        for rule in _http_rules(m):
            verb, path = _verb_and_path(rule)
            binding = _Binding(
                dispatcher=dispatcher,
                method=m,
                verb=verb,
                template=parse_template(path),
                body=rule.body,
                response_body=rule.response_body,
                status=_success_code(m),
                max_body=max_body_bytes,
                sse_keepalive=sse_keepalive,
                state=state,
            )
            endpoint = binding.stream if m.server_streaming else binding.unary
            routes._add(verb, binding.template, endpoint)
            if verb == "GET" and not m.server_streaming:
                routes._add("HEAD", binding.template, endpoint, replace=False)

    async def handle(request: web.Request) -> web.StreamResponse:
        if state.draining:
            return _draining_response()
        method = request.method
        raw_path = request.rel_url.raw_path
        found = routes.lookup(method, raw_path)
        if isinstance(found, tuple):
            endpoint, parts = found
            return await endpoint(request, parts)
        if found:
            resp = _plain_error(405, grpc.StatusCode.UNIMPLEMENTED, f"method not allowed: {method} {request.path}")
            resp.headers["Allow"] = ", ".join(sorted(found))
            return resp
        return _plain_error(404, grpc.StatusCode.NOT_FOUND, f"not found: {method} {request.path}")

    async def expect(request: web.Request) -> web.StreamResponse | None:
        # Replaces aiohttp's default, which says "100 Continue" unconditionally:
        # a body that is too large is refused before the client sends it.
        if state.draining:
            return _draining_response()
        if request.headers.get("Expect", "").lower() != "100-continue":
            return _plain_error(417, grpc.StatusCode.INVALID_ARGUMENT, "unsupported Expect header", close=True)
        length = request.content_length
        if length is not None and length > max_body_bytes:
            return _too_large_response(max_body_bytes)
        if request.version == HttpVersion11:
            await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            request.writer.output_size = 0
        return None

    app = web.Application()
    app[_STATE] = state
    app[_ROUTES] = routes
    app.router.add_route("*", "/{tail:.*}", handle, expect_handler=expect)
    return app


def routes_of(app: web.Application) -> Routes:
    """The route table of an app built by :func:`build_app` (tests, introspection)."""
    return app[_ROUTES]


def route_list(app: web.Application) -> Sequence[str]:
    return routes_of(app).describe()


# --------------------------------------------------------------------------- the HTTP server: limits

#: A refused connection (over the bound) keeps its fd at most this long, so that its
#: client reads the 503 instead of a reset, and at most this many linger at once.
REFUSED_LINGER = 0.5
REFUSED_LINGER_MAX = 32


def make_runner(app: web.Application, limits: HttpLimits, *, shutdown_timeout: float) -> web.AppRunner:
    """An AppRunner whose connections close after ``limits.idle_timeout`` idle (aiohttp's keep-alive knob)."""
    return web.AppRunner(
        app,
        access_log=None,
        handle_signals=False,
        shutdown_timeout=shutdown_timeout,
        keepalive_timeout=limits.idle_timeout,
    )


# The start of HTTP/2's connection preface: what a gRPC client sent to the HTTP port by mistake.
_H2_PREFACE = b"PRI * HTTP/2.0"


def _raw_response(status: int, reason: str, code: grpc.StatusCode, message: str) -> bytes:
    """A whole response, for the connection-level answers that no handler gives (503, 408)."""
    body = codec.encode({"error": message, "code": code.value[0], "message": message})
    retry = b"Retry-After: 1\r\n" if status == 503 else b""
    head = b"HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n%sConnection: close\r\n\r\n"
    return head % (status, reason.encode(), len(body), retry) + body


class _Gate:
    """What the connections of one site share: the limits and the counts."""

    def __init__(self, limits: HttpLimits) -> None:
        self.limits = limits
        self.open = 0
        self.lingering = 0
        self.refused = 0
        self.refused_response = _raw_response(
            503,
            "Service Unavailable",
            grpc.StatusCode.UNAVAILABLE,
            f"too many open HTTP connections (limit {limits.max_connections}); try again",
        )


class _Connection(asyncio.Protocol):
    """One HTTP connection: aiohttp's RequestHandler, plus the deadlines aiohttp does not have.

    aiohttp bounds idle keep-alive (``keepalive_timeout``) but neither how long a
    request's headers may take nor a body that stops arriving, and it accepts
    connections until the process runs out of file descriptors. This wrapper counts
    connections against the bound (refusing the excess with a 503) and keeps one timer
    per connection, re-checked lazily when it fires (data arriving only moves a time
    stamp):

    - headers: from the connection's accept, or from the first byte of a later
      request, until its headers are parsed: ``header_timeout``, then 408 and close;
    - body: while the request's body is unfinished, no byte for ``body_timeout``:
      the handler's read fails with 408 (or the connection closes if no handler reads).

    It also answers a body whose framing breaks part-way (a bad chunk size arriving
    after the headers) with 400: aiohttp queues that error behind the request whose
    body it broke, so the handler would wait for the rest of the body for ever.

    It reads a few of RequestHandler's private attributes (``_request_count``,
    ``_messages``, ``_request_in_progress``); mypy checks that they still exist, and
    tests/e2e/test_http_limits.py that they still mean the same.
    """

    __slots__ = (
        "_body",
        "_body_seen",
        "_gate",
        "_h",
        "_header_since",
        "_loop",
        "_partial",
        "_refused",
        "_server",
        "_timer",
        "_transport",
    )

    def __init__(self, server: web.Server, gate: _Gate, loop: asyncio.AbstractEventLoop) -> None:
        self._server = server
        self._gate = gate
        self._loop = loop
        self._h: RequestHandler | None = None
        self._transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None
        # Since when the current request's headers have been awaited (None: not awaiting them).
        self._header_since: float | None = None
        self._partial = False  # some of those headers arrived
        self._body: StreamReader | None = None  # the body still arriving, if any
        self._body_seen = 0.0  # when its last byte arrived
        self._refused = False

    # -- asyncio.Protocol ------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport (uvloop's are not asyncio.Transport subclasses, hence no isinstance).
        transport = cast(asyncio.Transport, transport)
        self._transport = transport
        gate = self._gate
        if gate.open >= gate.limits.max_connections:
            self._refuse(transport)
            return
        gate.open += 1
        self._h = h = self._server()
        h.connection_made(transport)
        now = self._loop.time()
        self._header_since = now
        self._arm(now + gate.limits.header_timeout)

    def data_received(self, data: bytes) -> None:
        h = self._h
        if h is None:
            return  # refused: discard what the client sends until it reads the 503 and goes
        count = h._request_count
        if count == 0 and not self._partial and data.startswith(_H2_PREFACE):
            self._answer_http2(h)
            return
        body = self._body
        h.data_received(data)
        if body is not None or h._request_count != count:
            self._progress(h, count, body)
        else:
            # Part of a request's headers (aiohttp has not parsed a whole request).
            self._partial = True
            if self._header_since is None:
                self._header_since = now = self._loop.time()
                self._arm(now + self._gate.limits.header_timeout)

    def eof_received(self) -> None:
        # Like aiohttp's (it returns None): the transport then closes. A refused
        # client's EOF is the signal that it read the 503.
        if self._h is not None:
            self._h.eof_received()

    def pause_writing(self) -> None:
        if self._h is not None:
            self._h.pause_writing()

    def resume_writing(self) -> None:
        if self._h is not None:
            self._h.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        h, self._h = self._h, None
        self._body = None
        if h is None:
            if self._refused:
                self._refused = False
                self._gate.lingering -= 1
            return
        self._gate.open -= 1
        h.connection_lost(exc)

    # -- the deadlines -----------------------------------------------------------

    def _progress(self, h: RequestHandler, count: int, body: StreamReader | None) -> None:
        now = self._loop.time()
        limits = self._gate.limits
        if body is not None:
            if h._request_count != count and not body.is_eof() and h._messages:
                msg = h._messages[-1][0]
                if isinstance(msg, _ErrInfo):
                    # The parser failed inside this body and left it waiting for bytes that
                    # will never count: fail it now, and drop aiohttp's queued second answer.
                    h._messages.pop()
                    first_line = (msg.message or "bad framing").strip().splitlines()[0].rstrip(":")
                    self._fail_body(h, body, _BadBody(400, f"malformed request body: {first_line}"))
                    return
            if body.is_eof():
                self._body = None
            else:
                self._body_seen = now
        if h._request_count != count:
            # A request's headers are complete: its body (if still coming) is what is awaited now.
            self._header_since = None
            self._partial = False
            last = h._messages[-1][1] if h._messages else None
            if last is not None and not last.is_eof():
                self._body = last
                self._body_seen = now
                self._arm(now + limits.body_timeout)

    def _arm(self, when: float) -> None:
        timer = self._timer
        if timer is not None:
            if timer.when() <= when:
                return  # it fires first, and re-arms for what is then due
            timer.cancel()
        self._timer = self._loop.call_at(when, self._check)

    def _check(self) -> None:
        self._timer = None
        h = self._h
        if h is None or h.transport is None:
            return
        now = self._loop.time()
        limits = self._gate.limits
        body = self._body
        if body is not None:
            if body.is_eof() or body.exception() is not None:
                self._body = None
            else:
                due = self._body_seen + limits.body_timeout
                if now < due:
                    self._arm(due)
                    return
                log.debug("HTTP request body timed out", extra={"peer": h.peername})
                metrics.HTTP_TIMEOUTS.labels("body").inc()
                message = f"request body timed out (no data for {limits.body_timeout:g} s)"
                self._fail_body(h, body, _BadBody(408, message))
                return
        since = self._header_since
        if since is None:
            return
        if h._request_in_progress or h._messages:
            # A pipelined request waits for the one before it; its clock starts after.
            self._header_since = since = now
        due = since + limits.header_timeout
        if now < due:
            self._arm(due)
            return
        log.debug("HTTP request headers timed out", extra={"peer": h.peername, "partial": self._partial})
        metrics.HTTP_TIMEOUTS.labels("headers").inc()
        transport = self._transport
        if self._partial and transport is not None:
            transport.write(
                _raw_response(
                    408,
                    "Request Timeout",
                    grpc.StatusCode.DEADLINE_EXCEEDED,
                    f"request headers timed out (limit {limits.header_timeout:g} s)",
                )
            )
        h.force_close()  # closing flushes the 408 first

    def _fail_body(self, h: RequestHandler, body: StreamReader, error: _BadBody) -> None:
        self._body = None
        if not h._request_in_progress:
            # Nobody will answer: the handler is done and aiohttp is discarding the rest of
            # the body (an error there would be logged as a crash). Just close.
            h.force_close()
            return
        body.set_exception(error)
        # EOF too: after the answer, aiohttp must not wait to discard the rest of this body.
        body.feed_eof()
        h.close()  # the framing is lost (or the client too slow): no further request on this connection

    def _answer_http2(self, h: RequestHandler) -> None:
        """A gRPC (HTTP/2) client on this HTTP/1.1 port: one debug line, a 400, close.

        aiohttp would log each such connection as a failed request with the binary
        preface in it; it is a client pointed at the wrong port, nothing the server did.
        The client reads the 400 as "an http1.x server", which the CLI turns into a hint.
        """
        log.debug("HTTP/2 (gRPC?) client on the HTTP/1.1 port: answered 400", extra={"peer": h.peername})
        if self._transport is not None:
            self._transport.write(
                _raw_response(
                    400,
                    "Bad Request",
                    grpc.StatusCode.INVALID_ARGUMENT,
                    "this is lobwife's HTTP/1.1 port; gRPC (HTTP/2) is served on the gRPC port",
                )
            )
        h.force_close()  # closing flushes the 400 first

    def _refuse(self, transport: asyncio.Transport) -> None:
        gate = self._gate
        gate.refused += 1
        metrics.HTTP_REFUSED.inc()
        log.warning(
            "HTTP connection refused with 503: %d connections open, the limit (--http-max-connections)",
            gate.open,
            extra={"refused_total": gate.refused},
        )
        if gate.lingering >= REFUSED_LINGER_MAX:
            transport.close()
            return
        # Answer, then wait (briefly) for the client to close first: closing with its
        # request unread would reset the connection and lose the 503 on the way.
        self._refused = True
        gate.lingering += 1
        transport.write(gate.refused_response)
        if transport.can_write_eof():
            transport.write_eof()
        self._timer = self._loop.call_later(REFUSED_LINGER, transport.close)


class LimitedSite(web.BaseSite):
    """A TCP site (like aiohttp's TCPSite) whose connections are bounded by :class:`HttpLimits`."""

    def __init__(self, runner: web.BaseRunner, host: str, port: int, limits: HttpLimits, *, backlog: int = 128) -> None:
        super().__init__(runner, backlog=backlog)
        self._host = host
        self._port = port
        self._gate = _Gate(limits)

    @property
    def name(self) -> str:
        return f"http://{self._host}:{self._port}"

    async def start(self) -> None:
        await super().start()
        loop = asyncio.get_running_loop()
        server = self._runner.server
        assert server is not None
        gate = self._gate
        self._server = await loop.create_server(
            lambda: _Connection(server, gate, loop), self._host, self._port, backlog=self._backlog
        )
        metrics.HTTP_CONNECTIONS.set_function(lambda: gate.open)  # read at scrape time: nothing per connection
        limits = gate.limits
        log.info(
            "HTTP limits",
            extra={
                "header_timeout": limits.header_timeout,
                "body_timeout": limits.body_timeout,
                "idle_timeout": limits.idle_timeout,
                "max_connections": limits.max_connections,
            },
        )
