"""Every example in README.md and docs/*.md runs, as written, against a real server.

The examples are read from the markdown itself, so an edited example is what gets
tested. Each fenced block is one case with a server of its own (fresh state dir, free
ports): an example may only rely on what its own block sets up. The documented default
addresses (``127.0.0.1:50051``, ``127.0.0.1:8081``, ``LOBWIFE_ADDR``, ``$U``) are pointed
at that server, and a block that names the example jobs (``flaky``, ``queue-report``)
gets them, as ``serve.sh`` does.

- ``bash``: each command (a line, ``\\``-continued lines joined) runs in bash and must
  exit 0. ``curl`` fails on an HTTP error status (``--fail-with-body``), because
  ``curl -s`` alone exits 0 on a 404 and the example would pass while broken. A
  streaming command (a watch) passes once it has printed something; while it waits, the
  test makes a change (a task, a job run) as the reader would in another terminal.
- ``python``: the block runs as a script with this interpreter and must exit 0.
- ``toml``: a jobs file; the server must take it (no "jobs file not used").
- ``text``: output or diagrams, not run.

A block that is not a runnable example (installers, tools that rewrite the checkout)
carries ``<!-- not-an-example -->`` on the line before its fence. Any other fence
language fails the inventory test, so nothing escapes by accident.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
import tomllib
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import ROOT, ServerProcess, start_server, subprocess_env

MARKER = "<!-- not-an-example -->"
DOC_FILES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
RUNNABLE = {"bash", "python", "toml"}
NOT_RUN = {"text"}
EXAMPLE_JOBS = ROOT / "server" / "lobwife_server" / "jobs" / "examples" / "jobs.toml"
DEFAULT_GRPC = "127.0.0.1:50051"
DEFAULT_HTTP = "127.0.0.1:8081"
# A watch: `WatchTasks`/`WatchRuns` (grpcurl), `...:watch` (curl), `lobwife tasks watch`.
STREAMING = re.compile(r"Watch[A-Z]\w*|:watch\b|\btasks watch\b")
ASSIGNMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*=\S*")
STREAM_WAIT = 10.0  # seconds a watch may take to print its first item
LINE_TIMEOUT = 30.0
VENV_BIN = str(Path(sys.executable).parent)  # lobwife, grpcurl


@dataclass(frozen=True)
class Block:
    path: Path
    line: int  # of the opening fence, 1-based
    lang: str
    code: str
    marked: bool  # <!-- not-an-example -->

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def extract(path: Path) -> list[Block]:
    blocks: list[Block] = []
    lines = path.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        m = re.fullmatch(r"```(\S*)\s*", lines[i])
        if not m:
            i += 1
            continue
        start = i
        j = i + 1
        while j < len(lines) and lines[j].strip() != "```":
            j += 1
        assert j < len(lines), f"{path.relative_to(ROOT)}:{start + 1}: unclosed fence"
        prev = next((lines[k].strip() for k in range(start - 1, -1, -1) if lines[k].strip()), "")
        blocks.append(Block(path, start + 1, m.group(1), "\n".join(lines[start + 1 : j]) + "\n", prev == MARKER))
        i = j + 1
    return blocks


ALL_BLOCKS = [b for p in DOC_FILES for b in extract(p)]
EXAMPLES = [b for b in ALL_BLOCKS if b.lang in RUNNABLE and not b.marked]


def commands(code: str) -> list[str]:
    """The block's commands: continuation lines joined, blank and comment-only lines dropped."""
    out: list[str] = []
    pending = ""
    for raw in code.splitlines():
        if raw.rstrip().endswith("\\"):
            pending += raw.rstrip()[:-1] + " "
            continue
        line = (pending + raw).strip()
        pending = ""
        if line and not line.startswith("#"):
            out.append(line)
    assert not pending.strip(), f"a command ends with a line continuation: {pending!r}"
    return out


def point_at(text: str, srv: ServerProcess) -> str:
    return text.replace(DEFAULT_GRPC, srv.grpc_addr).replace(DEFAULT_HTTP, f"127.0.0.1:{srv.http_port}")


def needs_example_jobs(code: str) -> bool:
    return "flaky" in code or "queue-report" in code


@pytest.fixture
def docs_server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ServerProcess]:
    block: Block = request.param
    args = ["--jobs", str(EXAMPLE_JOBS)] if needs_example_jobs(block.code) else []
    srv = start_server(tmp_path / "state", *args)
    yield srv
    if srv.proc.poll() is None:
        srv.terminate()


def example_env(srv: ServerProcess) -> dict[str, str]:
    return subprocess_env(
        LOBWIFE_ADDR=srv.grpc_addr,
        U=srv.http_url,
        PATH=VENV_BIN + os.pathsep + os.environ.get("PATH", ""),
    )


def poke(srv: ServerProcess) -> None:
    """Make a change a watch can show: a new task, and a run of a built-in job."""
    for path, body in (
        ("/api/v1/tasks", {"name": "a change for the watch", "actor": "docs-test"}),
        ("/api/jobs/lobwife-wal-checkpoint/trigger", {}),
    ):
        req = urllib.request.Request(srv.http_url + path, data=json.dumps(body).encode(), method="POST")
        # 409 when the job is already running: the run that is going shows anyway.
        with contextlib.suppress(urllib.error.HTTPError):
            urllib.request.urlopen(req, timeout=5).close()


