"""Job runner: one cron run = one subprocess in its own process group, supervised to the end.

The scheduler builds a :class:`RunSpec` and awaits :func:`run`; it gets a :class:`RunResult` back
and never an exception for a failing command (a missing or non-executable program is a result with
status ``error``, so the next slot still fires).

What a run guarantees
---------------------
* **Own process group.** The program starts in a new session (``setsid``), so its pid is also its
  process group id and every signal goes to the whole group (``killpg``): shell pipelines,
  ``&`` children and their children included.
* **Minimal environment.** A job sees ``PATH``, ``HOME``, ``LANG``, ``TZ`` and ``USER`` from the
  server (when set; ``PATH`` falls back to a standard one) and then ``RunSpec.env`` on top, where
  the scheduler puts ``LOBWIFE_URL``, ``LOBWIFE_JOB``, ``LOBWIFE_RUN_ID`` and
  ``LOBWIFE_SCHEDULED_AT`` (see :func:`job_env`), and with auth on a run's own
  ``LOBWIFE_TOKEN``. Nothing else leaks: the server's environment
  holds its own configuration and may hold secrets (GitHub App key, tokens), and a job's behaviour
  should not depend on how the server happened to be started. ``stdin`` is ``/dev/null``; the
  server's own descriptors are not inherited (``close_fds``).
* **Output** (stdout and stderr merged, in order) is read as it arrives, handed live to
  ``on_output`` and kept capped: the first :data:`HEAD_BYTES` and the last ``output_cap - HEAD_BYTES``
  bytes, with a ``[... N bytes omitted ...]`` line between. The pipe is always drained, so a job is
  never blocked on a full pipe, and the server's memory stays bounded by the cap whatever the job
  prints. ``bytes_total`` counts everything.
* **Timeout.** At ``timeout`` seconds the group gets SIGTERM; if anything of it is still there
  ``kill_grace`` seconds later, SIGKILL. A child that ignores SIGTERM and outlives its parent is
  therefore still ended.
* **A job's background children do not outlive the run.** When the main process exits, the rest of
  its group (``cmd &`` left behind, possibly still holding the output pipe) gets ``eof_grace``
  seconds to finish, then SIGKILL. A process that leaves the group on purpose (``setsid``,
  ``setpgid``) escapes this; only a cgroup could hold it.
* **Cancellation** of :func:`run` (server shutdown) ends the group too (SIGTERM, ``kill_grace``,
  SIGKILL) before ``CancelledError`` propagates, so shutdown leaves no orphan.

How a child is started and watched: ``subprocess.Popen`` (vfork, ``start_new_session``) in a
worker thread, then the loop watches two fds: a pidfd for the exit and the output pipe. Not the
loop's ``subprocess_exec``: uvloop forks the whole server on the loop thread there, ~7 ms a start
at the server's size (more as it grows), so jobs due together started one after another (see
bench/SCHEDULER.md). Not ``asyncio.create_subprocess_exec`` either: on Python 3.11
``Process.wait()`` returns only once the output pipe is closed as well, so a background child
holding stdout would hide the main process's exit; here the exit and the end of output are told
apart. Works on asyncio and uvloop.

The gate: no process without a record
-------------------------------------
What Popen starts is ``/bin/sh`` holding the job at a gate (:data:`GATE_SCRIPT`): it waits for one
line on a pipe whose write end only the server holds, then execs the job's command in place (same
pid, same process group, stdin back on /dev/null). The line is written only after ``on_start`` has
durably recorded the pid and group. A server killed before that closes the pipe, and the shell exits
without running anything; so a run recorded ``pending`` never ran its command, and a run whose
command ran is on record with the group to end. (Errors exec would give, such as command not found,
are found beforehand by :func:`_precheck`, so they are still reported as such.)

Crash recovery (the policy :func:`resolve_stale_run` implements)
----------------------------------------------------------------
When a run starts the scheduler records, durably and before waiting (``on_start``), its pid, its
process group and :func:`boot_id`. On server start every run still recorded as running belongs to a
server that died, and is resolved like this, always ending in status ``abandoned``:

1. Recorded boot id differs from the current one (the machine rebooted, or the container restarted
   into a new pid namespace): its processes died with it, and the recorded numbers may now name
   unrelated processes, so nothing is signalled.
2. Same boot id and the process group still alive: it is ended with :func:`end_group` (SIGTERM,
   grace, SIGKILL) and recorded with reason ``killed on restart: server restarted while it ran``.
   It is not adopted: the new server cannot re-attach to its output pipe or learn its exit code, so
   an adopted run would be an unobserved one, and its timeout would rest on nothing.
3. Same boot id and the group gone: it ended while no one watched; its outcome is unknown.

Left open: a pid number is reused only after the whole group is gone and the kernel's pid counter
wrapped around, so case 2 signalling a stranger needs both within the server's downtime.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import inspect
import io
import logging
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from subprocess import PIPE, STDOUT
from typing import Literal

log = logging.getLogger("lobwife.runner")

Status = Literal["success", "failed", "timeout", "error"]

#: Environment variables a job inherits from the server, when set. Everything else comes from RunSpec.env.
INHERITED_ENV = ("PATH", "HOME", "LANG", "TZ", "USER")
#: PATH for a job when the server has none.
DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"
#: How much of the start of the output is kept; the rest of the cap keeps its end.
HEAD_BYTES = 16 * 1024
DEFAULT_OUTPUT_CAP = 256 * 1024
DEFAULT_KILL_GRACE = 5.0
DEFAULT_EOF_GRACE = 1.0
#: After SIGKILL a process dies at once unless stuck in the kernel (uninterruptible I/O): wait this
#: long at most, then give up on it rather than hang the scheduler.
KILL_WAIT = 5.0

OnStart = Callable[[int, int], Awaitable[None] | None]
OnOutput = Callable[[bytes], None]


@dataclass(frozen=True)
class RunSpec:
    """What to run and within which limits.

    ``argv[0]`` is looked up on the job's ``PATH`` when it has no slash. An executable file without a
    ``#!`` line is an ``error`` (give scripts a ``#!`` line, or run them as ``["sh", "-c", ...]``).
    ``timeout`` None means no limit. ``eof_grace`` is how long the rest of the group may keep
    running (and holding the output pipe) after the main process exited, before it is killed.
    """

    argv: Sequence[str]
    cwd: Path | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    timeout: float | None = None
    kill_grace: float = DEFAULT_KILL_GRACE
    output_cap: int = DEFAULT_OUTPUT_CAP
    eof_grace: float = DEFAULT_EOF_GRACE

    def __post_init__(self) -> None:
        # Programmer errors, raised at once: the API layer validates what users send.
        if isinstance(self.argv, str | bytes) or not self.argv:
            raise ValueError("argv: a non-empty list of strings is required")
        if not all(isinstance(a, str) for a in self.argv):
            raise ValueError("argv: every element must be a string")
        object.__setattr__(self, "argv", tuple(self.argv))
        object.__setattr__(self, "env", dict(self.env))
        if self.timeout is not None and not self.timeout > 0:
            raise ValueError("timeout: must be positive, or None for no limit")
        if not self.kill_grace >= 0:
            raise ValueError("kill_grace: must be >= 0")
        if not self.eof_grace >= 0:
            raise ValueError("eof_grace: must be >= 0")
        if self.output_cap < 0:
            raise ValueError("output_cap: must be >= 0")


@dataclass(frozen=True)
class RunResult:
    """How a run ended.

    ``status``: ``success`` (exit 0), ``failed`` (non-zero exit, or killed by a signal it did not get
    from us), ``timeout`` (we ended it), ``error`` (it could not be started, or could not be reaped).
    ``exit_code`` is negative (``-signum``) when the process died of a signal. ``pid``/``pgid`` are None
    when nothing was started. ``duration`` is monotonic seconds; ``started_at``/``finished_at`` are UTC.
    """

    status: Status
    exit_code: int | None
    output: str
    output_truncated: bool
    bytes_total: int
    started_at: datetime
    finished_at: datetime
    duration: float
    pid: int | None
    pgid: int | None
    reason: str


# --- environment --------------------------------------------------------------------------------


def base_env() -> dict[str, str]:
    """The part of the server's environment a job inherits (see the module docstring)."""
    env = {k: os.environ[k] for k in INHERITED_ENV if k in os.environ}
    env.setdefault("PATH", DEFAULT_PATH)
    return env


