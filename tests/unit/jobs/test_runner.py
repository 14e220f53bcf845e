"""The job runner against real subprocesses, on both event loops the server may use (asyncio, uvloop)."""

from __future__ import annotations

import asyncio
import os
import resource
import subprocess
import sys
import time
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, TypeVar

import pytest
import uvloop

from lobwife_server.jobs import runner
from lobwife_server.jobs.runner import OutputCapture, RunResult, RunSpec

T = TypeVar("T")
Arun = Callable[[Coroutine[Any, Any, T]], T]


@pytest.fixture(params=["asyncio", "uvloop"])
def arun(request: pytest.FixtureRequest) -> Callable[[Coroutine[Any, Any, Any]], Any]:
    """Runs a coroutine to completion on a fresh loop of the parametrized kind."""
    if request.param == "uvloop":
        return uvloop.run
    return asyncio.run


def gone(pid: int) -> bool:
    """No such process, or only a zombie (dead; an orphan waits for pid 1, which may not reap it)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except FileNotFoundError:
        return True
    return stat[stat.rfind(b")") + 2 :].split()[0] in (b"Z", b"X")


def sh(script: str, **kw: Any) -> RunSpec:
    return RunSpec(["sh", "-c", script], **kw)


def pids_in(output: str, tag: str) -> list[int]:
    return [int(line.split()[1]) for line in output.splitlines() if line.startswith(tag + " ")]


# --- outcomes -----------------------------------------------------------------------------------


def test_success_captures_stdout_and_stderr(arun: Arun[RunResult]) -> None:
    res = arun(runner.run(sh("echo out; echo err >&2; echo more")))
    assert res.status == "success"
    assert res.exit_code == 0
    assert res.output == "out\nerr\nmore\n"
    assert not res.output_truncated
    assert res.bytes_total == len("out\nerr\nmore\n")
    assert res.reason == "exited with code 0"
    assert res.pid is not None and res.pgid == res.pid
    assert res.started_at.tzinfo is UTC and res.started_at <= res.finished_at
    # No lingering in the ordinary case: the run ends with its process, well before eof_grace.
    assert 0 < res.duration < runner.DEFAULT_EOF_GRACE


def test_nonzero_exit_is_failed(arun: Arun[RunResult]) -> None:
    res = arun(runner.run(sh("echo boom; exit 3")))
    assert (res.status, res.exit_code, res.output) == ("failed", 3, "boom\n")
    assert res.reason == "exited with code 3"


def test_killed_by_signal_is_failed(arun: Arun[RunResult]) -> None:
    res = arun(runner.run(sh("kill -KILL $$")))
    assert (res.status, res.exit_code) == ("failed", -9)
    assert res.reason == "killed by SIGKILL"


def test_environment_is_minimal_plus_spec_env(arun: Arun[RunResult], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOBWIFE_TEST_SECRET", "must-not-leak")
    monkeypatch.setenv("TZ", "Europe/Paris")
    slot = datetime(2024, 5, 1, 14, 0, tzinfo=timezone(timedelta(hours=2)))
    env = runner.job_env(url="http://127.0.0.1:8081", job="backup", run_id=42, scheduled_at=slot)
    env["EXTRA"] = "x y"
    res = arun(runner.run(RunSpec(["env"], env=env)))
    assert res.status == "success", res
    seen = dict(line.split("=", 1) for line in res.output.splitlines())
    assert seen["LOBWIFE_URL"] == "http://127.0.0.1:8081"
    assert seen["LOBWIFE_JOB"] == "backup"
    assert seen["LOBWIFE_RUN_ID"] == "42"
    assert seen["LOBWIFE_SCHEDULED_AT"] == "2024-05-01T12:00:00Z"
    assert seen["EXTRA"] == "x y"
    assert seen["TZ"] == "Europe/Paris"
    assert seen["PATH"] == os.environ["PATH"]
    inherited = {k for k in runner.INHERITED_ENV if k in os.environ}
    assert set(seen) == inherited | set(env)


def test_spec_env_overrides_base(arun: Arun[RunResult]) -> None:
    res = arun(runner.run(RunSpec(["sh", "-c", 'echo "$HOME"'], env={"HOME": "/nowhere"})))
    assert res.output == "/nowhere\n"


def test_cwd_is_honoured(arun: Arun[RunResult], tmp_path: Path) -> None:
    res = arun(runner.run(RunSpec(["pwd"], cwd=tmp_path)))
    assert res.status == "success"
    assert Path(res.output.strip()).resolve() == tmp_path.resolve()


# --- cannot start -------------------------------------------------------------------------------


@pytest.mark.parametrize("prog", ["/nonexistent/job.sh", "no-such-command-lobwife"])
def test_command_not_found_is_error(arun: Arun[RunResult], prog: str) -> None:
    res = arun(runner.run(RunSpec([prog, "arg"])))
    assert res.status == "error"
    assert res.reason == f"command not found: {prog}"
    assert (res.exit_code, res.pid, res.pgid, res.output) == (None, None, None, "")


def test_not_executable_is_error(arun: Arun[RunResult], tmp_path: Path) -> None:
    script = tmp_path / "job.sh"
    script.write_text("#!/bin/sh\necho hi\n")
    script.chmod(0o644)
    res = arun(runner.run(RunSpec([str(script)])))
    assert res.status == "error"
    assert res.reason.startswith("permission denied") and str(script) in res.reason


def test_missing_cwd_is_error(arun: Arun[RunResult], tmp_path: Path) -> None:
    res = arun(runner.run(RunSpec(["pwd"], cwd=tmp_path / "missing")))
    assert res.status == "error"
    assert res.reason == f"working directory not found: {tmp_path / 'missing'}"


def test_nul_byte_in_argv_is_error_not_exception(arun: Arun[RunResult]) -> None:
    res = arun(runner.run(RunSpec(["echo", "a\0b"])))
    assert res.status == "error"
    assert res.reason == "could not start echo: argv[1] contains a NUL byte"
    res = arun(runner.run(RunSpec(["true"], env={"A=B": "c"})))
    assert res.status == "error" and "environment variable 'A=B'" in res.reason


def test_spec_rejects_bad_values() -> None:
    bad: Any
    for bad in ([], "sh -c true"):
        with pytest.raises(ValueError, match="argv"):
            RunSpec(bad)
    with pytest.raises(ValueError, match="timeout"):
        RunSpec(["true"], timeout=0)
    with pytest.raises(ValueError, match="output_cap"):
        RunSpec(["true"], output_cap=-1)
    with pytest.raises(ValueError, match="zone"):
        runner.rfc3339(datetime(2024, 1, 1))
    assert RunSpec(["a", "b"]).argv == ("a", "b")


# --- timeouts and process groups ----------------------------------------------------------------

# The main shell starts a child that ignores SIGTERM (so does its `sleep`, which inherits the ignored
# disposition through exec) and then waits in the foreground; SIGTERM ends the main shell, not the child.
STUBBORN_TREE = """
sh -c 'trap "" TERM; echo child $$; exec sleep 100' &
echo main $$
sleep 100
"""


def test_timeout_ends_whole_group_including_term_ignoring_orphan(arun: Arun[RunResult]) -> None:
    res = arun(runner.run(sh(STUBBORN_TREE, timeout=0.4, kill_grace=0.3)))
    assert res.status == "timeout"
    assert res.reason == "timed out after 0.4s; SIGKILL after 0.3s grace"
    assert res.exit_code == -15  # the main shell died of SIGTERM; the child needed SIGKILL
    [child] = pids_in(res.output, "child")
    assert res.pgid is not None
    assert not runner.group_alive(res.pgid)
    assert gone(child)
    assert 0.7 <= res.duration < 2.5


def test_timeout_ended_by_sigterm_does_not_wait_for_grace(arun: Arun[RunResult]) -> None:
    res = arun(runner.run(sh("echo started; sleep 100", timeout=0.3, kill_grace=5)))
    assert res.status == "timeout"
    assert res.reason == "timed out after 0.3s; ended by SIGTERM"
    assert res.output == "started\n"
    assert res.duration < 2.0


@pytest.mark.parametrize("redirect", ["", ">/dev/null 2>&1"], ids=["holding-pipe", "detached-output"])
def test_background_children_do_not_outlive_the_run(arun: Arun[RunResult], redirect: str) -> None:
    script = f"sh -c 'echo bg $$; exec sleep 100' {redirect} & echo main; sleep 0.1"
    if redirect:  # its output goes elsewhere: learn its pid from the shell instead
        script = f"sh -c 'exec sleep 100' {redirect} & echo bg $!; sleep 0.1"
    res = arun(runner.run(sh(script, eof_grace=0.3)))
    assert res.status == "success"
    assert "background processes" in res.reason and "were killed" in res.reason
    [bg] = pids_in(res.output, "bg")
    assert gone(bg)
    assert res.pgid is not None and not runner.group_alive(res.pgid)
    assert res.duration < 2.0


def test_cancellation_ends_the_group(arun: Arun[None]) -> None:
    started: list[tuple[int, int]] = []

    async def scenario() -> None:
        def on_start(pid: int, pgid: int) -> None:
            started.append((pid, pgid))

        task = asyncio.create_task(runner.run(sh(STUBBORN_TREE, kill_grace=0.3), on_start=on_start))
        await asyncio.sleep(0.3)
        assert started and runner.group_alive(started[0][1])
        t0 = time.monotonic()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert 0.25 <= time.monotonic() - t0 < 2.0  # it gave SIGTERM its grace, then SIGKILL

    arun(scenario())
    assert not runner.group_alive(started[0][1])


def _open_fds() -> set[int]:
    return {int(n) for n in os.listdir("/proc/self/fd")}


def test_many_simultaneous_runs_each_get_their_own_output_and_leak_no_fds(arun: Arun[None]) -> None:
    # Children start in worker threads while the loop closes finished runs' fds: every fd must have
    # one owner closing it once, or a late close hits a number another spawn was just given (seen as
    # "Bad file descriptor" / "File exists" starts and crossed output before).
    async def scenario() -> None:
        before = _open_fds()
        for _ in range(3):
            results = await asyncio.gather(*(runner.run(sh(f"echo job-{i}; exit {i % 3}")) for i in range(60)))
            for i, res in enumerate(results):
                assert res.output == f"job-{i}\n", res.reason
                assert res.exit_code == i % 3
                assert res.status == ("success" if i % 3 == 0 else "failed")
                assert res.pid is not None and gone(res.pid)
        await asyncio.sleep(0.05)
        assert _open_fds() <= before | set(range(3))

    arun(scenario())


def test_cancelled_while_starting_leaves_no_process(arun: Arun[None], monkeypatch: pytest.MonkeyPatch) -> None:
    # Cancelled (a shutdown) while the child is being started in its thread: the child that the start
    # produces anyway must be ended, not orphaned. The start is slowed so the cancel surely lands in it.
    started: list[int] = []
    real_popen = subprocess.Popen

    def slow_popen(*args: Any, **kwargs: Any) -> subprocess.Popen[bytes]:
        proc = real_popen(*args, **kwargs)
        started.append(proc.pid)
        time.sleep(0.3)
        return proc

    monkeypatch.setattr(runner.subprocess, "Popen", slow_popen)

    async def scenario() -> None:
        task = asyncio.create_task(runner.run(sh("exec sleep 30")))
        await asyncio.sleep(0.1)  # the start is now under way in a worker thread
        assert started and not task.done()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    arun(scenario())
    [pid] = started
    deadline = time.monotonic() + 5
    while not gone(pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert gone(pid)


# --- callbacks ----------------------------------------------------------------------------------


def test_on_start_gets_pid_and_pgid_while_running(arun: Arun[RunResult]) -> None:
    seen: list[tuple[int, int, int]] = []

    async def on_start(pid: int, pgid: int) -> None:
        await asyncio.sleep(0.05)  # awaited: the scheduler writes to the database here
        seen.append((pid, pgid, os.getpgid(pid)))

    res = arun(runner.run(sh("sleep 0.3"), on_start=on_start))
    assert res.status == "success"
    [(pid, pgid, actual)] = seen
    assert pid == pgid == actual == res.pid
    assert pgid != os.getpgrp()


def test_on_start_failure_ends_the_group_and_propagates(arun: Arun[RunResult]) -> None:
    started: list[int] = []

    def on_start(pid: int, pgid: int) -> None:
        started.append(pgid)
        raise RuntimeError("database is locked")

    with pytest.raises(RuntimeError, match="database is locked"):
        arun(runner.run(sh("sleep 100", kill_grace=0.3), on_start=on_start))
    assert not runner.group_alive(started[0])


def test_command_waits_at_the_gate_until_on_start_has_returned(arun: Arun[RunResult], tmp_path: Path) -> None:
    # Issue 8, case 2: the command must not run before its pid is on record.
    marker = tmp_path / "ran"
    before: list[bool] = []

    async def on_start(pid: int, pgid: int) -> None:
        await asyncio.sleep(0.3)  # a slow commit
        before.append(marker.exists())

    res = arun(runner.run(RunSpec(["touch", str(marker)]), on_start=on_start))
    assert res.status == "success", res.reason
    assert before == [False], "the command ran before on_start returned"
    assert marker.exists()


def test_on_start_failure_never_runs_the_command(arun: Arun[RunResult], tmp_path: Path) -> None:
    marker = tmp_path / "ran"

    def on_start(pid: int, pgid: int) -> None:
        raise RuntimeError("disk is full")

    with pytest.raises(RuntimeError, match="disk is full"):
        arun(runner.run(RunSpec(["touch", str(marker)]), on_start=on_start))
    time.sleep(0.2)
    assert not marker.exists()


def test_a_server_killed_before_recording_leaves_no_process_that_ran(tmp_path: Path) -> None:
    # The whole server process dies (SIGKILL) inside on_start: the child sees EOF at the gate and
    # exits without running its command, so nothing is left unsupervised.
    marker = tmp_path / "ran"
    script = f"""
