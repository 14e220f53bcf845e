"""Slow and idle HTTP clients cannot hold the server: header, body and idle deadlines, the connection bound.

Real server subprocesses, raw sockets on 127.0.0.1 (curl cannot send half a request),
short configured timeouts, and every wait bounded.
"""

from __future__ import annotations

import io
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from grpc_health.v1 import health_pb2

from lobwife.client import Client
from lobwife.v1 import jobs_pb2
from lobwife_server import config
from lobwife_server.api import gateway
from lobwife_server.core import logs
from tests.conftest import ROOT, ServerProcess, free_port, start_server, subprocess_env
from tests.http_util import curl

HEADER_S, BODY_S, IDLE_S = 1.0, 1.0, 2.0
SLACK = 1.0  # how late a close may come (loop scheduling, a loaded 2-core machine)
SERVING = health_pb2.HealthCheckResponse.SERVING
POST = b"POST /api/v1/tasks HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    s = start_server(
        tmp_path_factory.mktemp("limits") / "state",
        "--http-header-timeout",
        str(HEADER_S),
        "--http-body-timeout",
        str(BODY_S),
        "--http-idle-timeout",
        str(IDLE_S),
        "--log-level",
        "debug",
    )
    yield s
    if s.proc.poll() is None:
        s.terminate()


def connect(port: int) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def read_to_close(s: socket.socket, limit: float) -> tuple[bytes, float]:
    """Everything the server sends until it closes, and when it closed (seconds from now); bounded by ``limit``."""
    t0 = time.monotonic()
    data = b""
    s.settimeout(limit)
    try:
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    except ConnectionResetError:
        pass
    except TimeoutError:
        raise AssertionError(f"still open after {limit}s; got {data[:200]!r}") from None
    finally:
        s.close()
    return data, time.monotonic() - t0


def status_of(data: bytes) -> int:
    return int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/1.") else 0


def body_json(data: bytes) -> dict[str, object]:
    return dict(json.loads(data.split(b"\r\n\r\n", 1)[1]))


def log_problems(text: str) -> list[str]:
    return [line for line in text.splitlines() if "Traceback" in line or '"level": "error"' in line]


# --------------------------------------------------------------------------- deadlines


def test_silent_connection_is_closed_after_the_header_timeout(srv: ServerProcess) -> None:
    s = connect(srv.http_port)
    data, took = read_to_close(s, HEADER_S + 5)
    assert data == b""  # nothing was asked, nothing is answered
    assert HEADER_S - 0.2 <= took <= HEADER_S + SLACK


def test_half_sent_headers_get_408_after_the_header_timeout(srv: ServerProcess) -> None:
    s = connect(srv.http_port)
    s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")
    data, took = read_to_close(s, HEADER_S + 5)
    assert status_of(data) == 408 and b"Connection: close" in data
    assert "request headers timed out" in str(body_json(data)["message"])
    assert HEADER_S - 0.2 <= took <= HEADER_S + SLACK
    assert metric(srv, 'lobwife_http_timeouts_total{phase="headers"}') >= 1


