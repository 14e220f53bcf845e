"""The CLI against no server, or the HTTP port by mistake: it fails fast with a hint, exit 3.

Real subprocesses of ``python -m lobwife`` against a free port (nothing listening) and
against a real server's HTTP port; the server's log is read back afterwards.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest

from lobwife import cli
from tests.conftest import ServerProcess, free_port, start_server
from tests.e2e.test_cli import cli_proc


def test_no_server_fails_fast_with_a_hint() -> None:
    addr = f"127.0.0.1:{free_port()}"
    t0 = time.monotonic()
    proc = cli_proc("tasks", "list", env={"LOBWIFE_ADDR": addr}, timeout=20)
    elapsed = time.monotonic() - t0
    assert proc.returncode == cli.EXIT_UNREACHABLE == 3, proc.stderr
    first, second = proc.stderr.splitlines()
    assert first == f"error: no lobwife server answers at {addr} (is it running? set --addr or LOBWIFE_ADDR)"
    assert second.startswith("  (gRPC: ") and "Connection refused" in second, second
    # The 2 s wait, plus the interpreter's start (the client's retries alone took ~7.5 s).
    assert 2.0 <= elapsed < 6.0, elapsed
    assert proc.stdout == ""


def test_connect_timeout_sets_the_wait(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("LOBWIFE_ADDR", f"127.0.0.1:{free_port()}")
    t0 = time.monotonic()
    assert cli.main(["--connect-timeout", "0.3", "tasks", "get", "T1"]) == 3
    elapsed = time.monotonic() - t0
    assert 0.3 <= elapsed < 1.5, elapsed
    assert capsys.readouterr().err.startswith("error: no lobwife server answers at ")
    # --timeout bounds it too.
    t0 = time.monotonic()
    assert cli.main(["--timeout", "0.3", "tasks", "get", "T1"]) == 3
    assert time.monotonic() - t0 < 1.5


@pytest.fixture(scope="module")
def debug_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    srv = start_server(tmp_path_factory.mktemp("connect") / "state", "--log-level", "debug")
    yield srv
    if srv.proc.poll() is None:
        srv.terminate()


def test_the_http_port_by_mistake_is_named(debug_server: ServerProcess) -> None:
    addr = f"127.0.0.1:{debug_server.http_port}"
    t0 = time.monotonic()
    proc = cli_proc("tasks", "list", env={"LOBWIFE_ADDR": addr}, timeout=20)
    elapsed = time.monotonic() - t0
    assert proc.returncode == 3, proc.stderr
    assert proc.stderr.splitlines()[0] == (
        f"error: {addr} looks like lobwife's HTTP port; gRPC is on another port (default 50051):"
        " set --addr or LOBWIFE_ADDR"
    )
    assert elapsed < 6.0, elapsed
    # An HTTP/1.x answer is final: no waiting out --connect-timeout (timed in-process,
    # without the interpreter's start).
    t0 = time.monotonic()
    assert cli.main(["--addr", addr, "--connect-timeout", "5", "tasks", "list"]) == 3
    assert time.monotonic() - t0 < 2.0
    # The right port still works, with the same server.
    ok = cli_proc("tasks", "list", env={"LOBWIFE_ADDR": debug_server.grpc_addr})
    assert ok.returncode == 0, ok.stderr


def test_http1_is_recognised_without_grpc_text(debug_server: ServerProcess) -> None:
    """The fallback probe: the HTTP port answers the HTTP/2 preface with an HTTP/1.1 status line."""
    assert cli._answers_http1(f"127.0.0.1:{debug_server.http_port}")
    assert not cli._answers_http1(debug_server.grpc_addr)
    assert not cli._answers_http1(f"127.0.0.1:{free_port()}")
    assert cli.unreachable(f"127.0.0.1:{debug_server.http_port}", "").hint.endswith("set --addr or LOBWIFE_ADDR")
    assert "HTTP port" in cli.unreachable(f"127.0.0.1:{debug_server.http_port}", "").hint


def test_grpc_on_the_http_port_is_one_debug_line_per_connection(debug_server: ServerProcess) -> None:
    """Not aiohttp's error with a traceback and the binary preface, as it used to be."""
    before = len(debug_server.log().splitlines())
    env = {"LOBWIFE_ADDR": f"127.0.0.1:{debug_server.http_port}"}
    proc = cli_proc("--connect-timeout", "1", "tasks", "list", env=env)
    assert proc.returncode == 3
    time.sleep(0.2)  # the server's last lines
    new = debug_server.log().splitlines()[before:]
    assert "Traceback" not in "\n".join(new)
    records = [json.loads(line) for line in new if line.startswith("{")]
    assert len(records) == len(new), new  # every line is a JSON record: no stray output
    assert [r for r in records if r["level"] not in ("debug", "info")] == []
    h2 = [r for r in records if r["msg"].startswith("HTTP/2 (gRPC?) client on the HTTP/1.1 port")]
    # The CLI gives up after the first answer (a connection or two): one line each, nothing from aiohttp.
    assert 1 <= len(h2) <= 3, h2
    assert all(r["level"] == "debug" and r["logger"] == "lobwife.gateway" for r in h2)
    assert [r for r in records if r["logger"].startswith("aiohttp")] == []
