"""The harness the stand-ins share: an aiohttp app served on a free 127.0.0.1 port by a thread with its own
event loop, so a sync test, an async test and a server process (given the URL) can all call it."""

from __future__ import annotations

import asyncio
import socket
import threading
from types import TracebackType
from typing import Any, Self

from aiohttp import web


class LocalServer:
    """Serve ``_app()`` from a daemon thread: ``start()``/``stop()`` or ``with``; ``port`` once started."""

    #: The thread's name and what errors call the server.
    name = "local server"

    def __init__(self) -> None:
        self.port = 0
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    def _app(self) -> web.Application:
        raise NotImplementedError

    def _runner_options(self) -> dict[str, Any]:
        """Keyword arguments for the AppRunner (access log off)."""
        return {"access_log": None}

    def start(self) -> Self:
        if self._thread is not None:
            raise RuntimeError(f"{self.name} already started")
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        self.port = int(sock.getsockname()[1])
        self._thread = threading.Thread(target=self._serve, args=(sock,), name=self.name, daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError(f"{self.name} did not start within 10 s")
        if self._error is not None:
            raise RuntimeError(f"{self.name} failed to start") from self._error
        return self

    def stop(self) -> None:
        if self._thread is None:
            return
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)
        self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def _serve(self, sock: socket.socket) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            self._stop = asyncio.Event()
            runner = web.AppRunner(self._app(), **self._runner_options())
            loop.run_until_complete(runner.setup())
            loop.run_until_complete(web.SockSite(runner, sock).start())
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            loop.close()
            return
        self._ready.set()
        try:
            loop.run_until_complete(self._stop.wait())
        finally:
            loop.run_until_complete(runner.cleanup())
            loop.close()
