"""grpc.aio echo server that makes every call durable first: the ceiling of lobwife's write design.

Same method and options as ``echo_server.py``, but each call's request bytes are
inserted into a SQLite table (WAL, ``synchronous=FULL``) by one writer thread that
takes everything queued, inserts it with one statement, COMMITs once, and only then
answers the callers: the shape of ``lobwife_server.storage.database`` with no lobwife logic
at all (no validation, no messages, no cache). CreateTask cannot be faster than
this on the same machine, so ``python bench/run.py --ceiling`` measures it beside
the plain echo: the gap between the two is what a durable commit per call costs
with one writer thread sharing the GIL with the event loop.

    python bench/echo_commit_server.py --port-file /tmp/p --db /tmp/x.db
"""

from __future__ import annotations

import argparse
import asyncio
import queue
import sqlite3
import threading
from pathlib import Path

import grpc
from echo_server import serve_handler  # this folder: run as a script, beside it

Item = tuple[asyncio.Future[bytes], bytes]


class Writer:
    def __init__(self, path: Path, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.queue: queue.SimpleQueue[Item | None] = queue.SimpleQueue()
        self.conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.conn.execute("PRAGMA journal_mode = WAL")
        self.conn.execute("PRAGMA synchronous = FULL")
        self.conn.execute("CREATE TABLE IF NOT EXISTS calls (id INTEGER PRIMARY KEY AUTOINCREMENT, body BLOB)")
        self.thread = threading.Thread(target=self.run, name="echo-commit-writer", daemon=True)
        self.thread.start()

    def run(self) -> None:
        while True:
            first = self.queue.get()
            if first is None:
                return
            batch = [first]
            while True:
                try:
                    nxt = self.queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    self.queue.put(None)
                    break
                batch.append(nxt)
            self.conn.execute("BEGIN IMMEDIATE")
            marks = ", ".join(["(?)"] * len(batch))
            self.conn.execute(f"INSERT INTO calls (body) VALUES {marks}", [body for _, body in batch])
            self.conn.execute("COMMIT")
            self.loop.call_soon_threadsafe(_answer, batch)


def _answer(batch: list[Item]) -> None:
    for fut, body in batch:
        if not fut.done():
            fut.set_result(body)


async def serve(host: str, port: int, port_file: Path | None, db: Path) -> None:
    loop = asyncio.get_running_loop()
    writer = Writer(db, loop)

    async def echo(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        fut: asyncio.Future[bytes] = loop.create_future()
        writer.queue.put((fut, request))
        return await fut

    await serve_handler(echo, host, port, port_file)
    writer.queue.put(None)
    await asyncio.to_thread(writer.thread.join)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="0 (default) picks a free port")
    p.add_argument("--port-file", type=Path, help="write the bound port here once serving")
    p.add_argument("--db", type=Path, required=True, help="SQLite file to commit the calls to")
    args = p.parse_args()
    coro = serve(args.host, args.port, args.port_file, args.db)
    try:
        import uvloop
    except ImportError:
        asyncio.run(coro)
    else:
        uvloop.run(coro)


if __name__ == "__main__":
    main()
