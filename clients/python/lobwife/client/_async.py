"""The asyncio face: :class:`AsyncClient`. Each method is its builder (``_builders``) plus the grpc.aio transport."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Coroutine
from types import TracebackType
from typing import Any, Concatenate, ParamSpec, Self, TypeVar

import grpc
import grpc.aio
from google.protobuf.message import Message

from lobwife.client import _builders as b
from lobwife.client._channel import MAX_RETRIES, ChannelSettings
from lobwife.client._errors import LobwifeError
from lobwife.client._face import method_like
from lobwife.client._rpc import Pages, Unary, stubs
from lobwife.client._watch import Watch

P = ParamSpec("P")
R = TypeVar("R")
M = TypeVar("M", bound=Message)


def _unary(build: Callable[P, Unary[R]]) -> Callable[Concatenate[AsyncClient, P], Coroutine[Any, Any, R]]:
    async def method(self: AsyncClient, /, *args: P.args, **kwargs: P.kwargs) -> R:
        return await self._call(build(*args, **kwargs))

    return method_like(method, build, "AsyncClient", lambda inner: inner)


def _pages(build: Callable[P, Pages[R]]) -> Callable[Concatenate[AsyncClient, P], AsyncIterator[R]]:
    async def method(self: AsyncClient, /, *args: P.args, **kwargs: P.kwargs) -> AsyncIterator[R]:
        paged = build(*args, **kwargs)
        token = ""
        while True:
            page = await self._call(paged.page(token))
            for item in paged.items(page):
                yield item
            token = page.next_page_token
            if not token:
                return

    return method_like(method, build, "AsyncClient", lambda inner: f"AsyncIterator[{inner}]")


def _watch(build: Callable[P, Watch[M]]) -> Callable[Concatenate[AsyncClient, P], AsyncGenerator[M, None]]:
    async def method(self: AsyncClient, /, *args: P.args, **kwargs: P.kwargs) -> AsyncGenerator[M, None]:
        watch = build(*args, **kwargs)
        rpc = self._rpcs[watch.rpc.full_name]
        while True:
            call = rpc(watch.request(), timeout=watch.attempt_timeout(), metadata=self._metadata)
            error: LobwifeError | None = None
            cause: grpc.RpcError | None = None
            try:
                async for msg in call:
                    if watch.accept(msg):
                        yield msg
            except grpc.RpcError as e:
                error, cause = LobwifeError.from_rpc_error(e), e
            finally:
                call.cancel()
            delay = watch.next_delay(error)
            if delay is None:
                if error is not None:
                    raise error from cause
                return
            await asyncio.sleep(delay)

    return method_like(method, build, "AsyncClient", lambda inner: f"AsyncGenerator[{inner}, None]")


class AsyncClient(ChannelSettings):
    """The asyncio twin of :class:`Client` (grpc.aio): same arguments, same methods, awaitable.

    Create it inside a running event loop; ``await close()`` or use ``async with``.
    Streams and page iterators are async generators (``async for``; ``await gen.aclose()``
    or leaving the loop cancels the call).
    """

    def __init__(
        self,
        addr: str | None = None,
        *,
        timeout: float = 10.0,
        retries: int = MAX_RETRIES,
        token: str | None = None,
        token_file: str | os.PathLike[str] | None = None,
        secure: bool = False,
    ) -> None:
        super().__init__(addr, timeout, retries, token, secure, token_file)
        if secure:
            self._channel = grpc.aio.secure_channel(self.addr, grpc.ssl_channel_credentials(), options=self._options)
        else:
            self._channel = grpc.aio.insecure_channel(self.addr, options=self._options)
        self._rpcs: dict[str, Any] = stubs(self._channel, b.RPCS.values())

    async def close(self) -> None:
        """Close the channel; calls in flight (e.g. a watch) are cancelled."""
        await self._channel.close(None)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def _call(self, call: Unary[R]) -> R:
        try:
            answer = await self._rpcs[call.rpc.full_name](
                call.request, timeout=self._deadline(call.timeout), metadata=self._metadata
            )
        except grpc.RpcError as e:
            raise LobwifeError.from_rpc_error(e) from e
        return call.result(answer)

    # The methods, in the order of the table (_builders.METHODS). Docstrings: the builders'.

    create_task = _unary(b.create_task)
    get_task = _unary(b.get_task)
    list_tasks = _unary(b.list_tasks)
    iter_tasks = _pages(b.iter_tasks)
    update_task = _unary(b.update_task)
    cancel_task = _unary(b.cancel_task)
    add_event = _unary(b.add_event)
    list_events = _unary(b.list_events)
    iter_events = _pages(b.iter_events)
    register_repos = _unary(b.register_repos)
    watch_tasks = _watch(b.watch_tasks)

    list_jobs = _unary(b.list_jobs)
    iter_jobs = _pages(b.iter_jobs)
    get_job = _unary(b.get_job)
    create_job = _unary(b.create_job)
    update_job = _unary(b.update_job)
    delete_job = _unary(b.delete_job)
    trigger_job = _unary(b.trigger_job)
    enable_job = _unary(b.enable_job)
    disable_job = _unary(b.disable_job)
    list_runs = _unary(b.list_runs)
    iter_runs = _pages(b.iter_runs)
    get_run = _unary(b.get_run)
    watch_runs = _watch(b.watch_runs)
    status = _unary(b.status)
    sync_status = _unary(b.sync_status)
    trigger_sync = _unary(b.trigger_sync)

    health = _unary(b.health)

    mint_token = _unary(b.mint_token)
    whoami = _unary(b.whoami)

    broker_register = _unary(b.broker_register)
    broker_deregister = _unary(b.broker_deregister)
    broker_registrations = _unary(b.broker_registrations)
    issue_task_token = _unary(b.issue_task_token)
    issue_service_token = _unary(b.issue_service_token)
    list_token_audit = _unary(b.list_token_audit)
    iter_token_audit = _pages(b.iter_token_audit)
    expire_registrations = _unary(b.expire_registrations)

    create_finding = _unary(b.create_finding)
    get_finding = _unary(b.get_finding)
    list_findings = _unary(b.list_findings)
    iter_findings = _pages(b.iter_findings)
    update_finding = _unary(b.update_finding)
    resolve_finding = _unary(b.resolve_finding)

    record_cost = _unary(b.record_cost)
    record_costs = _unary(b.record_costs)
    list_costs = _unary(b.list_costs)
    iter_costs = _pages(b.iter_costs)
    summarize_costs = _unary(b.summarize_costs)
    reprice_costs = _unary(b.reprice_costs)