def metric(srv: ServerProcess, sample: str) -> float:
    """The value of one sample of the server's /metrics."""
    scrape = curl("GET", srv.http_url + "/metrics").body.decode()
    for line in scrape.splitlines():
        if line.startswith(sample + " "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{sample} not in /metrics")


def test_trickled_headers_do_not_extend_the_header_deadline(srv: ServerProcess) -> None:
    s = connect(srv.http_port)
    t0 = time.monotonic()
    request = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 40 + b"\r\n\r\n"
    with pytest.raises(OSError):  # the server closes while bytes are still coming
        for i in range(len(request)):
            s.send(request[i : i + 1])
            time.sleep(0.1)  # 1 byte / 0.1 s: the whole request would take 6 s
    took = time.monotonic() - t0
    s.close()
    assert took <= HEADER_S + SLACK + 0.5


def test_stalled_body_gets_408_after_the_body_timeout(srv: ServerProcess) -> None:
    s = connect(srv.http_port)
    s.sendall(POST + b"Content-Length: 100\r\n\r\n{")
    data, took = read_to_close(s, BODY_S + 5)
    assert status_of(data) == 408, data
    assert "request body timed out" in str(body_json(data)["message"])
    assert BODY_S - 0.2 <= took <= BODY_S + SLACK
    assert metric(srv, 'lobwife_http_timeouts_total{phase="body"}') >= 1


def test_unread_body_that_stalls_or_breaks_closes_without_an_error_log(srv: ServerProcess) -> None:
    # GET /health does not read a body: aiohttp answers, then discards the rest (for up
    # to 10 s of its own); a stalled rest ends at the body timeout, a broken one at once.
    before = len(srv.log().splitlines())
    s = connect(srv.http_port)
    s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
    data, took = read_to_close(s, BODY_S + 5)
    assert status_of(data) == 200 and BODY_S - 0.2 <= took <= BODY_S + SLACK
    s = connect(srv.http_port)
    s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
    time.sleep(0.2)
    s.sendall(b"zz\r\n\r\n")
    data, took = read_to_close(s, 5)
    assert status_of(data) == 200 and took < 0.5
    time.sleep(0.2)
    assert log_problems("\n".join(srv.log().splitlines()[before:])) == []


def test_a_slow_body_that_keeps_arriving_is_served(srv: ServerProcess) -> None:
    # The body bound is on silence, not on the whole upload: 2.4 s of body with a byte
    # every 0.3 s (under BODY_S) is a slow client, not a stuck one.
    body = b'{"name": "slow upload"}'
    s = connect(srv.http_port)
    s.sendall(
        b"POST /api/v1/tasks HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nConnection: close\r\n"
        b"Content-Length: %d\r\n\r\n" % len(body)
    )
    t0 = time.monotonic()
    for i in range(0, len(body), 3):
        time.sleep(0.3)
        s.sendall(body[i : i + 3])
    assert time.monotonic() - t0 > 2 * BODY_S
    data, _ = read_to_close(s, 5)
    assert status_of(data) == 201, data
    assert body_json(data)["name"] == "slow upload"


def test_idle_keepalive_connection_is_closed_after_the_idle_timeout(srv: ServerProcess) -> None:
    s = connect(srv.http_port)
    s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
    s.settimeout(5)
    first = s.recv(65536)
    assert status_of(first) == 200
    # (the whole small response arrives in one segment on loopback)
    rest, took = read_to_close(s, IDLE_S + 5)
    assert rest == b""
    assert IDLE_S - 0.2 <= took <= IDLE_S + SLACK


def test_keepalive_connection_serves_requests_spaced_under_the_idle_timeout(srv: ServerProcess) -> None:
    s = connect(srv.http_port)
    s.settimeout(5)
    for _ in range(3):
        s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        assert status_of(s.recv(65536)) == 200
        time.sleep(HEADER_S + 0.3)  # longer than the header timeout: idle time is not header time
    s.close()


def test_bad_chunk_size_after_the_headers_gets_a_prompt_400(srv: ServerProcess) -> None:
    s = connect(srv.http_port)
    s.sendall(POST + b"Transfer-Encoding: chunked\r\n\r\n")
    time.sleep(0.2)  # a separate segment: aiohttp has already handed the request over
    t0 = time.monotonic()
    s.sendall(b"zz\r\n{}\r\n0\r\n\r\n")
    data, _ = read_to_close(s, 5)
    took = time.monotonic() - t0
    assert status_of(data) == 400, data
    assert "malformed request body" in str(body_json(data)["message"])
    assert took < 0.5  # not the body timeout, and not never


def test_bad_chunk_size_in_one_segment_gets_400_and_no_error_log(srv: ServerProcess) -> None:
    before = len(srv.log().splitlines())
    s = connect(srv.http_port)
    s.sendall(b"POST /api/v1/tasks HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n")
    data, took = read_to_close(s, 5)
    assert status_of(data) == 400 and took < 0.5
    time.sleep(0.2)
    assert log_problems("\n".join(srv.log().splitlines()[before:])) == []


def test_clients_hanging_up_mid_body_are_one_debug_line_each(srv: ServerProcess) -> None:
    before = len(srv.log().splitlines())
    n = 50
    for _ in range(n):
        s = connect(srv.http_port)
        s.sendall(b"POST /api/v1/tasks HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
        time.sleep(0.01)  # the handler is reading the body
        s.close()
    deadline = time.monotonic() + 5
    while True:
        new = srv.log().splitlines()[before:]
        gone = [line for line in new if "went away mid-request" in line]
        if len(gone) >= n or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert len(gone) == n
    assert all(json.loads(line)["level"] == "debug" for line in gone)
    assert log_problems("\n".join(new)) == []


# --------------------------------------------------------------------------- the connection bound


def tick_jobs(tmp_path: Path) -> Path:
    path = tmp_path / "jobs.toml"
    path.write_text('[jobs.tick]\ncommand = ["true"]\nevery = "1s"\n')
    return path


def half_sent(port: int, n: int) -> list[socket.socket]:
    """``n`` connections each holding a request whose body never comes."""
    held = []
    for _ in range(n):
        s = connect(port)
        s.sendall(b"POST /api/v1/tasks HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
        held.append(s)
    return held


def assert_jobs_keep_running(srv: ServerProcess, window: float) -> int:
    """The every-1s job starts a run for each slot of the next ``window`` seconds, on time."""
    t0 = time.time()
    time.sleep(window)
    with Client(srv.grpc_addr) as lw:
        asked = time.time()
        runs = [r for r in lw.list_runs("tick", page_size=50).runs if r.scheduled_at.ToNanoseconds() / 1e9 >= t0]
    slots = {r.scheduled_at.ToSeconds() for r in runs}
    assert len(slots) >= window - 1, [(r.scheduled_at.ToJsonString(), r.status) for r in runs]
    for r in runs:
        scheduled = r.scheduled_at.ToNanoseconds() / 1e9
        if r.status == jobs_pb2.RUN_STATUS_PENDING and asked - scheduled < 0.5:
            continue  # the slot of this very moment: recorded, about to start
        assert r.status in (jobs_pb2.RUN_STATUS_SUCCESS, jobs_pb2.RUN_STATUS_RUNNING), r
        late = r.started_at.ToNanoseconds() / 1e9 - scheduled
        assert late < 0.5, (late, r)
    return len(runs)


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def test_over_the_bound_new_connections_get_503_and_grpc_and_jobs_carry_on(tmp_path: Path) -> None:
    srv = start_server(tmp_path / "state", "--jobs", str(tick_jobs(tmp_path)), "--http-max-connections", "20")
    held: list[socket.socket] = []
    try:
        held = half_sent(srv.http_port, 60)  # 20 held, 40 refused
        time.sleep(gateway.REFUSED_LINGER + 0.2)  # the refused ones are gone: the next refusal can answer
        s = connect(srv.http_port)
        s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        data, took = read_to_close(s, 5)
        assert status_of(data) == 503 and took < 1.0, data
        assert "too many open HTTP connections" in str(body_json(data)["message"])
        assert srv.health() == SERVING
        assert_jobs_keep_running(srv, 3.0)
        assert srv.health() == SERVING
    finally:
        for h in held:
            h.close()
    time.sleep(0.3)
    s = connect(srv.http_port)
    s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert status_of(read_to_close(s, 5)[0]) == 200  # freed slots are usable again
    # The operator sees it in the metrics too: every refusal counted, the open connections gauged.
    assert metric(srv, "lobwife_http_connections_refused_total") >= 41  # the burst's 40, and the one asked for
    assert metric(srv, "lobwife_http_connections_open") >= 1  # at least the scrape's own connection
    text = srv.log()
    assert srv.terminate() == 0
    lines = text.splitlines()
    assert len(lines) < 1000 and log_problems(text) == []
    refusals = [line for line in lines if "HTTP connection refused" in line]
    assert 1 <= len(refusals) <= logs.RATE_LIMIT_BURST  # 40 refusals, rate-limited


def start_with_fd_limit(state_dir: Path, nofile: int, *args: str) -> ServerProcess:
    state_dir.mkdir(parents=True, exist_ok=True)
    gp, hp = free_port(), free_port()
    log_path = state_dir.parent / f"server-{gp}.log"
    cmd = [shutil.which("prlimit") or "prlimit", f"--nofile={nofile}:{nofile}", "--", sys.executable]
    cmd += ["-m", "lobwife_server", "--state-dir", str(state_dir), "--grpc-port", str(gp), "--http-port", str(hp)]
    with open(log_path, "wb") as logf:
        proc = subprocess.Popen(
            [*cmd, "--grace", "5", *args], stdout=logf, stderr=subprocess.STDOUT, env=subprocess_env(), cwd=ROOT
        )
    srv = ServerProcess(state_dir, gp, hp, proc, log_path)
    srv.wait_ready()
    return srv


@pytest.mark.skipif(shutil.which("prlimit") is None, reason="needs util-linux prlimit")
def test_under_a_256_fd_limit_300_half_sent_connections_leave_jobs_and_grpc_working(tmp_path: Path) -> None:
    srv = start_with_fd_limit(tmp_path / "state", 256, "--jobs", str(tick_jobs(tmp_path)))
    held: list[socket.socket] = []
    try:
        limits = [json.loads(line) for line in srv.log().splitlines() if '"HTTP limits"' in line]
        expected = config.default_http_max_connections(256, config.DEFAULT_MAX_CONCURRENT_RUNS)
        assert expected == 128 and limits[0]["max_connections"] == expected
        held = half_sent(srv.http_port, 300)
        peak = fd_count(srv.proc.pid)
        assert peak < 256 - 32, peak  # the reserve is intact
        s = connect(srv.http_port)
        s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        data, took = read_to_close(s, 5)
        assert status_of(data) in (0, 503) and took < 1.0  # refused at once (503, or closed while lingering is full)
        assert srv.health() == SERVING
        assert_jobs_keep_running(srv, 3.0)
        assert fd_count(srv.proc.pid) < 256 - 32
    finally:
        for h in held:
            h.close()
    time.sleep(0.3)
    s = connect(srv.http_port)
    s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert status_of(read_to_close(s, 5)[0]) == 200
    text = srv.log()
    assert srv.terminate() == 0
    assert len(text.splitlines()) < 1000
    assert log_problems(text) == [] and "Too many open files" not in text


# --------------------------------------------------------------------------- configuration and log limits


def parse(*argv: str) -> config.Config:
    return config.from_args(config.build_parser().parse_args(list(argv)))


def test_limits_defaults_flags_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HEADER", "BODY", "IDLE"):
        monkeypatch.delenv(f"LOBWIFE_HTTP_{name}_TIMEOUT", raising=False)
    monkeypatch.delenv("LOBWIFE_HTTP_MAX_CONNECTIONS", raising=False)
    limits = parse().http_limits
    assert (limits.header_timeout, limits.body_timeout, limits.idle_timeout) == (10.0, 30.0, 15.0)
    assert limits.max_connections == config.default_http_max_connections(config.fd_limit(), 128)
    monkeypatch.setenv("LOBWIFE_HTTP_HEADER_TIMEOUT", "2.5")
    monkeypatch.setenv("LOBWIFE_HTTP_MAX_CONNECTIONS", "50")
    assert parse().http_limits.header_timeout == 2.5 and parse().http_limits.max_connections == 50
    limits = parse("--http-header-timeout", "3", "--http-max-connections", "7").http_limits
    assert limits.header_timeout == 3 and limits.max_connections == 7  # flags win
    assert [config.default_http_max_connections(n, 128) for n in (64, 256, 1024, 65536)] == [32, 128, 640, 1024]


@pytest.mark.parametrize(
    ("var", "value", "needle"),
    [
        ("LOBWIFE_HTTP_HEADER_TIMEOUT", "soon", "LOBWIFE_HTTP_HEADER_TIMEOUT='soon'"),
        ("LOBWIFE_HTTP_BODY_TIMEOUT", "0", "LOBWIFE_HTTP_BODY_TIMEOUT=0"),
        ("LOBWIFE_HTTP_IDLE_TIMEOUT", "nan", "LOBWIFE_HTTP_IDLE_TIMEOUT=nan"),
        ("LOBWIFE_HTTP_MAX_CONNECTIONS", "many", "LOBWIFE_HTTP_MAX_CONNECTIONS='many'"),
        ("LOBWIFE_HTTP_MAX_CONNECTIONS", str(1 << 20), "LOBWIFE_HTTP_MAX_CONNECTIONS="),
    ],
)
def test_bad_limit_values_are_usage_errors_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, var: str, value: str, needle: str
) -> None:
    monkeypatch.setenv(var, value)
    with pytest.raises(config.ConfigError, match=needle.replace("(", r"\(")):
        parse()


def test_bad_limit_flag_exits_2_naming_it(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "lobwife_server", "--state-dir", str(tmp_path), "--http-header-timeout", "-1"],
        capture_output=True,
        text=True,
        env=subprocess_env(),
        cwd=ROOT,
        timeout=20,
    )
    assert done.returncode == 2 and "--http-header-timeout / LOBWIFE_HTTP_HEADER_TIMEOUT=-1" in done.stderr


def test_rate_limit_filter_lets_a_burst_through_then_counts() -> None:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(logs.JsonFormatter())
    limiter = logs.RateLimitFilter(handler, burst=5, interval=0.2)
    handler.addFilter(limiter)
    logger = logging.getLogger("tests.ratelimit")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    try:
        for i in range(1000):
            logger.error("could not start %s: Too many open files", f"job-{i}")
        logger.warning("another key")
        time.sleep(0.25)
        logger.info("after the interval")  # brings the summary out
        limiter.flush()
    finally:
        logger.removeHandler(handler)
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert len(lines) == 5 + 1 + 1 + 1
    summary = lines[6]
    assert summary["level"] == "error" and summary["repeated"] == 995
    assert summary["msg"].startswith("could not start job-999: Too many open files ... repeated 995 times")
    assert lines[7]["msg"] == "after the interval"
