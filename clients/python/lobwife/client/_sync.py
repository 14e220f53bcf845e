"""The blocking face: :class:`Client`. Each method is its builder (``_builders``) plus the blocking transport."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Generator, Iterator
from typing import Any, Concatenate, ParamSpec, Self, TypeVar

import grpc
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


def _unary(build: Callable[P, Unary[R]]) -> Callable[Concatenate[Client, P], R]:
    def method(self: Client, /, *args: P.args, **kwargs: P.kwargs) -> R:
        return self._call(build(*args, **kwargs))

    return method_like(method, build, "Client", lambda inner: inner)


def _pages(build: Callable[P, Pages[R]]) -> Callable[Concatenate[Client, P], Iterator[R]]:
    def method(self: Client, /, *args: P.args, **kwargs: P.kwargs) -> Iterator[R]:
        paged = build(*args, **kwargs)
        token = ""
        while True:
            page = self._call(paged.page(token))
            yield from paged.items(page)
            token = page.next_page_token
            if not token:
                return

    return method_like(method, build, "Client", lambda inner: f"Iterator[{inner}]")


def _watch(build: Callable[P, Watch[M]]) -> Callable[Concatenate[Client, P], Generator[M, None, None]]:
    def method(self: Client, /, *args: P.args, **kwargs: P.kwargs) -> Generator[M, None, None]:
        watch = build(*args, **kwargs)
        rpc = self._rpcs[watch.rpc.full_name]
        while True:
            call = rpc(watch.request(), timeout=watch.attempt_timeout(), metadata=self._metadata)
            error: LobwifeError | None = None
            cause: grpc.RpcError | None = None
            try:
                for msg in call:
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
            time.sleep(delay)

    return method_like(method, build, "Client", lambda inner: f"Generator[{inner}, None, None]")


class Client(ChannelSettings):
    """Blocking client over one gRPC channel. Thread-safe; close it (or use ``with``) when done.

    ``addr`` defaults to ``$LOBWIFE_ADDR`` or ``127.0.0.1:50051``. ``timeout`` (seconds) is
    the deadline of each unary call, retries included; every method takes ``timeout=`` to
    override it. ``secure`` uses TLS with the system's root certificates.

    ``token`` (default ``$LOBWIFE_TOKEN``; ``""`` for none) is sent on every call as
    ``authorization: Bearer <token>`` metadata: a token from :meth:`mint_token` or
    ``lobwife auth mint``, or a Kubernetes service-account token. It is kept only in that
    metadata: the client's repr says whether one is set, never what it is.

    ``token_file`` (default ``$LOBWIFE_TOKEN_FILE`` when no token is given) names a file holding
    the token, read again whenever it changes: a pod's projected service-account token, which the
    kubelet replaces before it expires. Give ``token`` or ``token_file``, not both.
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
            self._channel = grpc.secure_channel(self.addr, grpc.ssl_channel_credentials(), options=self._options)
        else:
            self._channel = grpc.insecure_channel(self.addr, options=self._options)
        self._rpcs: dict[str, Any] = stubs(self._channel, b.RPCS.values())

    def close(self) -> None:
        """Close the channel; calls in flight (e.g. a watch) are cancelled."""
        self._channel.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, call: Unary[R]) -> R:
        try:
            answer = self._rpcs[call.rpc.full_name](
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
