"""One sync cycle: tasks in, files written (or moved), one commit, pull --rebase, push.

The order of a cycle (:meth:`VaultSync.sync`), and why:

1. Checks: the vault is the top of a git work tree on a branch; a rebase or merge a crash left is
   aborted; the index.lock policy (``git.clear_index_lock``); temporary files a crash left are removed.
2. ``git pull --rebase`` first, so that each file is rendered onto the latest version people pushed
   (our edit is then a child of theirs and cannot conflict with it). A conflict here (a commit of an
   earlier cycle that never got pushed) is aborted and fails the cycle before anything is written.
3. Plan (worker thread): read each task's file, merge the owned keys, decide moves. A file whose
   frontmatter does not parse, or on a path through a symlink, is skipped and reported; so is a
   ``T<n>.md`` that is another task's (``render.other_task``), and task T<n>'s file waits until it is gone.
4. Apply: ``git mv`` to the new folder, then whole-file writes (temporary file + rename).
5. One commit, only when ``git add -A -- 010-tasks`` staged something.
6. Push; a push the remote refuses because it moved on (someone pushed meanwhile) is followed by
   ``git pull --rebase`` and another push, :data:`PUSH_ATTEMPTS` times in all. A rebase that
   conflicts is aborted (``git rebase --abort``, and no ``rebase-merge``/``rebase-apply`` may remain)
   before the next attempt; after the last one the cycle fails saying which files conflicted.

A push that fails for good (the remote refuses it, the network is down, conflicts) keeps the local
commit: the vault's files are exactly that commit, and the next cycle pushes it with its own. Nothing
is ever force-pushed or reset, so a person's commit is never lost; a conflict stays until a person
settles the file on the remote, and each cycle says so until then.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import time
from collections.abc import Awaitable, Callable, Container, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from google.protobuf import timestamp_pb2

from lobwife.v1 import tasks_pb2
from lobwife_server.vault import files, render
from lobwife_server.vault.git import (
    GIT_TIMEOUT,
    LOCK_STALE_AFTER,
    LOCK_WAIT,
    Git,
    GitError,
    Secrets,
    auth_env,
    clear_index_lock,
    tail,
)
from lobwife_server.vault.render import FOLDERS, TASKS_DIR, FrontmatterError, TablePage

log = logging.getLogger("lobwife.vault")

#: Pushes per cycle (each after the first preceded by a pull --rebase).
PUSH_ATTEMPTS = 3
#: Seconds before the second attempt; the third waits twice as long.
RETRY_BACKOFF = 0.5
#: The overview's entry cache on disk, in the vault's git directory (so never committed or pushed):
#: a restarted server's first ordinary cycle would otherwise read and parse every task file again.
#: Only a cache: each entry is used only while its file has the same stamp, and a missing or
#: unreadable one is rebuilt from the files.
ENTRY_CACHE = "lobwife-overview-cache.json"
_ENTRY_CACHE_VERSION = 1

TokenProvider = Callable[[], Awaitable[str | None]]
#: A file's (mtime_ns, size, inode): the entry cache's key (a write renames a new file in, so a new inode).
Stamp = tuple[int, int, int]
#: Told the token a remote refused, so that the next cycle asks for another (the broker drops it
#: from its cache: GitHub may revoke a token before the expiry the cache goes by).
TokenRefused = Callable[[str], None]
#: What git says when an http(s) remote refused the credentials it was given (401: the token is not
#: taken at all). A 403 is not here: the token lacks a permission or the repository, it is alive, and
#: another one from the same broker would be refused the same way.
_AUTH_REFUSED = re.compile(
    r"could not read Username|Authentication failed|returned error: 401|HTTP 401|Invalid username or password",
    re.IGNORECASE,
)


class VaultError(Exception):
    """A cycle cannot go on; the message says why (and is safe to log)."""


@dataclass
class Skipped:
    path: str
    reason: str


@dataclass
class SyncResult:
    """What one cycle did. ``error`` is None when it succeeded; skips alone do not fail a cycle."""

    written: list[str] = field(default_factory=list)
    moved: list[tuple[str, str]] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    commit: str | None = None
    pushed: bool = False
    attempts: int = 0
    error: str | None = None
    duration_s: float = 0.0

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def changed(self) -> bool:
        return bool(self.written or self.moved or self.removed)


@dataclass
class _Plan:
    moves: list[tuple[str, str]] = field(default_factory=list)
    writes: dict[str, str] = field(default_factory=dict)  # path -> new text (after the moves)
    removes: list[str] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    # Each task file this cycle leaves holding exactly its task's owned values (written, or read and
    # found up to date): its overview entry is the task's, and goes into the entry cache without a read.
    entries: dict[str, render.OverviewEntry] = field(default_factory=dict)
    # The (mtime_ns, size, inode) of each such file that is not rewritten, taken before it was read.
    stamps: dict[str, Stamp] = field(default_factory=dict)


class VaultSync:
    """Writes tasks into one vault (a git clone) and pushes them. One cycle at a time.

    ``token`` is called once per cycle whose remote is http(s) and returns a GitHub token (or None
    to push without one); it is handed to git as described in :mod:`lobwife_server.vault.git`.
    ``remote=None`` keeps the vault local (commit only).
    """

    def __init__(
        self,
        path: str | Path,
        *,
        author_name: str = "lobwife",
        author_email: str = "lobwife@localhost",
        remote: str | None = "origin",
        token: TokenProvider | None = None,
        token_refused: TokenRefused | None = None,
        push_attempts: int = PUSH_ATTEMPTS,
        retry_backoff: float = RETRY_BACKOFF,
        lock_stale_after: float = LOCK_STALE_AFTER,
        lock_wait: float = LOCK_WAIT,
        git_timeout: float = GIT_TIMEOUT,
        recent_completions: int = render.RECENT_COMPLETIONS,
    ) -> None:
        if push_attempts < 1:
            raise ValueError("push_attempts must be at least 1")
        self.root = Path(path).expanduser().resolve()
        self.remote = remote
        self.token = token
        self.token_refused = token_refused
        self._cycle_token: str | None = None  # the token this cycle gave git, if any
        self.push_attempts = push_attempts
        self.retry_backoff = retry_backoff
        self.lock_stale_after = lock_stale_after
        self.lock_wait = lock_wait
        self.recent_completions = recent_completions
        self._secrets = Secrets()
        self.git = Git(
            self.root, author_name=author_name, author_email=author_email, secrets=self._secrets, timeout=git_timeout
        )
        self._lock = asyncio.Lock()
        self._git_dir: Path | None = None
        # The incremental overview counts every task file; a file's entry is read again only when
        # its (mtime_ns, size, inode) changes, so an idle cycle costs a stat per file.
        self._entries: dict[str, tuple[Stamp, render.OverviewEntry | None]] = {}
        self._entries_loaded = False  # from ENTRY_CACHE, once, by the first ordinary cycle
        self._entries_dirty = False  # changed since it was last saved to ENTRY_CACHE
        # Tasks whose file is not written because another task's T<n>.md is where it would be
        # (render.other_task): planned again in every cycle, so the task's own file is written by the
        # first one after a person moves the other away, even when the task itself has not changed.
        self._held: dict[int, tasks_pb2.Task] = {}

    # --- the cycle ------------------------------------------------------------------------------

    async def sync(
        self,
        tasks: Iterable[tasks_pb2.Task],
        *,
        full: bool = False,
        pages: Sequence[TablePage] = (),
        known: Container[int] | None = None,
    ) -> SyncResult:
        """One cycle for ``tasks`` (the changed ones; with ``full``, all of them).

        ``full`` also reports (and keeps) task files of tasks not in ``tasks`` and takes the overview's counts
        from ``tasks``; otherwise the overview is counted from the vault's files, as updated, and only
        from the files of the task numbers in ``known`` (the tasks lobwife has), so that a file of a
        task lobwife does not have counts in neither kind of cycle. ``known=None``: every task file counts.
        Never raises for a vault problem: the result's ``error`` says what went wrong.
        """
        result = SyncResult()
        started = time.monotonic()
        task_list = list(tasks)
        async with self._lock:
            try:
                await self._cycle(task_list, full, pages, known, result)
            except (VaultError, GitError, files.UnsafePath) as e:
                result.error = self._secrets.redact(self._refused(str(e)))
            except OSError as e:
                # A full disk, a read-only mount: files already renamed into place are whole, and
                # uncommitted; the next cycle's `git add -A` commits them.
                result.error = self._secrets.redact(f"writing the vault failed: {e}")
            finally:
                self._secrets.clear()
                self._cycle_token = None
            result.duration_s = round(time.monotonic() - started, 3)
        self._log(result)
        return result

    async def _cycle(
        self,
        tasks: list[tasks_pb2.Task],
        full: bool,
        pages: Sequence[TablePage],
        known: Container[int] | None,
        result: SyncResult,
    ) -> None:
        branch, git_dir = await self._check_repo()
        await self._recover(git_dir)
        net_env = await self._net_env()
        tracking = await self._pull(branch, net_env, fail_on_conflict=True) if self.remote else None
        plan = await asyncio.to_thread(self._plan, tasks, full, pages, known)
        result.skipped.extend(plan.skipped)
        await self._apply(plan, result)
        await asyncio.to_thread(self._remember, plan, full)
        result.commit = await self._commit(result)
        if self.remote and await self._ahead(tracking):
            await self._push(branch, net_env, result)

    async def check(self) -> None:
        """Raises VaultError when the vault path is not a usable git work tree (for start-up checks)."""
        await self._check_repo()

    async def _check_repo(self) -> tuple[str, Path]:
        if not self.root.is_dir():
            raise VaultError(f"vault path {self.root} does not exist or is not a directory")
        top = await self.git.run("rev-parse", "--show-toplevel", check=False)
        if top.rc != 0:
            raise VaultError(f"vault path {self.root} is not a git work tree ({tail(top.stderr, 1)})")
        # git prints the top with symlinks resolved, as self.root is.
        if top.stdout.strip() != str(self.root):
            raise VaultError(f"vault path {self.root} is inside the git work tree {top.stdout.strip()}, not its top")
        git_dir = Path((await self.git.run("rev-parse", "--absolute-git-dir")).stdout.strip())
        head = await self.git.run("symbolic-ref", "--short", "-q", "HEAD", check=False)
        if head.rc != 0 or not head.stdout.strip():
            raise VaultError(f"vault {self.root} is not on a branch (detached HEAD)")
        if self.remote:
            url = await self.git.run("remote", "get-url", self.remote, check=False)
            if url.rc != 0:
                raise VaultError(f"vault {self.root} has no remote named {self.remote!r}")
        self._git_dir = git_dir
        return head.stdout.strip(), git_dir

    async def _recover(self, git_dir: Path) -> None:
        await clear_index_lock(self.root, git_dir, stale_after=self.lock_stale_after, wait=self.lock_wait)
        if _mid_rebase(git_dir):
            log.warning("vault: aborting a rebase an earlier run left", extra={"vault": str(self.root)})
            await self._abort_rebase(git_dir)
        if (git_dir / "MERGE_HEAD").exists():
            log.warning("vault: aborting a merge an earlier run left", extra={"vault": str(self.root)})
            await self.git.run("merge", "--abort")
        leftovers = await asyncio.to_thread(
            files.remove_temp_files, self.root, [TASKS_DIR, *(f"{TASKS_DIR}/{f}" for f in FOLDERS)]
        )
        if leftovers:
            log.info("vault: removed temporary files a crash left", extra={"files": leftovers})

    async def _net_env(self) -> dict[str, str]:
        if not self.remote or self.token is None:
            return {}
        url = (await self.git.run("remote", "get-url", self.remote)).stdout.strip()
        if not url.startswith(("http://", "https://")):
            return {}
        try:
            token = await self.token()
        except Exception as e:  # the broker is down, say: no push this cycle, and say why without the text
            # The provider's own message is not a secret (the broker's errors never carry one) and says
            # why: GitHub unreachable, the App not installed, ...
            why = getattr(e, "message", None) or type(e).__name__
            raise VaultError(f"the token provider failed: {str(why)[:200]}") from None
        if not token:
            return {}
        self._cycle_token = token
        return auth_env(url, token, self._secrets, self.git.env)

    def _refused(self, message: str) -> str:
        """A failure's message; when the remote refused this cycle's token, said so plainly (git only says
        it could not ask for a user name), and the token given back so the next cycle gets another."""
        token = self._cycle_token
        if token is None or not _AUTH_REFUSED.search(message):
            return message
        if self.token_refused is not None:
            try:
                self.token_refused(token)
            except Exception as e:  # never the cycle's failure: the next cycle tries the same token again
                log.warning("vault: could not give back a refused token (%s)", type(e).__name__)
        return f"the remote refused the token from the broker (a new one is asked for next cycle): {message}"

    # --- git: pull, commit, push --------------------------------------------------------------

    async def _pull(self, branch: str, env: dict[str, str], *, fail_on_conflict: bool) -> str | None:
        """``git pull --rebase``; the remote-tracking ref (None when the remote has no such branch yet).

        A conflict is aborted here: VaultError if ``fail_on_conflict``, else GitError("conflict ...").
        """
        assert self.remote is not None and self._git_dir is not None
        out = await self.git.run(
            "pull", "--rebase", "--autostash", "--no-edit", "-q", self.remote, branch, check=False, extra_env=env
        )
        if out.rc == 0:
            return f"refs/remotes/{self.remote}/{branch}"
        if "couldn't find remote ref" in out.text:
            return None  # an empty remote: the first push creates the branch
        if _mid_rebase(self._git_dir):
            conflicted = await self.git.run("diff", "--name-only", "--diff-filter=U", check=False)
            names = ", ".join(conflicted.stdout.split()) or "unknown files"
            await self._abort_rebase(self._git_dir)
            message = f"git pull --rebase conflicts in {names} (a person changed lines lobwife owns)"
            if fail_on_conflict:
                raise VaultError(message + "; aborted, the vault is as it was")
            raise GitError(message)
        raise VaultError(f"git pull --rebase failed: {tail(out.text)}")

    async def _abort_rebase(self, git_dir: Path) -> None:
        await self.git.run("rebase", "--abort", check=False)
        if _mid_rebase(git_dir):
            log.error("vault: still mid-rebase after git rebase --abort", extra={"vault": str(self.root)})
            raise VaultError(f"vault {self.root} is still mid-rebase after git rebase --abort; a person must look")

    async def _commit(self, result: SyncResult) -> str | None:
        await self.git.run("add", "-A", "--", TASKS_DIR)
        staged = await self.git.run("diff", "--cached", "--quiet", "--", TASKS_DIR, check=False)
        if staged.rc == 0:
            return None
        if staged.rc != 1:
            raise VaultError(f"git diff --cached failed: {tail(staged.text)}")
        message = (
            f"lobwife: vault sync ({len(result.written)} written, {len(result.moved)} moved, "
            f"{len(result.removed)} removed)"
        )
        if not result.changed:
            message = "lobwife: vault sync (files an earlier cycle left uncommitted)"
        await self.git.run("commit", "-q", "--no-verify", "-m", message)
        return (await self.git.run("rev-parse", "HEAD")).stdout.strip()

    async def _ahead(self, tracking: str | None) -> bool:
        if tracking is None:
            head = await self.git.run("rev-parse", "-q", "--verify", "HEAD", check=False)
            return head.rc == 0
        count = await self.git.run("rev-list", "--count", f"{tracking}..HEAD")
        return int(count.stdout.strip() or 0) > 0

    async def _push(self, branch: str, env: dict[str, str], result: SyncResult) -> None:
        assert self.remote is not None
        reason = ""
        for attempt in range(1, self.push_attempts + 1):
            result.attempts = attempt
            if attempt > 1:
                await asyncio.sleep(self.retry_backoff * (attempt - 1))
                try:
                    await self._pull(branch, env, fail_on_conflict=False)
                except GitError as e:
                    reason = str(e)
                    log.info("vault: conflict on attempt %d of %d", attempt, self.push_attempts)
                    continue
            out = await self.git.run(
                "push", "--porcelain", self.remote, f"HEAD:refs/heads/{branch}", check=False, extra_env=env
            )
            if out.rc == 0:
                result.pushed = True
                return
            if "[rejected]" in out.text and ("fetch first" in out.text or "non-fast-forward" in out.text):
                reason = "the remote moved on while pushing"
                continue
            raise VaultError(f"git push failed; the commit is kept for the next cycle: {tail(out.text)}")
        raise VaultError(
            f"gave up after {self.push_attempts} attempts: {reason}; aborted cleanly, "
            "the commit is kept for the next cycle"
        )

    # --- plan and apply ---------------------------------------------------------------------------

    def _existing(self, skipped: list[Skipped]) -> dict[int, list[str]]:
        """Task files now in the folders: number -> paths (more than one when copies exist)."""
        found: dict[int, list[str]] = {}
        for folder in FOLDERS:
            rel = f"{TASKS_DIR}/{folder}"
            try:
                names = files.list_dir(self.root, rel)
            except files.UnsafePath as e:
                skipped.append(Skipped(rel, str(e)))
                continue
            for name in names:
                m = render.TASK_FILE.fullmatch(name)
                if m:
                    found.setdefault(int(m.group(1)), []).append(f"{rel}/{name}")
        return found

    def _read(self, rel: str, skipped: list[Skipped]) -> str | bool | None:
        """The file's text, None if absent, False if it may not be read (reported in ``skipped``)."""
        try:
            return files.read_text(self.root, rel)
        except files.UnsafePath as e:
            skipped.append(Skipped(rel, str(e)))
            return False

    def _plan(
        self, tasks: list[tasks_pb2.Task], full: bool, pages: Sequence[TablePage], known: Container[int] | None
    ) -> _Plan:
        plan = _Plan()
        existing = self._existing(plan.skipped)
        # The tasks held back by another task's file are tried again (a full cycle is handed them all).
        # The last version of each task given wins (a feed may hand over several).
        latest: dict[int, tasks_pb2.Task] = {} if full else dict(self._held)
        for task in tasks:
            number = render.task_number(task)
            if number is None:
                plan.skipped.append(Skipped(f"task {task.task_id[:40]!r}", "no task number"))
                continue
            latest[number] = task
        entries: dict[int, render.OverviewEntry] = {}
        held: dict[int, tasks_pb2.Task] = {}
        for number, task in sorted(latest.items()):
            status = render.status_word(task.status)
            if status is None:
                plan.skipped.append(Skipped(f"T{number}", f"status {task.status} has no folder"))
                continue
            owned = render.task_frontmatter(task, number, status)
            # Counted from the task even when its file is held back: the other task's file says nothing of it.
            entry = entries[number] = render.OverviewEntry(
                number, status, render.iso(task.updated_at), render.iso(task.completed_at)
            )
            if self._plan_task(plan, number, task.created_at, status, owned, entry, existing.get(number, [])):
                held[number] = task
        self._held = held
        if full:
            # A task file of a task lobwife does not have is kept: lobwife never deletes a task (a cancel
            # is a status), so such a file came from elsewhere (the old fleet's vault, a person) and may
            # hold the only copy of someone's notes. It is reported; `lobwife vault import` reads it.
            for number, paths in sorted(existing.items()):
                if number not in latest:
                    plan.skipped.extend(Skipped(rel, f"no task T{number} in lobwife: kept") for rel in paths)
        else:
            self._count_files(existing, entries, known)
        self._plan_overview(plan, entries.values())
        for page in pages:
            self._plan_page(plan, page)
        return plan

    def _plan_task(
        self,
        plan: _Plan,
        number: int,
        created: timestamp_pb2.Timestamp,
        status: str,
        owned: dict[str, object],
        entry: render.OverviewEntry,
        copies: list[str],
    ) -> bool:
        """Plans task ``number``'s file; True when another task's ``T<n>.md`` holds it back (nothing planned)."""
        target = render.task_path(number, render.FOLDER_OF[status])
        try:
            files.check(self.root, target)
        except files.UnsafePath as e:
            plan.skipped.append(Skipped(target, str(e)))
            return False
        # Taken before the read, as _file_entry does: a change after it gives the file another stamp.
        stamps = {rel: _stamp(self.root / rel) for rel in copies}
        texts = {rel: self._read(rel, plan.skipped) for rel in copies}
        docs: dict[str, render.Document | FrontmatterError] = {}
        for rel, text in texts.items():
            if isinstance(text, str):
                try:
                    docs[rel] = render.split_document(text)
                except FrontmatterError as e:
                    docs[rel] = e
        # A T<n>.md that says it is another task's (render.other_task) is never adopted, moved, removed
        # or written over, and no second file of this task is written beside it: two T<n>.md in the
        # folders would make every [[T<n>]] link ambiguous. Held back until a person moves it away.
        others = [
            (rel, why)
            for rel, doc in docs.items()
            if isinstance(doc, render.Document)
            and (why := render.other_task(doc.data, number, created, str(owned["name"])))
        ]
        if others:
            plan.skipped.extend(
                Skipped(
                    rel,
                    f"another task's file, not T{number}'s ({why}): kept, and T{number}'s own file is not"
                    f" written while it is here; rename it (to keep that task, import it first: lobwife vault"
                    f" import), and the next cycle writes T{number}'s file",
                )
                for rel, why in others
            )
            return True
        source = target if target in copies else (copies[0] if copies else None)
        text = texts.get(source) if source is not None else None
        if text is False:
            return False
        if source is None or not isinstance(text, str):
            plan.writes[target] = render.new_document(owned, render.new_task_body(number, str(owned["name"])))
            plan.entries[target] = entry
        else:
            doc = docs[source]
            if isinstance(doc, FrontmatterError):
                plan.skipped.append(Skipped(source, str(doc)))
                return False
            try:
                new = render.update_document(text, owned, doc)
            except FrontmatterError as e:  # the rewrite would not give the owned values or keep a person's
                plan.skipped.append(Skipped(source, str(e)))
                return False
            if source != target:
                plan.moves.append((source, target))
            if new != text:
                plan.writes[target] = new
            elif (stamp := stamps.get(source)) is not None:
                plan.stamps[target] = stamp  # a move (a rename) keeps the mtime, size and inode
            # update_document has checked that the file's owned values are then exactly ``owned``.
            plan.entries[target] = entry
        # Copies in folders the task is not in: stale (a person's copy is still in git's history). Any
        # cycle that writes the task removes them, not only a full rebuild.
        for rel in copies:
            if rel == source:
                continue
            copy = docs.get(rel)  # None: it could not be read (reported)
            if isinstance(copy, FrontmatterError):
                plan.skipped.append(Skipped(rel, str(copy)))
            elif copy is not None:
                plan.removes.append(rel)
        return False

    def _count_files(
        self, existing: dict[int, list[str]], entries: dict[int, render.OverviewEntry], known: Container[int] | None
    ) -> None:
        """Adds the overview entries of tasks not in this cycle, from their files' owned keys.

        Only the numbers in ``known`` (the tasks lobwife has): a full rebuild counts the tasks, so a file
        of a task lobwife does not have counted here would make the counts flip from cycle to cycle.
        """
        if not self._entries_loaded:
            self._entries_loaded = True
            if not self._entries and self._git_dir is not None:
                self._entries = _load_entries(self._git_dir / ENTRY_CACHE)
        cache: dict[str, tuple[Stamp, render.OverviewEntry | None]] = {}
        for number, paths in existing.items():
            if number in entries or (known is not None and number not in known):
                continue
            for rel in paths:
                entry = self._file_entry(number, rel, cache)
                if entry is not None:
                    entries[number] = entry
                    break
        if len(cache) != len(self._entries):
            self._entries_dirty = True
        self._entries = cache  # forgets the files that are gone

    def _file_entry(
        self, number: int, rel: str, cache: dict[str, tuple[Stamp, render.OverviewEntry | None]]
    ) -> render.OverviewEntry | None:
        try:
            st = os.lstat(files.check(self.root, rel))
        except (OSError, files.UnsafePath):
            return None
        key = (st.st_mtime_ns, st.st_size, st.st_ino)
        hit = self._entries.get(rel)
        if hit is not None and hit[0] == key:
            cache[rel] = hit
            return hit[1]
        try:
            text = files.read_text(self.root, rel)
            data = render.split_document(text).data if text is not None else None
        except (files.UnsafePath, FrontmatterError):
            data = None
        # A file that says it is another task's (its task_id) is not counted as this one's.
        if data is not None and render.other_task(data, number, _NO_TIME) is None:
            entry: render.OverviewEntry | None = render.overview_entry(number, data)
        else:
            entry = None
        if _trusted(st):
            cache[rel] = (key, entry)
        self._entries_dirty = True
        return entry

    def _plan_overview(self, plan: _Plan, entries: Iterable[render.OverviewEntry]) -> None:
        rel = f"{TASKS_DIR}/{render.OVERVIEW_FILE}"
        owned = render.overview_values(entries, self.recent_completions)
        self._plan_page_file(plan, rel, lambda: render.new_document(owned, render.overview_body()), owned, None)

    def _plan_page(self, plan: _Plan, page: TablePage) -> None:
        owned = page.owned()
        self._plan_page_file(plan, page.path, lambda: render.new_document(owned, page.new_body()), owned, page)

    def _plan_page_file(
        self,
        plan: _Plan,
        rel: str,
        new: Callable[[], str],
        owned: dict[str, object],
        page: TablePage | None,
    ) -> None:
        try:
            files.check(self.root, rel)
        except files.UnsafePath as e:
            plan.skipped.append(Skipped(rel, str(e)))
            return
        text = self._read(rel, plan.skipped)
        if text is False:
            return
        if not isinstance(text, str):
            plan.writes[rel] = new()
            return
        try:
            updated = page.update(text) if page is not None else render.update_document(text, owned)
        except FrontmatterError as e:
            plan.skipped.append(Skipped(rel, str(e)))
            return
        if updated != text:
            plan.writes[rel] = updated

    async def _apply(self, plan: _Plan, result: SyncResult) -> None:
        if plan.moves:
            tracked_out = await self.git.run("ls-files", "-z", "--", *(old for old, _ in plan.moves))
            tracked = set(tracked_out.stdout.split("\0"))
            for old, new in plan.moves:
                await asyncio.to_thread(files.ensure_dir, self.root, str(Path(new).parent))
                if old in tracked:
                    await self.git.run("mv", "--", old, new)
                else:
                    await asyncio.to_thread(files.rename, self.root, old, new)
                result.moved.append((old, new))
        if plan.removes:
            await asyncio.to_thread(_remove_all, self.root, plan.removes)
            result.removed.extend(plan.removes)
        if plan.writes:
            await asyncio.to_thread(_write_all, self.root, plan.writes, result.written, plan.stamps)

    def _remember(self, plan: _Plan, full: bool) -> None:
        """Puts the files this cycle wrote or found up to date into the overview's entry cache.

        Without it the first ordinary cycle after a full one read and parsed every task file again
        (10,000 files: 1.8 s of a 2.1 s cycle, against 0.6 s for the next ones), since a full cycle
        counts from the tasks and left the cache empty. Each file's entry is its task's (the plan
        checked that the file's owned values are the task's) under the stamp the file has now, so
        a file changed since is read again as before. After a full cycle the cache is only these: the
        files it did not hold (another task's, unreadable ones, gone ones) are read when counted.
        The cache is then saved to ENTRY_CACHE when it changed, for the first cycle after a restart.
        """
        cache = {} if full else self._entries
        for rel, entry in plan.entries.items():
            stamp = plan.stamps.get(rel)
            if stamp is None:
                cache.pop(rel, None)
            else:
                cache[rel] = (stamp, entry)
        self._entries = cache
        if full:
            self._entries_loaded = True  # what is on disk is older than this
        if (full or plan.entries or self._entries_dirty) and self._git_dir is not None:
            _save_entries(self._git_dir / ENTRY_CACHE, cache)
            self._entries_dirty = False

    def _log(self, result: SyncResult) -> None:
        fields = {
            "vault": str(self.root),
            "written": len(result.written),
            "moved": len(result.moved),
            "removed": len(result.removed),
            "skipped": len(result.skipped),
            "commit": result.commit,
            "pushed": result.pushed,
            "duration_s": result.duration_s,
        }
        for s in result.skipped:
            log.warning("vault: skipped %s: %s", s.path, s.reason)
        if result.error:
            log.warning("vault sync failed: %s", result.error, extra=fields)
        elif result.changed or result.pushed:
            log.info("vault sync", extra=fields)