import asyncio, os, signal, sys
from lobwife_server.jobs import runner
async def on_start(pid, pgid):
    print(pid, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
asyncio.run(runner.run(runner.RunSpec(["sh", "-c", "touch {marker}; sleep 30"]), on_start=on_start))
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=30)
    assert proc.returncode == -9, proc.stderr
    pid = int(proc.stdout.split()[0])
    deadline = time.monotonic() + 5
    while not gone(pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert gone(pid), "the child outlived its server"
    assert not marker.exists(), "the command ran although its start was never recorded"


def test_a_file_with_neither_elf_nor_shebang_is_an_error(arun: Arun[RunResult], tmp_path: Path) -> None:
    script = tmp_path / "noshebang"
    script.write_text("touch should-not-run\n")
    script.chmod(0o755)
    res = arun(runner.run(RunSpec([str(script)], cwd=tmp_path)))
    assert res.status == "error"
    assert res.reason == f"not an executable format (a script needs a #! line): {script}"
    assert not (tmp_path / "should-not-run").exists()


def test_output_arrives_live(arun: Arun[RunResult], tmp_path: Path) -> None:
    # The job waits until the test has *seen* its first line: without live output it would hang
    # until the timeout.
    flag = tmp_path / "seen"
    chunks: list[bytes] = []

    def on_output(chunk: bytes) -> None:
        chunks.append(chunk)
        if b"first" in b"".join(chunks):
            flag.touch()

    script = f"echo first; while [ ! -e '{flag}' ]; do sleep 0.02; done; echo second"
    res = arun(runner.run(sh(script, timeout=5), on_output=on_output))
    assert res.status == "success", res.reason
    assert b"".join(chunks) == b"first\nsecond\n"
    assert res.output == "first\nsecond\n"


def test_failing_on_output_does_not_break_the_run(arun: Arun[RunResult]) -> None:
    def on_output(chunk: bytes) -> None:
        raise RuntimeError("viewer went away")

    res = arun(runner.run(sh("echo a; sleep 0.05; echo b"), on_output=on_output))
    assert (res.status, res.output) == ("success", "a\nb\n")


# --- output cap ---------------------------------------------------------------------------------


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def test_one_gigabyte_of_output_is_capped_with_bounded_memory() -> None:
    # On uvloop, the loop the server runs on. Memory: ru_maxrss is the peak of the whole test process,
    # which earlier tests may have set higher, so the current RSS is also sampled during the run.
    total = 1_000_000_000
    samples: list[int] = []
    count = 0

    def on_output(chunk: bytes) -> None:
        nonlocal count
        count += 1
        if count % 500 == 0:
            samples.append(_rss())

    base_rss, base_peak = _rss(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    t0 = time.monotonic()
    spec = sh(f"head -c {total} /dev/zero | tr '\\0' x; echo; echo the end")
    res = uvloop.run(runner.run(spec, on_output=on_output))
    elapsed = time.monotonic() - t0
    peak_growth = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base_peak
    sampled_growth = max(samples) - base_rss
    print(
        f"1 GB run: {elapsed:.2f}s, peak RSS growth {peak_growth / 1e6:.1f} MB, sampled {sampled_growth / 1e6:.1f} MB"
    )
    assert res.status == "success"
    assert res.bytes_total == total + len("\nthe end\n")
    assert res.output_truncated
    assert res.output.startswith("x" * runner.HEAD_BYTES + "\n[... ")
    assert res.output.endswith("x\nthe end\n")
    assert len(res.output) < runner.DEFAULT_OUTPUT_CAP + 100
    assert peak_growth < 50e6 and sampled_growth < 50e6
    # About 4 s alone on 2 cores (half of it the producer itself), 7 s with a second suite running
    # alongside: the bound is a guard against a hang or a collapse in throughput, not a benchmark.
    assert elapsed < 20


def test_cap_keeps_head_and_tail_with_marker(arun: Arun[RunResult]) -> None:
    script = f"{sys.executable} -c \"import sys; sys.stdout.write(''.join(f'{{i}}\\n' for i in range(100000)))\""
    full = "".join(f"{i}\n" for i in range(100000))
    res = arun(runner.run(sh(script, output_cap=1000)))
    assert res.status == "success"
    assert res.output_truncated and res.bytes_total == len(full)
    assert full[:500][-1] != "\n"  # so the marker gets its own line by an added newline
    assert res.output == full[:500] + f"\n[... {len(full) - 1000} bytes omitted ...]\n" + full[-500:]


def test_output_exactly_at_cap_is_not_truncated(arun: Arun[RunResult]) -> None:
    res = arun(runner.run(sh("printf '%s' " + "a" * 100, output_cap=100)))
    assert (res.output, res.output_truncated, res.bytes_total) == ("a" * 100, False, 100)


def test_capture_cuts_at_character_boundaries() -> None:
    cap = OutputCapture(11, head=5)  # 5 bytes of head, 6 of tail; "é" is 2 bytes
    for _ in range(10):
        cap.feed("é".encode())
    text = cap.text()
    assert "\ufffd" not in text
    assert text == "éé\n[... 10 bytes omitted ...]\nééé"  # 20 bytes, the last head byte was half an "é"


def test_capture_chunk_larger_than_cap_and_zero_cap() -> None:
    cap = OutputCapture(8, head=4)
    cap.feed(b"0123456789abcdef")
    assert cap.text() == "0123\n[... 8 bytes omitted ...]\ncdef"
    zero = OutputCapture(0)
    zero.feed(b"abc")
    assert (zero.text(), zero.truncated, zero.total) == ("[... 3 bytes omitted ...]\n", True, 3)


# --- crash-recovery helpers ---------------------------------------------------------------------


def _stubborn_group() -> tuple[subprocess.Popen[bytes], int]:
    """A process group whose leader waits on a child that ignores SIGTERM; returns it and the child's pid."""
    proc = subprocess.Popen(
        ["sh", "-c", STUBBORN_TREE], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, start_new_session=True
    )
    assert proc.stdout is not None
    lines = [proc.stdout.readline().decode(), proc.stdout.readline().decode()]
    [child] = pids_in("".join(lines), "child")
    return proc, child


def test_end_group_and_group_alive() -> None:
    proc, child = _stubborn_group()
    try:
        assert runner.group_alive(proc.pid)
        t0 = time.monotonic()
        asyncio.run(runner.end_group(proc.pid, 0.3))
        assert 0.25 <= time.monotonic() - t0 < 2.0
        # Still unreaped (a zombie of ours) and the child possibly a zombie too: not alive.
        assert not runner.group_alive(proc.pid)
        assert gone(child)
    finally:
        proc.kill()
        proc.wait()
    assert not runner.group_alive(proc.pid)
    asyncio.run(runner.end_group(proc.pid, 0.3))  # a gone group is fine
    with pytest.raises(ValueError):
        asyncio.run(runner.end_group(os.getpgrp(), 0.1))
    with pytest.raises(ValueError):
        runner.group_alive(0)


def test_boot_id() -> None:
    ident = runner.boot_id()
    assert ident and ident == runner.boot_id()
    with open("/proc/sys/kernel/random/boot_id") as f:
        assert ident.startswith(f.read().strip())


def test_resolve_stale_run_policy() -> None:
    proc, child = _stubborn_group()
    try:
        # Another boot (or container): the numbers mean nothing there, so nothing is signalled.
        reason = asyncio.run(runner.resolve_stale_run("some-other-boot", proc.pid, grace=0.2))
        assert reason.startswith("abandoned: the machine or container restarted")
        assert runner.group_alive(proc.pid)
        # Same boot, group alive: killed.
        reason = asyncio.run(runner.resolve_stale_run(runner.boot_id(), proc.pid, grace=0.2))
        assert reason == runner.KILLED_ON_RESTART == "killed on restart: server restarted while it ran"
        assert not runner.group_alive(proc.pid) and gone(child)
    finally:
        proc.kill()
        proc.wait()
    # Same boot, group gone: abandoned, outcome unknown.
    reason = asyncio.run(runner.resolve_stale_run(runner.boot_id(), proc.pid, grace=0.2))
    assert reason.startswith("abandoned: server restarted while it ran; its processes had ended")
    assert asyncio.run(runner.resolve_stale_run(runner.boot_id(), None)).startswith("abandoned")
    assert asyncio.run(runner.resolve_stale_run(runner.boot_id(), os.getpgrp())).startswith("abandoned")
