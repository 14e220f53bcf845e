"""Running the real ``git`` for the vault, off the event loop, and the index.lock policy.

How a command runs: ``subprocess.Popen`` in a worker thread (``asyncio.to_thread``), in a session
of its own, with a timeout after which its whole process group is killed (``git push`` runs
``git-remote-https`` and ``pack-objects`` as children). Not the loop's ``subprocess_exec``, for the
reason ``jobs/runner.py`` gives: uvloop forks the whole server on the loop thread there.

The token: :func:`auth_env` turns a GitHub token into an ``http.<origin>.extraHeader`` given to git
through ``GIT_CONFIG_COUNT``/``GIT_CONFIG_KEY_n``/``GIT_CONFIG_VALUE_n`` (git 2.31+), i.e. in the
environment of that one command: never on a command line (``ps`` shows those), never in
``.git/config``. Every text that leaves this module (errors, logs) has the token and the header
value replaced by ``***``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

log = logging.getLogger("lobwife.vault")

#: An index.lock no process holds is removed once it is this old (seconds); a younger one may be a
#: git that is just starting or ending, so it is waited for.
LOCK_STALE_AFTER = 60.0
#: How long a cycle waits for a held or young index.lock before it fails (seconds).
LOCK_WAIT = 10.0
#: Every git command's time limit (seconds); a push over a slow link is the long one.
GIT_TIMEOUT = 120.0

# Variables that would point git at another repository, or make it print what it sends.
_DROPPED = ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_CURL_VERBOSE", "GIT_TRACE_CURL", "GIT_TRACE_PACKET")


class GitError(Exception):
    """A git command failed (or could not run); the message is safe to log (secrets redacted)."""

    def __init__(self, message: str, *, rc: int | None = None, output: str = "") -> None:
        super().__init__(message)
        self.rc = rc
        self.output = output


@dataclass(frozen=True)
class GitOutput:
    rc: int
    stdout: str
    stderr: str

    @property
    def text(self) -> str:
        return (self.stdout + "\n" + self.stderr).strip()


class Secrets:
    """The strings that must never leave in a message: the token and the header value made of it."""

    def __init__(self) -> None:
        self._values: list[str] = []

    def add(self, value: str) -> None:
        if value and value not in self._values:
            self._values.append(value)
            self._values.sort(key=len, reverse=True)

    def clear(self) -> None:
        self._values.clear()

    def redact(self, text: str) -> str:
        for v in self._values:
            text = text.replace(v, "***")
        return text


def auth_env(remote_url: str, token: str, secrets: Secrets, base: Mapping[str, str]) -> dict[str, str]:
    """The environment entries that give git ``token`` for ``remote_url``'s origin only.

    GitHub takes a token as the password of HTTP basic auth with any user (``x-access-token``).
    """
    parts = urlsplit(remote_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return {}
    origin = f"{parts.scheme}://{parts.netloc.rsplit('@', 1)[-1]}/"
    basic = base64.b64encode(f"x-access-token:{token}".encode()).decode("ascii")
    secrets.add(token)
    secrets.add(basic)
    try:
        n = int(base.get("GIT_CONFIG_COUNT", "0"))
    except ValueError:
        n = 0
    return {
        "GIT_CONFIG_COUNT": str(n + 1),
        f"GIT_CONFIG_KEY_{n}": f"http.{origin}.extraHeader",
        f"GIT_CONFIG_VALUE_{n}": f"Authorization: Basic {basic}",
        # A trace asked for elsewhere must not carry the header (git redacts it when this is on).
        "GIT_TRACE_REDACT": "1",
    }


class Git:
    """``git`` in one work tree, with a fixed identity and no prompts."""

    def __init__(
        self,
        cwd: Path,
        *,
        author_name: str,
        author_email: str,
        secrets: Secrets,
        timeout: float = GIT_TIMEOUT,
    ) -> None:
        self.cwd = cwd
        self.secrets = secrets
        self.timeout = timeout
        env = {k: v for k, v in os.environ.items() if k not in _DROPPED}
        env.update(
            {
                # Messages in English: the push's "fetch first" is read to tell a race from a refusal.
                "LC_ALL": "C",
                "LANGUAGE": "C",
                "GIT_TERMINAL_PROMPT": "0",
                "GIT_EDITOR": "true",
                "GIT_SEQUENCE_EDITOR": "true",
                "GIT_MERGE_AUTOEDIT": "no",
                # The rebase of a pull makes commits too: the committer must be lobwife there as well.
                "GIT_AUTHOR_NAME": author_name,
                "GIT_AUTHOR_EMAIL": author_email,
                "GIT_COMMITTER_NAME": author_name,
                "GIT_COMMITTER_EMAIL": author_email,
            }
        )
        self.env = env

    async def run(
        self,
        *args: str,
        check: bool = True,
        extra_env: Mapping[str, str] | None = None,
        time_limit: float | None = None,
    ) -> GitOutput:
        argv = ["git", *args]
        env = dict(self.env)
        if extra_env:
            env.update(extra_env)
        limit = self.timeout if time_limit is None else time_limit
        log.debug("vault git %s", " ".join(argv[1:]), extra={"cwd": str(self.cwd)})
        started = time.monotonic()
        holder: list[subprocess.Popen[bytes]] = []
        try:
            rc, out, err, timed_out = await asyncio.to_thread(_run, argv, self.cwd, env, limit, holder)
        except asyncio.CancelledError:
            for proc in holder:  # the thread is still waiting on it: end the group so it returns
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGKILL)
            raise
        except OSError as e:
            raise GitError(f"git could not run: {e}") from None
        result = GitOutput(rc, self.secrets.redact(out), self.secrets.redact(err))
        what = args[0] if args else "git"
        if timed_out:
            raise GitError(f"git {what} took longer than {limit:.0f}s and was killed", rc=rc, output=result.text)
        if check and rc != 0:
            raise GitError(f"git {what} failed (exit {rc}): {tail(result.text)}", rc=rc, output=result.text)
        log.debug("vault git %s exit %d in %.3fs", what, rc, time.monotonic() - started)
        return result


def _run(
    argv: Sequence[str], cwd: Path, env: Mapping[str, str], timeout: float, holder: list[subprocess.Popen[bytes]]
) -> tuple[int, str, str, bool]:
    proc = subprocess.Popen(
        list(argv),
        cwd=cwd,
        env=dict(env),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
        close_fds=True,
    )
    holder.append(proc)
    timed_out = False
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
    return proc.returncode, out.decode("utf-8", "replace"), err.decode("utf-8", "replace"), timed_out


def tail(text: str, lines: int = 6, chars: int = 800) -> str:
    """The end of git's output, for a message: the last few lines, at most ``chars``."""
    kept = [ln for ln in text.strip().splitlines() if ln.strip()][-lines:]
    joined = " | ".join(kept)
    return joined[-chars:]


