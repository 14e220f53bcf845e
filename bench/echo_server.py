"""Bare grpc.aio echo server: the gRPC baseline of the benchmark.

One unary method, ``/bench.Echo/Echo``, registered through a generic handler with
no (de)serializers, so it hands the request bytes back unchanged: what is left
is the cost of grpc.aio itself (HTTP/2, framing, one coroutine per call), which
is the floor under any lobwife gRPC call. It runs on uvloop when installed, as
lobwife does, so that both sides of a ratio use the same event loop.

    python bench/echo_server.py --port-file /tmp/p   # binds 127.0.0.1:<free port>
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path

import grpc

SERVICE = "bench.Echo"
METHOD = "Echo"
FULL_METHOD = f"/{SERVICE}/{METHOD}"


async def echo(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
    return request


async def serve(host: str, port: int, port_file: Path | None) -> None:
    await serve_handler(echo, host, port, port_file)


async def serve_handler(
    handler: Callable[[bytes, grpc.aio.ServicerContext[bytes, bytes]], Awaitable[bytes]],
    host: str,
    port: int,
    port_file: Path | None,
) -> None:
    """Serve ``handler`` as /bench.Echo/Echo until SIGTERM or SIGINT (also used by echo_commit_server.py)."""
    # Same message-size options as lobwife, so neither side gets a cheaper path.
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", 4 * 1024 * 1024),
            ("grpc.max_send_message_length", 4 * 1024 * 1024),
            ("grpc.so_reuseport", 0),
        ]
    )
    method = grpc.unary_unary_rpc_method_handler(handler)  # no deserializer: request and response stay bytes
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, {METHOD: method}),))
    bound = server.add_insecure_port(f"{host}:{port}")
    if bound == 0:
        raise OSError(f"cannot bind {host}:{port}")
    await server.start()
    if port_file is not None:
        # Written only once the server accepts calls; the parent polls for it.
        tmp = port_file.with_suffix(".tmp")
        tmp.write_text(str(bound))
        tmp.rename(port_file)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop(1.0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="0 (default) picks a free port")
    p.add_argument("--port-file", type=Path, help="write the bound port here once serving")
    args = p.parse_args()
    coro = serve(args.host, args.port, args.port_file)
    try:
        import uvloop
    except ImportError:  # lobwife falls back to plain asyncio too
        asyncio.run(coro)
    else:
        uvloop.run(coro)


if __name__ == "__main__":
    main()