def _mid_rebase(git_dir: Path) -> bool:
    return (git_dir / "rebase-merge").exists() or (git_dir / "rebase-apply").exists()


def _remove_all(root: Path, rels: list[str]) -> None:
    # Plain unlinks: `git add -A` then records the deletions with the rest of the cycle.
    for rel in rels:
        files.remove(root, rel)


def _write_all(root: Path, writes: dict[str, str], written: list[str], stamps: dict[str, Stamp]) -> None:
    for rel, text in writes.items():
        files.write_text(root, rel, text)
        written.append(rel)
        stamp = _stamp(root / rel)  # the path was checked by the write, a moment ago
        if stamp is None:
            stamps.pop(rel, None)
        else:
            stamps[rel] = stamp


def _load_entries(path: Path) -> dict[str, tuple[Stamp, render.OverviewEntry | None]]:
    """ENTRY_CACHE's entries; empty when it is missing, unreadable or not what :func:`_save_entries` writes."""
    try:
        doc = json.loads(path.read_bytes())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as e:
        log.info("vault: the overview's entry cache is not used (%s); the files are read", type(e).__name__)
        return {}
    out: dict[str, tuple[Stamp, render.OverviewEntry | None]] = {}
    try:
        if doc["version"] != _ENTRY_CACHE_VERSION:
            return {}
        for rel, mtime_ns, size, ino, number, status, updated, completed in doc["entries"]:
            if not (isinstance(rel, str) and all(type(v) is int for v in (mtime_ns, size, ino))):
                raise ValueError("bad stamp")
            entry = None
            if status is not None:
                # Checked as the overview uses them: a status it has no count for would fail the cycle,
                # and a number not the file's would link another task.
                name = render.TASK_FILE.fullmatch(rel.rsplit("/", 1)[-1])
                if not (
                    name is not None
                    and number == int(name.group(1))
                    and type(number) is int
                    and status in render.STATUSES
                    and all(v is None or isinstance(v, str) for v in (updated, completed))
                ):
                    raise ValueError("bad entry")
                entry = render.OverviewEntry(number, status, updated, completed)
            out[rel] = ((mtime_ns, size, ino), entry)
    except (KeyError, TypeError, ValueError):
        log.info("vault: the overview's entry cache is not used (not in the expected form); the files are read")
        return {}
    return out


