"""Bare aiohttp JSON server: the HTTP baseline of the benchmark.

``GET /json`` returns a small object encoded with orjson; ``POST /json`` parses
the JSON body and answers a small object with status 201. No routing table
beyond that, no middleware, no access log (lobwife runs without one too), on
uvloop when installed: the floor under any lobwife HTTP/JSON call.

    python bench/aiohttp_server.py --port-file /tmp/p   # binds 127.0.0.1:<free port>
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from pathlib import Path

import orjson
from aiohttp import web

_JSON = {"Content-Type": "application/json"}
_GET_BODY = {"id": 1, "task_id": "T1", "name": "x"}


async def get_json(request: web.Request) -> web.Response:
    return web.Response(body=orjson.dumps(_GET_BODY), headers=_JSON)


async def post_json(request: web.Request) -> web.Response:
    try:
        data = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        return web.Response(status=400, body=b'{"error": "body is not JSON"}', headers=_JSON)
    if not isinstance(data, dict):
        return web.Response(status=400, body=b'{"error": "body must be a JSON object"}', headers=_JSON)
    out = {"id": 2, "task_id": "T2", "name": data.get("name")}
    return web.Response(status=201, body=orjson.dumps(out), headers=_JSON)


async def serve(host: str, port: int, port_file: Path | None) -> None:
    app = web.Application()
    app.router.add_get("/json", get_json)
    app.router.add_post("/json", post_json)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = port
    for addr in runner.addresses:
        if isinstance(addr, tuple) and len(addr) >= 2:
            bound = int(addr[1])
    if port_file is not None:
        tmp = port_file.with_suffix(".tmp")
        tmp.write_text(str(bound))
        tmp.rename(port_file)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()


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