def run_stream(script: str, srv: ServerProcess, cwd: Path) -> tuple[str, str]:
    """Run a watch until its first non-blank line (returned, with stderr so far), then end it."""
    proc = subprocess.Popen(
        ["bash", "-c", script],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=example_env(srv),
        cwd=cwd,
        start_new_session=True,  # its own process group, so ending it ends curl/grpcurl too
    )
    assert proc.stdout is not None and proc.stderr is not None
    lines: queue.Queue[str | None] = queue.Queue()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=read, daemon=True).start()
    first = ""
    deadline = time.monotonic() + STREAM_WAIT
    next_poke = time.monotonic() + 0.3  # give the stream time to open: the change should be news
    try:
        while time.monotonic() < deadline:
            try:
                item = lines.get(timeout=0.1)
            except queue.Empty:
                if time.monotonic() >= next_poke:
                    poke(srv)
                    next_poke = time.monotonic() + 1.0
                continue
            if item is None:
                break
            if item.strip():
                first = item
                break
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    err = proc.stderr.read()
    return first, f"exit {proc.returncode}; stderr: {err}"


def run_bash(block: Block, srv: ServerProcess, cwd: Path) -> int:
    # `curl -s` exits 0 on an HTTP error; an example that gets a 404 must fail.
    prelude = ["set -o pipefail", 'curl() { command curl --fail-with-body "$@"; }']
    count = 0
    for cmd in commands(point_at(block.code, srv)):
        script = "\n".join([*prelude, cmd])
        if STREAMING.search(cmd):
            first, detail = run_stream(script, srv, cwd)
            assert first, f"{block.where}: the watch printed nothing in {STREAM_WAIT}s: {cmd}\n{detail}"
        else:
            r = subprocess.run(
                ["bash", "-c", script],
                capture_output=True,
                text=True,
                env=example_env(srv),
                cwd=cwd,
                timeout=LINE_TIMEOUT,
            )
            assert r.returncode == 0, (
                f"{block.where}: exit {r.returncode}: {cmd}\nstdout: {r.stdout}\nstderr: {r.stderr}"
            )
        if ASSIGNMENT.fullmatch(cmd):  # U=...: later commands of the block use it
            prelude.append("export " + cmd)
        count += 1
    return count


def run_python(block: Block, srv: ServerProcess, cwd: Path) -> None:
    script = cwd / "example.py"
    script.write_text(point_at(block.code, srv), encoding="utf-8")
    try:
        r = subprocess.run(
            [sys.executable, str(script)],
            capture_output=True,
            text=True,
            env=example_env(srv),
            cwd=cwd,
            timeout=LINE_TIMEOUT,
        )
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"{block.where}: still running after {LINE_TIMEOUT}s (a watch that never ends?)\n{e.stdout!r}")
    assert r.returncode == 0, f"{block.where}: exit {r.returncode}\nstdout: {r.stdout}\nstderr: {r.stderr}"


def check_jobs_file(block: Block, tmp_path: Path) -> None:
    path = tmp_path / "jobs.toml"
    path.write_text(block.code, encoding="utf-8")
    names = set(tomllib.loads(block.code).get("jobs", {}))
    assert names, f"{block.where}: a toml block is a jobs file, and this one has no [jobs.NAME]"
    srv = start_server(tmp_path / "toml-state", "--jobs", str(path))
    try:
        with urllib.request.urlopen(srv.http_url + "/api/v1/jobs", timeout=5) as resp:
            listed = {j["name"] for j in json.load(resp)["jobs"]}
        assert "jobs file not used" not in srv.log(), f"{block.where}: the server refused it:\n{srv.log()}"
        assert names <= listed, f"{block.where}: jobs {sorted(names - listed)} not loaded:\n{srv.log()}"
    finally:
        srv.terminate()


def test_every_fence_is_an_example_or_says_why_not() -> None:
    unknown = [f"{b.where}: ```{b.lang}" for b in ALL_BLOCKS if b.lang not in RUNNABLE | NOT_RUN]
    assert not unknown, (
        "fences must be one of " + ", ".join(sorted(RUNNABLE | NOT_RUN)) + " (```text for output): " + str(unknown)
    )
    # The extraction itself must not rot: README's four "Using it" blocks are found.
    readme = [b for b in EXAMPLES if b.path.name == "README.md"]
    assert [b.lang for b in readme].count("bash") >= 3 and any(b.lang == "python" for b in readme), readme
    assert all(commands(b.code) for b in EXAMPLES if b.lang == "bash"), "an empty bash example"


@pytest.mark.parametrize("docs_server", [b for b in EXAMPLES if b.lang != "toml"], ids=lambda b: b.where, indirect=True)
def test_example_runs(docs_server: ServerProcess, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    block: Block = request.node.callspec.params["docs_server"]
    work = tmp_path / "work"  # not the checkout: an example must not depend on (or write into) it
    work.mkdir()
    if block.lang == "bash":
        assert run_bash(block, docs_server, work) > 0
    else:
        run_python(block, docs_server, work)


@pytest.mark.parametrize("block", [b for b in EXAMPLES if b.lang == "toml"], ids=lambda b: b.where)
def test_jobs_file_example_is_accepted(block: Block, tmp_path: Path) -> None:
    check_jobs_file(block, tmp_path)