def _save_entries(path: Path, cache: dict[str, tuple[Stamp, render.OverviewEntry | None]]) -> None:
    """Writes ENTRY_CACHE whole (a temporary file renamed over it); a failure only costs a slower restart."""
    rows = [
        [rel, *stamp, *((e.number, e.status, e.updated, e.completed) if e is not None else (None,) * 4)]
        for rel, (stamp, e) in cache.items()
    ]
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(json.dumps({"version": _ENTRY_CACHE_VERSION, "entries": rows}, separators=(",", ":")))
        os.replace(tmp, path)
    except OSError as e:
        log.info("vault: could not save the overview's entry cache (%s)", e)


def _stamp(path: Path) -> Stamp | None:
    try:
        st = os.lstat(path)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino) if _trusted(st) else None


#: A task's creation time that says nothing (other_task then looks at task_id alone).
_NO_TIME = timestamp_pb2.Timestamp()
#: How recent a whole-second mtime may be and still be trusted as a stamp (git's "racy clean" idea).
_RACY_NS = 2_000_000_000


def _trusted(st: os.stat_result) -> bool:
    """Whether a file's stamp may stand for its content until it changes. On a file system that keeps
    whole seconds only (a zero sub-second part), a same-size edit within that second would keep the
    stamp: a file stamped that fresh is read again next time instead. Nanosecond file systems (ext4,
    xfs, btrfs) are always trusted."""
    return st.st_mtime_ns % 1_000_000_000 != 0 or time.time_ns() - st.st_mtime_ns > _RACY_NS
