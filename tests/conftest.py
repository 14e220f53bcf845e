"""Fixtures that run the real server: a subprocess on free 127.0.0.1 ports over a real SQLite file."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.fakes.github import AppKey, FakeGitHub

ROOT = Path(__file__).resolve().parent.parent
PYTHONPATH = os.pathsep.join([str(ROOT / "clients" / "python"), str(ROOT / "server")])


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def subprocess_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = PYTHONPATH + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.pop("LOBWIFE_ADDR", None)
    env.update(extra)
    return env


def run_cli(grpc_addr: str, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """The real CLI (``python -m lobwife``) as a subprocess against the server at ``grpc_addr``."""
    return subprocess.run(
        [sys.executable, "-m", "lobwife", *args],
        env=subprocess_env(LOBWIFE_ADDR=grpc_addr, LOBWIFE_TOKEN=""),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@dataclass
class ServerProcess:
    state_dir: Path
    grpc_port: int
    http_port: int
    proc: subprocess.Popen[bytes]
    log_path: Path
    started_at: float = field(default_factory=time.monotonic)
    ready_seconds: float = 0.0

    @property
    def grpc_addr(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def health(self, service: str = "", timeout: float = 2.0) -> int:
        with grpc.insecure_channel(self.grpc_addr) as ch:
            stub = health_pb2_grpc.HealthStub(ch)
            return int(stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout).status)

    def wait_ready(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if self.health(timeout=0.5) == health_pb2.HealthCheckResponse.SERVING:
                    self.ready_seconds = time.monotonic() - self.started_at
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.02)
        raise TimeoutError(f"server not SERVING within {timeout}s:\n{self.log()}")

    def terminate(self, timeout: float = 20.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)


def start_server(state_dir: Path, *args: str, env: dict[str, str] | None = None, wait: bool = True) -> ServerProcess:
    state_dir.mkdir(parents=True, exist_ok=True)
    last_error: Exception | None = None
    for _ in range(3):  # a free port can be taken between probe and bind; try again
        gp, hp = free_port(), free_port()
        log_path = state_dir.parent / f"server-{gp}.log"
        with open(log_path, "wb") as logf:
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "lobwife_server",
                    "--state-dir",
                    str(state_dir),
                    "--grpc-port",
                    str(gp),
                    "--http-port",
                    str(hp),
                    "--grace",
                    "5",
                    # No example jobs unless a test brings its own jobs file (a later --jobs wins).
                    "--jobs",
                    "",
                    *args,
                ],
                stdout=logf,
                stderr=subprocess.STDOUT,
                env=subprocess_env(**(env or {})),
                cwd=ROOT,
            )
        srv = ServerProcess(state_dir, gp, hp, proc, log_path)
        if not wait:
            return srv
        try:
            srv.wait_ready()
            return srv
        except RuntimeError as e:
            last_error = e
            if "address already in use" not in srv.log().lower() and "bind" not in srv.log().lower():
                raise
    raise RuntimeError(f"could not start server: {last_error}")


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    srv = start_server(tmp_path / "state")
    yield srv
    if srv.proc.poll() is None:
        srv.terminate()


@pytest.fixture
def channel(server: ServerProcess) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(server.grpc_addr) as ch:
        yield ch


# -- the GitHub stand-in (tests/fakes/github.py), for the broker's tests ---------------------------


@pytest.fixture(scope="session")
def app_key() -> AppKey:
    """One GitHub App key pair for the session (RSA generation is the slow part)."""
    return AppKey.generate()


@pytest.fixture
def gh(app_key: AppKey) -> Iterator[FakeGitHub]:
    """A fresh GitHub stand-in (installation 1001 on account ``lobmob``) on a free 127.0.0.1 port."""
    with FakeGitHub(key=app_key) as server:
        yield server