def build_env(overrides: Mapping[str, str]) -> dict[str, str]:
    env = base_env()
    env.update(overrides)
    return env


def rfc3339(when: datetime) -> str:
    """``2024-05-01T12:00:00Z`` (fraction only when non-zero); the time must carry its zone."""
    if when.tzinfo is None:
        raise ValueError("a time without a zone is ambiguous")
    return when.astimezone(UTC).isoformat().replace("+00:00", "Z")


def job_env(*, url: str, job: str, run_id: str | int, scheduled_at: datetime) -> dict[str, str]:
    """The LOBWIFE_* variables a run gets; pass them (plus the job's own) as ``RunSpec.env``."""
    return {
        "LOBWIFE_URL": url,
        "LOBWIFE_JOB": job,
        "LOBWIFE_RUN_ID": str(run_id),
        "LOBWIFE_SCHEDULED_AT": rfc3339(scheduled_at),
    }


# --- output -------------------------------------------------------------------------------------


class OutputCapture:
    """Keeps the first and the last bytes of a stream, within ``cap`` bytes (plus one chunk in flight)."""

    def __init__(self, cap: int, head: int = HEAD_BYTES) -> None:
        self.cap = cap
        self._head_cap = min(head, cap // 2)
        self._tail_cap = cap - self._head_cap
        self._head = bytearray()
        # Deleting from the front of a bytearray only moves its start, so this works as a ring.
        self._tail = bytearray()
        self.total = 0

    def feed(self, data: bytes) -> None:
        n = len(data)
        self.total += n
        room = self._head_cap - len(self._head)
        if room > 0:
            self._head += data[:room]
            if n <= room:
                return
            data = data[room:]
        if len(data) >= self._tail_cap:
            self._tail[:] = data[len(data) - self._tail_cap :]
            return
        self._tail += data
        excess = len(self._tail) - self._tail_cap
        if excess > 0:
            del self._tail[:excess]

    @property
    def truncated(self) -> bool:
        return self.total > len(self._head) + len(self._tail)

    def text(self) -> str:
        if not self.truncated:
            return (bytes(self._head) + bytes(self._tail)).decode("utf-8", errors="replace")
        # Cut at character boundaries rather than show U+FFFD for a character split by the cap.
        head = bytes(self._head[: _complete_utf8_prefix(self._head)])
        tail = bytes(self._tail[_utf8_continuations(self._tail) :])
        omitted = self.total - len(head) - len(tail)
        text = head.decode("utf-8", errors="replace")
        if text and not text.endswith("\n"):
            text += "\n"
        return text + f"[... {omitted} bytes omitted ...]\n" + tail.decode("utf-8", errors="replace")


def _complete_utf8_prefix(b: bytearray) -> int:
    """Length of ``b`` without a multi-byte character cut off at its end."""
    n = len(b)
    for back in range(1, min(4, n) + 1):
        c = b[n - back]
        if c & 0xC0 == 0x80:  # continuation byte: keep looking for the lead byte
            continue
        need = 2 if c >> 5 == 0b110 else 3 if c >> 4 == 0b1110 else 4 if c >> 3 == 0b11110 else 1
        return n if back >= need else n - back
    return n


def _utf8_continuations(b: bytearray) -> int:
    """Number of continuation bytes (the rest of a cut character) at the start of ``b``, at most 3."""
    i = 0
    while i < min(3, len(b)) and b[i] & 0xC0 == 0x80:
        i += 1
    return i


# --- process groups -----------------------------------------------------------------------------


def boot_id() -> str:
    """Identity of the pid space the recorded pids live in; "" when unknown.

    The kernel's boot id, plus the pid namespace when readable: a container that restarts keeps the
    node's boot id but gets a fresh pid namespace, in which the old numbers mean nothing.
    """
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            ident = f.read().strip()
    except OSError:
        return ""
    with contextlib.suppress(OSError):
        ident += "/" + os.readlink("/proc/self/ns/pid")
    return ident


def group_alive(pgid: int) -> bool:
    """Whether process group ``pgid`` still has a live (non-zombie) member."""
    if pgid <= 0:
        raise ValueError(f"pgid: must be positive, got {pgid}")
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by someone else
    # kill() succeeds on zombies, and dead members of a group stay zombies until reaped; an orphan is
    # reaped by pid 1, which in a container may never do it. Ask /proc whether anyone is really alive.
    members = _group_states(pgid)
    return members is None or any(state not in "ZX" for state in members)


def _group_states(pgid: int) -> list[str] | None:
    """Process states of the members of ``pgid`` per /proc, or None without a readable /proc."""
    try:
        entries = os.listdir("/proc")
    except OSError:
        return None
    states = []
    for name in entries:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                stat = f.read()
        except OSError:  # exited meanwhile
            continue
        # "pid (comm) state ppid pgrp ...": comm may hold spaces and parentheses, so split after the last ')'.
        fields = stat[stat.rfind(b")") + 2 :].split()
        if len(fields) > 2 and int(fields[2]) == pgid:
            states.append(fields[0].decode())
    return states


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    _check_foreign(pgid)
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass
    except PermissionError:
        log.warning("not allowed to signal process group %d", pgid)


def _check_foreign(pgid: int) -> None:
    # A bad record must never make us signal init's group or our own.
    if pgid <= 1 or pgid == os.getpgrp():
        raise ValueError(f"pgid: refusing to signal process group {pgid}")


async def _until_gone(pgid: int, within: float) -> bool:
    """Polls until group ``pgid`` has no live member; False if it still has one after ``within`` seconds."""
    deadline = time.monotonic() + within
    delay = 0.01
    while group_alive(pgid):
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        await asyncio.sleep(min(delay, left))
        delay = min(delay * 2, 0.1)
    return True


async def end_group(pgid: int, grace: float) -> None:
    """SIGTERM to group ``pgid``, up to ``grace`` seconds for it to go, then SIGKILL.

    Returns once the group is gone, or :data:`KILL_WAIT` seconds after SIGKILL at the latest.
    """
    _check_foreign(pgid)
    if not group_alive(pgid):
        return
    _signal_group(pgid, signal.SIGTERM)
    if await _until_gone(pgid, grace):
        return
    _signal_group(pgid, signal.SIGKILL)
    if not await _until_gone(pgid, KILL_WAIT):
        log.warning("process group %d still alive %.1fs after SIGKILL", pgid, KILL_WAIT)


KILLED_ON_RESTART = "killed on restart: server restarted while it ran"


async def resolve_stale_run(recorded_boot_id: str, pgid: int | None, *, grace: float = DEFAULT_KILL_GRACE) -> str:
    """Deals with a run a dead server left marked running; returns the reason to record with ``abandoned``.

    Deterministic, per the policy in the module docstring.
    """
    current = boot_id()
    if not recorded_boot_id or not current or recorded_boot_id != current:
        return "abandoned: the machine or container restarted while it ran; its processes ended with it"
    if pgid is None:
        return "abandoned: the server stopped before the run's process was recorded"
    if pgid <= 1 or pgid == os.getpgrp():
        return f"abandoned: recorded process group {pgid} is not the run's"
    if group_alive(pgid):
        await end_group(pgid, grace)
        return KILLED_ON_RESTART
    return "abandoned: server restarted while it ran; its processes had ended, outcome unknown"


# --- running ------------------------------------------------------------------------------------


class _RunProtocol:
    """What a run learns of its child: output as it comes, the end of the output, the exit."""

    def __init__(self, loop: asyncio.AbstractEventLoop, capture: OutputCapture, on_output: OnOutput | None) -> None:
        self.capture = capture
        self.on_output = on_output
        self.exited: asyncio.Future[None] = loop.create_future()
        self.eof: asyncio.Future[None] = loop.create_future()

    def pipe_data_received(self, fd: int, data: bytes) -> None:
        self.capture.feed(data)
        if self.on_output is not None:
            try:
                self.on_output(data)
            except Exception:
                # A broken live viewer must not break the run; the capture still has everything.
                log.exception("on_output failed; live output for this run stops")
                self.on_output = None

    def pipe_connection_lost(self, fd: int, exc: Exception | None) -> None:
        if fd == 1 and not self.eof.done():
            self.eof.set_result(None)

    def process_exited(self) -> None:
        if not self.exited.done():
            self.exited.set_result(None)


class _Child:
    """A child started off the event loop, watched on it: its exit through a pidfd, its output
    through its read pipe. Offers what run() needs of a subprocess transport.

    The loop only watches the two fds (add_reader); this object owns them and closes each once,
    after unregistering it. Handing the pipe to connect_read_pipe instead would give it two
    owners (the transport and the Popen file object): harmless while every fd is made on the loop
    thread, but with Popen in worker threads a late second close() can hit a fd number another
    spawn has just been given."""

    _READ_SIZE = 65536

    def __init__(self, loop: asyncio.AbstractEventLoop, proc: subprocess.Popen[bytes], proto: _RunProtocol) -> None:
        self._loop = loop
        self._proc = proc
        self._proto = proto
        self._returncode: int | None = None
        self._pidfd: int | None = None
        assert proc.stdout is not None
        self._out: io.BufferedReader | None = proc.stdout  # type: ignore[assignment]

    def start(self) -> None:
        assert self._out is not None
        fd = self._out.fileno()
        os.set_blocking(fd, False)
        self._loop.add_reader(fd, self._readable)
        try:
            self._pidfd = os.pidfd_open(self._proc.pid)
        except (AttributeError, OSError):  # no pidfd (old kernel): a thread waits instead
            threading.Thread(target=self._wait_in_thread, name=f"run-wait-{self._proc.pid}", daemon=True).start()
        else:
            self._loop.add_reader(self._pidfd, self._exited)

    def _readable(self) -> None:
        if self._out is None:
            return
        try:
            data = os.read(self._out.fileno(), self._READ_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._close_out()
            self._proto.pipe_connection_lost(1, exc)
            return
        if data:
            self._proto.pipe_data_received(1, data)
        else:  # EOF: every holder of the write end (the child and its group) has closed it
            self._close_out()
            self._proto.pipe_connection_lost(1, None)

    def _close_out(self) -> None:
        if self._out is not None:
            self._loop.remove_reader(self._out.fileno())
            self._out.close()
            self._out = None

    def _wait_in_thread(self) -> None:
        code = self._proc.wait()
        with contextlib.suppress(RuntimeError):  # loop closed: nobody is waiting
            self._loop.call_soon_threadsafe(self._set_exited, code)

    def _exited(self) -> None:
        self._close_pidfd()
        self._set_exited(self._proc.wait())  # readable pidfd: the child has exited; this reaps it at once

    def _set_exited(self, code: int) -> None:
        if self._returncode is None:
            self._returncode = code
            self._proto.process_exited()

    def _close_pidfd(self) -> None:
        if self._pidfd is not None:
            self._loop.remove_reader(self._pidfd)
            os.close(self._pidfd)
            self._pidfd = None

    def get_pid(self) -> int:
        return self._proc.pid

    def get_returncode(self) -> int | None:
        return self._returncode

    def close(self) -> None:
        if self._returncode is None and self._proc.poll() is not None:
            self._returncode = self._proc.returncode
        if self._returncode is None:
            # Not seen to exit (it was SIGKILLed just now): reap it when it goes, so no zombie stays.
            threading.Thread(target=self._proc.wait, name=f"run-reap-{self._proc.pid}", daemon=True).start()
        self._close_pidfd()
        if self._out is not None:
            self._close_out()
            self._proto.pipe_connection_lost(1, None)


#: The gate a child waits at before its command: ``sh`` reads one line from its stdin (a pipe whose
#: write end only the server holds), then execs the command in place (same pid, same group) with
#: stdin back on /dev/null. EOF instead of the line (the server died, or gave up on the start)
#: makes it exit 125 without running anything.
GATE_SCRIPT = 'read -r _ || exit 125; exec </dev/null; exec "$@"'
#: sh exports PWD on its own; the job's environment is exactly what build_env made.
GATE_SCRIPT_NO_PWD = "unset PWD; " + GATE_SCRIPT
GATE_SHELL = "/bin/sh"
#: The reason recorded for a run that a dead server left pending: the gate guarantees its command never ran.
NEVER_STARTED = "lobwife stopped before the run started; its command did not run"


def _precheck(spec: RunSpec, env: Mapping[str, str]) -> None:
    """Raises the error exec would give, since the gate shell (not the command) is what Popen starts.

    The same checks execvp makes, in the same order: working directory, lookup on the job's
    PATH, execute permission, and a format the kernel runs (an ELF or a ``#!`` script; without
    this check the gate shell would run a file with neither as a shell script).
    """
    if spec.cwd is not None and not spec.cwd.is_dir():
        raise FileNotFoundError(errno.ENOENT, "working directory not found", str(spec.cwd))
    prog = spec.argv[0]
    if "/" in prog:
        path: str | None = os.path.join(str(spec.cwd) if spec.cwd is not None else os.getcwd(), prog)
        assert path is not None
        if not os.path.exists(path):
            raise FileNotFoundError(errno.ENOENT, "not found", prog)
    else:
        path = shutil.which(prog, mode=os.F_OK, path=env.get("PATH", DEFAULT_PATH))
        if path is None:
            raise FileNotFoundError(errno.ENOENT, "not found", prog)
        path = shutil.which(prog, mode=os.F_OK | os.X_OK, path=env.get("PATH", DEFAULT_PATH)) or path
    if os.path.isdir(path) or not os.access(path, os.X_OK):
        raise PermissionError(errno.EACCES, "permission denied", prog)
    try:
        with open(path, "rb") as f:
            magic = f.read(4)
    except OSError:
        return  # executable but not readable: exec may still run it
    if magic[:2] != b"#!" and magic != b"\x7fELF":
        raise OSError(errno.ENOEXEC, "exec format error", prog)


async def _spawn(
    loop: asyncio.AbstractEventLoop, proto: _RunProtocol, spec: RunSpec, env: dict[str, str]
) -> tuple[_Child, int]:
    """Start the child off the event loop, held at the gate; returns it and the gate's write end.

    uvloop's subprocess_exec forks the whole server on the loop thread: about 7 ms per start at
    100 MB RSS, growing with RSS, so simultaneous jobs started one after another. subprocess.Popen
    uses vfork (no copy of the parent's memory) and runs in a worker thread here.

    The gate closes the window between a process starting and its pid being on record: until
    the caller writes the line (after recording the pid), the command has not run, so a server
    killed in that window leaves no unsupervised job behind.
    """
    gate_r, gate_w = os.pipe()  # both close-on-exec; Popen dups gate_r onto the child's stdin

    def start() -> subprocess.Popen[bytes]:
        # One worker-thread hop for the check and the start: when a herd of jobs is due together
        # the default pool's few threads are the queue every start waits in.
        _precheck(spec, env)
        return subprocess.Popen(
            [GATE_SHELL, "-c", GATE_SCRIPT if "PWD" in env else GATE_SCRIPT_NO_PWD, "lobwife-gate", *spec.argv],
            stdin=gate_r,
            stdout=PIPE,
            stderr=STDOUT,
            cwd=spec.cwd,
            env=env,
            start_new_session=True,
            close_fds=True,
        )

    popen = asyncio.ensure_future(asyncio.to_thread(start))
    try:
        # Shielded: a cancel (shutdown) while Popen runs must not lose the child it starts.
        proc = await asyncio.shield(popen)
    except asyncio.CancelledError:
        os.close(gate_w)
        with contextlib.suppress(Exception):
            _abandon(await popen)
        raise
    except BaseException:
        os.close(gate_w)
        raise
    finally:
        with contextlib.suppress(Exception):
            await popen  # the worker thread is done with gate_r only once Popen returned
        os.close(gate_r)
    child = _Child(loop, proc, proto)
    try:
        child.start()
    except BaseException:
        os.close(gate_w)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        child.close()  # closes its fds and reaps the child once it has gone
        raise
    return child, gate_w


def _open_gate(gate_w: int) -> None:
    try:
        os.write(gate_w, b"go\n")
    except OSError:
        pass  # the child is gone already (killed): its exit is seen as usual
    finally:
        os.close(gate_w)


def _abandon(proc: subprocess.Popen[bytes]) -> None:
    """Ends a child nobody will run to the end, and reaps it off the loop."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    if proc.stdout is not None:
        proc.stdout.close()
    threading.Thread(target=proc.wait, name=f"run-reap-{proc.pid}", daemon=True).start()


async def _settled(proto: _RunProtocol, pgid: int, within: float) -> bool:
    """Waits up to ``within`` seconds for the main process to exit, the pipe to close and the group to go."""
    deadline = time.monotonic() + within
    pending = [f for f in (proto.exited, proto.eof) if not f.done()]
    if pending:
        # asyncio.wait does not cancel the futures when it times out.
        await asyncio.wait(pending, timeout=within)
        if not all(f.done() for f in pending):
            return False
    return await _until_gone(pgid, max(0.0, deadline - time.monotonic()))


async def _stop(proto: _RunProtocol, pgid: int, grace: float) -> bool:
    """SIGTERM, grace, SIGKILL; True if SIGKILL was needed."""
    _signal_group(pgid, signal.SIGTERM)
    if await _settled(proto, pgid, grace):
        return False
    _signal_group(pgid, signal.SIGKILL)
    return True


def _start_error(spec: RunSpec, exc: OSError | ValueError) -> str:
    prog = spec.argv[0]
    if spec.cwd is not None and not spec.cwd.is_dir():
        # Checked after the fact: the error does not always say whether exec or chdir failed.
        return f"working directory not found: {spec.cwd}"
    if isinstance(exc, FileNotFoundError):
        return f"command not found: {prog}"
    if isinstance(exc, PermissionError):
        return f"permission denied (not executable?): {prog}"
    if isinstance(exc, OSError) and exc.errno == errno.ENOEXEC:
        return f"not an executable format (a script needs a #! line): {prog}"
    if isinstance(exc, OSError):
        return f"could not start {prog}: {exc.strerror or exc}"
    return f"could not start {prog}: {exc}"


def _check_exec_strings(argv: Sequence[str], env: Mapping[str, str]) -> None:
    # asyncio refuses a NUL byte but uvloop silently cuts the string there: refuse it on both.
    for i, arg in enumerate(argv):
        if "\0" in arg:
            raise ValueError(f"argv[{i}] contains a NUL byte")
    for key, value in env.items():
        if not key or "=" in key or "\0" in key or "\0" in value:
            raise ValueError(f"environment variable {key!r}: invalid name or value")


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "exit status unknown"
    if code >= 0:
        return f"exited with code {code}"
    try:
        return f"killed by {signal.Signals(-code).name}"
    except ValueError:
        return f"killed by signal {-code}"


def _secs(x: float) -> str:
    return f"{float(x)}s"


async def run(spec: RunSpec, *, on_start: OnStart | None = None, on_output: OnOutput | None = None) -> RunResult:
    """Runs ``spec`` to the end, and its whole process group with it.

    ``on_start(pid, pgid)`` is called (and awaited, if it returns an awaitable) as soon as the process
    exists: record them durably there. If it raises, the group is ended and the exception propagates,
    since an unrecorded run must not go on. ``on_output(chunk)`` gets each chunk of output as read; it
    runs on the event loop, so it must be quick (e.g. put into a bounded queue); it is not capped.
    """
    loop = asyncio.get_running_loop()
    proto = _RunProtocol(loop, OutputCapture(spec.output_cap), on_output)
    started_at = datetime.now(UTC)
    t0 = time.monotonic()
    env = build_env(spec.env)
    try:
        _check_exec_strings(spec.argv, env)
        transport, gate = await _spawn(loop, proto, spec, env)
    except (OSError, ValueError) as exc:  # ValueError: e.g. a NUL byte in argv or env
        return RunResult(
            status="error",
            exit_code=None,
            output="",
            output_truncated=False,
            bytes_total=0,
            started_at=started_at,
            finished_at=datetime.now(UTC),
            duration=time.monotonic() - t0,
            pid=None,
            pgid=None,
            reason=_start_error(spec, exc),
        )
    pid = transport.get_pid()
    pgid = pid  # start_new_session: the child called setsid(), so it leads its own group
    timed_out = False
    notes: list[str] = []
    try:
        try:
            try:
                if on_start is not None:
                    pending_start = on_start(pid, pgid)
                    if inspect.isawaitable(pending_start):
                        await pending_start
            except BaseException:
                os.close(gate)  # EOF at the gate: the child exits 125 and the command never runs
                raise
            _open_gate(gate)
            remaining = None if spec.timeout is None else max(0.0, spec.timeout - (time.monotonic() - t0))
            await asyncio.wait([proto.exited], timeout=remaining)
            if not proto.exited.done():
                timed_out = True
                killed = await _stop(proto, pgid, spec.kill_grace)
                notes.append(
                    f"timed out after {_secs(spec.timeout or 0)}; "
                    + (f"SIGKILL after {_secs(spec.kill_grace)} grace" if killed else "ended by SIGTERM")
                )
            elif not await _settled(proto, pgid, spec.eof_grace):
                _signal_group(pgid, signal.SIGKILL)
                notes.append(
                    f"background processes still running {_secs(spec.eof_grace)} after the main process exited "
                    "were killed"
                )
        except BaseException:
            # Cancelled (server shutdown) or on_start failed: end the group before letting go. Cancelled
            # again meanwhile, the finally below still sends SIGKILL.
            if await _stop(proto, pgid, spec.kill_grace):
                await _settled(proto, pgid, KILL_WAIT)
            raise
        # A signal is delivered asynchronously: return only once the group is really gone, so the run's
        # processes never outlive run(). After SIGKILL only a process stuck in the kernel (uninterruptible
        # I/O) can still be there; do not wait forever for it.
        if not await _settled(proto, pgid, KILL_WAIT):
            notes.append(f"process group {pgid} did not end within {_secs(KILL_WAIT)} of SIGKILL")
    finally:
        if group_alive(pgid):
            _signal_group(pgid, signal.SIGKILL)
        transport.close()

    code = transport.get_returncode()
    status: Status
    if timed_out:
        status = "timeout"
    elif code is None:
        status = "error"
    elif code == 0:
        status = "success"
    else:
        status = "failed"
    if not timed_out:  # a timeout's reason says how it ended; the exit code is recorded anyway
        notes.insert(0, _describe_exit(code))
    capture = proto.capture
    return RunResult(
        status=status,
        exit_code=code,
        output=capture.text(),
        output_truncated=capture.truncated,
        bytes_total=capture.total,
        started_at=started_at,
        finished_at=datetime.now(UTC),
        duration=time.monotonic() - t0,
        pid=pid,
        pgid=pgid,
        reason="; ".join(notes),
    )
