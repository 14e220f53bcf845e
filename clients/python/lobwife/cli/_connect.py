"""Reaching the server before a command runs: wait for it briefly, or say why nothing answers."""

from __future__ import annotations

import contextlib
import queue
import re
import socket
import time
from collections.abc import Iterator

import grpc

from lobwife.client import DEFAULT_ADDR, channel_options

#: How long a command waits for the server to answer before giving up (``--connect-timeout``).
#: The client's own retries would wait ~7.5 s in silence and then print gRPC's raw error.
CONNECT_TIMEOUT_S = 2.0
#: The exit status when no lobwife server answers at the address.
EXIT_UNREACHABLE = 3
# A gRPC client's first bytes (the HTTP/2 preface); an HTTP/1.x server answers with a status line.
_H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
_HOST_PORT = re.compile(r"(?:dns:(?:///)?)?(?P<host>\[[^\]]+\]|[^:/\[\]]+):(?P<port>\d+)")
# What gRPC says of a server that answered its preface as HTTP/1.x does.
_HTTP1_TEXT = "http1.x server"
# How long the diagnosis after a failed wait may take (its call, then its socket probe).
_DIAGNOSE_S = 0.5


class Unreachable(Exception):
    """No lobwife gRPC server answered at the address: ``hint`` says what to do, ``detail`` what gRPC said."""

    def __init__(self, hint: str, detail: str = "") -> None:
        super().__init__(hint)
        self.hint = hint
        self.detail = detail


@contextlib.contextmanager
def server_answering(addr: str, timeout: float) -> Iterator[None]:
    """Wait until a gRPC server answers at ``addr``, or raise :class:`Unreachable` after ``timeout`` s.

    A refused connection is tried again until then (a server may be starting), but an
    HTTP/1.x answer is final: that fails at once. The waiting channel has the client's
    options, so gRPC shares its connection with the client's channel; it stays open
    while the command runs so that the connection does.
    """
    with grpc.insecure_channel(addr, options=channel_options()) as channel:
        states: queue.Queue[grpc.ChannelConnectivity] = queue.Queue()
        channel.subscribe(states.put, try_to_connect=True)
        try:
            _wait_ready(channel, states, addr, time.monotonic() + timeout)
        finally:
            channel.unsubscribe(states.put)
        yield


def _wait_ready(channel: grpc.Channel, states: queue.Queue[grpc.ChannelConnectivity], addr: str, until: float) -> None:
    while (left := until - time.monotonic()) > 0:
        try:
            state = states.get(timeout=left)
        except queue.Empty:
            break
        if state is grpc.ChannelConnectivity.READY:
            return
        if state is grpc.ChannelConnectivity.TRANSIENT_FAILURE:
            detail = _last_error(channel)
            if detail is None:
                return
            if _HTTP1_TEXT in detail:
                raise unreachable(addr, detail)
    detail = _last_error(channel)
    if detail is not None:
        raise unreachable(addr, detail)


def _last_error(channel: grpc.Channel) -> str | None:
    """Why the channel is not connected (gRPC's text), or None if a server answers after all."""
    # Any method does: a call that fails fast (no wait_for_ready) carries the channel's last error.
    probe = channel.unary_unary("/grpc.health.v1.Health/Check", None, None)  # bytes in, bytes out
    try:
        probe(b"", timeout=_DIAGNOSE_S, wait_for_ready=False)
    except grpc.RpcError as e:
        code = e.code() if isinstance(e, grpc.Call) else None
        if code == grpc.StatusCode.UNAVAILABLE:
            return str(e.details() or "")
        if code == grpc.StatusCode.DEADLINE_EXCEEDED:
            return ""  # still connecting: nothing answers
    return None


def unreachable(addr: str, detail: str) -> Unreachable:
    """The error for ``addr``: the HTTP port given by mistake, or no server at all."""
    if _HTTP1_TEXT in detail or _answers_http1(addr):
        grpc_port = DEFAULT_ADDR.rpartition(":")[2]
        return Unreachable(
            f"{addr} looks like lobwife's HTTP port; gRPC is on another port (default {grpc_port}):"
            " set --addr or LOBWIFE_ADDR",
            detail,
        )
    return Unreachable(f"no lobwife server answers at {addr} (is it running? set --addr or LOBWIFE_ADDR)", detail)


def _answers_http1(addr: str) -> bool:
    """Whether ``host:port`` answers a gRPC client's first bytes as an HTTP/1.x server does."""
    m = _HOST_PORT.fullmatch(addr)
    if m is None:
        return False
    try:
        with socket.create_connection((m["host"].strip("[]"), int(m["port"])), timeout=_DIAGNOSE_S) as sock:
            sock.sendall(_H2_PREFACE)
            return sock.recv(8).startswith(b"HTTP/1.")
    except OSError:
        return False