# --- index.lock ----------------------------------------------------------------------------------


def lock_holders(lock: Path, work_tree: Path, git_dir: Path) -> list[int] | None:
    """Pids that may own ``lock``: a process with it open, or a ``git`` whose cwd is in this repository.

    None when this cannot be known (no ``/proc``); then only the lock's age decides.
    """
    proc = Path("/proc")
    if not (proc / "self" / "fd").is_dir():
        return None
    me = os.getpid()
    target = str(lock)
    roots = (str(work_tree), str(git_dir))
    found: list[int] = []
    for entry in proc.iterdir():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            comm = (entry / "comm").read_text().strip()
        except OSError:
            continue
        if comm == "git" or comm.startswith("git-"):
            with contextlib.suppress(OSError):
                cwd = os.readlink(entry / "cwd")
                if any(cwd == r or cwd.startswith(r + os.sep) for r in roots):
                    found.append(int(entry.name))
                    continue
        with contextlib.suppress(OSError):
            for fd in (entry / "fd").iterdir():
                with contextlib.suppress(OSError):
                    if os.readlink(fd) == target:
                        found.append(int(entry.name))
                        break
    return found


async def clear_index_lock(
    work_tree: Path,
    git_dir: Path,
    *,
    stale_after: float = LOCK_STALE_AFTER,
    wait: float = LOCK_WAIT,
    poll: float = 0.1,
) -> None:
    """Returns once ``.git/index.lock`` is gone: removed if stale, else waited for (at most ``wait``).

    Stale means no process holds it and it is older than ``stale_after`` seconds: a git killed
    mid-command (a timeout, an OOM kill, a node restart) leaves one, and every later git that
    writes the index would fail on it forever. GitError when it is still there after ``wait``.
    """
    lock = git_dir / "index.lock"
    deadline = time.monotonic() + wait
    while True:
        try:
            st = os.lstat(lock)
        except FileNotFoundError:
            return
        age = time.time() - st.st_mtime
        holders = await asyncio.to_thread(lock_holders, lock, work_tree, git_dir)
        if not holders and age >= stale_after:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(lock)
            log.warning(
                "vault: removed a stale git index.lock",
                extra={"path": str(lock), "age_s": round(age, 1), "stale_after_s": stale_after},
            )
            return
        if time.monotonic() >= deadline:
            who = f"held by pid {', '.join(map(str, holders))}" if holders else "no process holds it"
            raise GitError(
                f"{lock} is in the way ({who}, {age:.0f}s old; one no process holds is removed "
                f"once {stale_after:.0f}s old); waited {wait:.0f}s"
            )
        await asyncio.sleep(poll)
