"""``lobwife vault import``: the one-time migration of the old fleet's vault task files into tasks.

The old fleet wrote ``010-tasks/<active|completed|failed>/<name>.md`` with YAML frontmatter, named
by date and slug (``2026-01-15-fix-login-redirect.md``) or by task id (``T42.md``). :func:`scan`
reads those files (blocking; the CLI calls it, never the server's event loop) into
:class:`Found` entries, each either a :class:`PlannedTask` (the CreateTaskRequest to send and
what it came from) or the reason it is not imported. :func:`run` sends them through a
:class:`~lobwife.client.Client` and yields one :class:`Outcome` per file.

The frontmatter is read with :func:`render.split_document`, the reader the vault sync uses, so
the two agree on what a file's frontmatter is. Reading is liberal (synonyms for statuses, repos
as a list or a comma string, times in the old daemon's many forms); what is sent is left to the
server to judge, and a file it refuses is reported with its message while the run goes on.

Idempotency (docs/vault.md, "Importing an existing vault"): each file's CreateTask carries the
request id ``vault-import:<file stem>`` (:func:`request_id_for`), so a second run gets the task
the first created, and a file changed since is ALREADY_EXISTS (reported, skipped). The stem, not
the path, so that a file the old fleet moved from ``active/`` to ``completed/`` is still the same
import. After the create, an ``imported`` event records the source file and the original times
(which CreateTask cannot set), unless the task already has one: a run interrupted between the two
is completed by the next, and a second run adds nothing.

No file is ever written, moved or renamed here.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import stat
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import grpc

from lobwife.client import Client, LobwifeError
from lobwife.v1 import tasks_pb2
from lobwife_server.core.timeutil import from_us, parse_legacy
from lobwife_server.vault import files, render
from lobwife_server.vault.render import TASKS_DIR, FrontmatterError

#: A file larger than this is reported and not read: a task file is a page of text, and the
#: bound keeps a stray export or binary in the folder from being read into memory.
MAX_FILE_BYTES = 1 << 20
#: The event that records where an imported task came from.
IMPORTED_EVENT = "imported"
#: Who the creates and events are from. Fixed: the server's request fingerprint includes the
#: actor, so another actor on a second run would make every file "changed since".
ACTOR = "lobwife-vault-import"
REQUEST_ID_PREFIX = "vault-import:"

#: The folders read, finished ones first: when the old fleet left a copy of a file in ``active/``
#: after moving it, the finished copy is the one imported (the other is reported as a duplicate).
FOLDER_ORDER = ("completed", "failed", "active")
#: The status of a file whose frontmatter has none. ``active/`` holds queued, active and blocked
#: tasks alike, and an imported task has no worker on it in this fleet: ``queued`` lets lobboss
#: decide, where ``active`` would claim a worker and stamp ``assigned_at`` now.
FOLDER_STATUS: Mapping[str, str] = {"active": "queued", "completed": "completed", "failed": "failed"}

#: ``2026-01-15-fix-login-redirect``: the date, then the slug (any text; it is never a path).
DATE_SLUG = re.compile(r"(?P<date>[0-9]{4}-[0-9]{2}-[0-9]{2})-(?P<slug>.+)")
#: ``T42`` (the old fleet also wrote ``t42`` and ``T042``).
T_ID = re.compile(r"[Tt]0*(?P<number>[1-9][0-9]{0,17})")
# A stem that can stand in a request id as it is; any other is hashed (see request_id_for).
_PLAIN_STEM = re.compile(r"[A-Za-z0-9._-]{1,100}")
# Runs of whitespace and control characters (line breaks of every kind, NUL, the BOM) in a one-line
# value: one space each. Liberal reading: a name folded over two lines is still that name.
_SPACE_RUN = re.compile(r"[\s\x00-\x1f\x7f-\x9f\u2028\u2029\ufeff]+")
_SURROGATE = re.compile(r"[\ud800-\udfff]")
_HEADING = re.compile(r"#[ \t]+(?P<text>.+?)(?:[ \t]+#+)?[ \t]*")
# The heading lobwife's own files start with (render.new_task_body): ``# T42 · Fix it``.
_OWN_HEADING = re.compile(r"T[0-9]+ · ")
_GITHUB = re.compile(r"(?:(?:https?|ssh|git)://(?:[^@/]+@)?github\.com/|git@github\.com:|github\.com/)", re.I)
_ESTIMATE = re.compile(r"(?P<n>[0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*(?:m|min|mins|minutes?)?", re.I)
_REUSED_BY = re.compile(r"create task T(?P<number>[0-9]+)")

#: Status words the old fleet (and people) wrote, by the status they mean. Keys are normalized:
#: lowercase, with spaces and underscores as ``-``.
STATUS_WORDS: Mapping[str, str] = {
    **{w: "queued" for w in ("queued", "queue", "pending", "todo", "to-do", "new", "open", "backlog", "ready")},
    **{
        w: "active"
        for w in ("active", "in-progress", "inprogress", "wip", "running", "assigned", "working", "review", "in-review")
    },
    **{w: "blocked" for w in ("blocked", "waiting", "on-hold", "paused")},
    **{w: "completed" for w in ("completed", "complete", "done", "finished", "merged", "succeeded", "success")},
    **{w: "failed" for w in ("failed", "fail", "failure", "error", "errored")},
    **{w: "cancelled" for w in ("cancelled", "canceled", "cancel", "abandoned", "dropped", "wontfix", "won't-fix")},
}
_TRUE = frozenset({"true", "yes", "y", "on", "1"})
_FALSE = frozenset({"false", "no", "n", "off", "0"})

# What an Outcome's ``result`` is.
CREATED = "created"
ALREADY_IMPORTED = "already imported"
ALREADY_A_TASK = "already a task"
WOULD_CREATE = "would create"
SKIPPED = "skipped"
FAILED = "failed"
RESULTS = (CREATED, ALREADY_IMPORTED, ALREADY_A_TASK, WOULD_CREATE, SKIPPED, FAILED)

#: Codes that are about the one file (the run goes on); any other (the server gone, no permission)
#: is about the run and ends it.
_FILE_CODES = frozenset(
    {
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.ALREADY_EXISTS,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.OUT_OF_RANGE,
        grpc.StatusCode.NOT_FOUND,
    }
)


class VaultImportError(ValueError):
    """The vault path cannot be imported from at all (not a folder, no ``010-tasks``)."""


@dataclass(frozen=True)
class PlannedTask:
    """What one file becomes: the CreateTaskRequest to send, and what the ``imported`` event records."""

    request: tasks_pb2.CreateTaskRequest
    #: ``T42.md`` whose frontmatter says ``task_id: T42``: lobwife's own file (or the old daemon's,
    #: whose database lobwife upgraded) when the server has T42 and it is that task (:func:`another_task`).
    #: None for every other file.
    own_number: int | None
    source: str  # the vault-relative path
    old_task_id: str | None
    created: str | None  # the original times, as ISO 8601 text (or as written, when not a time)
    completed: str | None
    #: The name the file gives (``name``, ``title`` or its heading); None when it gives none and the
    #: task is named after the file name. Told apart from the server's task of the same number.
    file_name: str | None = None

    def event_detail(self) -> str:
        """The ``imported`` event's detail: one line of JSON (ASCII, so nothing in it is a control character)."""
        detail: dict[str, str] = {"source": self.source, "request_id": self.request.request_id}
        for key, value in (("old_task_id", self.old_task_id), ("created", self.created), ("completed", self.completed)):
            if value is not None:
                detail[key] = value
        return json.dumps(detail, ensure_ascii=True, separators=(",", ":"))


@dataclass(frozen=True)
class Found:
    """One ``*.md`` file of the three folders: a plan, or the reason there is none."""

    path: str  # vault-relative (``010-tasks/completed/T42.md``)
    plan: PlannedTask | None = None
    problem: str | None = None
    #: Whether ``problem`` fails the run (exit 1): a task file that cannot be read. A file that is
    #: not a task file by its name is only skipped.
    fails: bool = False
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Outcome:
    """What happened to one file (or, in a dry run, would happen)."""

    path: str
    result: str  # one of RESULTS
    task_id: str | None = None
    reason: str | None = None
    notes: tuple[str, ...] = ()
    request: tasks_pb2.CreateTaskRequest | None = field(default=None, compare=False)

    @property
    def failed(self) -> bool:
        return self.result == FAILED


# --- reading ---------------------------------------------------------------------------------------


def request_id_for(stem: str) -> str:
    """``vault-import:2026-01-15-fix-login-redirect``; a stem that is long or not plain ASCII is hashed.

    Deterministic, so a second run sends the same id. A stem and not the path: a file moved between
    the status folders is the same import (and a changed one is ALREADY_EXISTS, as it should be).
    """
    if _PLAIN_STEM.fullmatch(stem):
        return REQUEST_ID_PREFIX + stem
    digest = hashlib.sha256(stem.encode("utf-8", "surrogateescape")).hexdigest()[:32]
    return f"{REQUEST_ID_PREFIX}sha256:{digest}"


def scan(vault: Path, *, max_bytes: int = MAX_FILE_BYTES) -> Iterator[Found]:
    """The task files under ``vault/010-tasks/{completed,failed,active}``, one :class:`Found` each.

    Only the three folders and only the ``*.md`` names directly in them (hidden files aside). No
    symlink is followed, on the way or as the file (``files.check`` and ``O_NOFOLLOW``); a file that
    is a symlink is reported, never read. :class:`VaultImportError` when ``vault`` has no tasks folder.
    """
    if not vault.is_dir():
        raise VaultImportError(f"{vault} is not a folder")
    try:
        base = files.check(vault, TASKS_DIR)
    except files.UnsafePath as e:
        raise VaultImportError(str(e)) from None
    if not base.is_dir():
        raise VaultImportError(f"{vault} has no {TASKS_DIR} folder (give the vault's top folder)")
    return _walk(vault, max_bytes)


def _walk(vault: Path, max_bytes: int) -> Iterator[Found]:
    # Lazily, so that a caller prints each file's outcome as it goes; the checks above are eager.
    for folder in FOLDER_ORDER:
        rel_dir = f"{TASKS_DIR}/{folder}"
        try:
            names = files.list_dir(vault, rel_dir)
        except files.UnsafePath as e:
            yield Found(rel_dir, problem=str(e), fails=True)
            continue
        except OSError as e:  # a folder this user may not list
            yield Found(rel_dir, problem=f"cannot be listed: {e.strerror or e}", fails=True)
            continue
        for name in names:
            if name.startswith(".") or not name.lower().endswith(".md"):
                continue
            yield read_file(vault, rel_dir, name, folder, max_bytes=max_bytes)


def read_file(vault: Path, rel_dir: str, name: str, folder: str, *, max_bytes: int = MAX_FILE_BYTES) -> Found:
    """One file as a :class:`Found` (never raises for what is in the file)."""
    rel = f"{rel_dir}/{name}"
    stem = name[: -len(".md")]
    date_slug = DATE_SLUG.fullmatch(stem)
    t_id = T_ID.fullmatch(stem)
    if date_slug is None and t_id is None:
        return Found(rel, problem="not a task file name (date-slug or T<n>)")
    try:
        stem.encode("utf-8")
    except UnicodeEncodeError:  # undecodable bytes (os.listdir's surrogates): no name or slug can come of it
        return Found(rel, problem="the file name is not UTF-8", fails=True)
    try:
        text = _read_bounded(vault, rel, max_bytes)
    except files.UnsafePath as e:
        return Found(rel, problem=str(e), fails=True)
    except OSError as e:
        return Found(rel, problem=f"cannot be read: {e.strerror or e}", fails=True)
    if text is None:
        return Found(rel, problem="not a regular file")
    try:
        doc = render.split_document(text)
    except FrontmatterError as e:
        return Found(rel, problem=str(e), fails=True)
    except (ValueError, RecursionError) as e:  # a YAML value its constructor refuses (2026-13-45)
        return Found(rel, problem=f"frontmatter does not parse: {e}", fails=True)
    notes: list[str] = []
    try:
        plan = plan_task(rel, stem, folder, doc.data, doc.body, notes)
    except (ValueError, ArithmeticError) as e:
        # A value protobuf will not hold, a number no float holds (a 400-digit estimate): one file's
        # problem, reported on its line, never the run's.
        return Found(rel, problem=f"a value cannot be sent: {str(e)[:200]}", fails=True)
    return Found(rel, plan=plan, notes=tuple(notes))


def _read_bounded(vault: Path, rel: str, max_bytes: int) -> str | None:
    """The file's text; None when it is not a regular file; UnsafePath for a symlink, a size over the
    bound, or bytes that are not UTF-8."""
    st = os.lstat(vault / rel)
    if stat.S_ISLNK(st.st_mode):
        raise files.UnsafePath(f"{rel} is a symlink; not followed")
    path = files.check(vault, rel)  # the folders on the way too
    if not stat.S_ISREG(st.st_mode):
        return None  # a folder or a FIFO named *.md: opening a FIFO would block
    if st.st_size > max_bytes:
        raise files.UnsafePath(f"{rel} is larger than {_size(max_bytes)} ({_size(st.st_size)}); not read")
    # O_NONBLOCK: should the name be swapped for a FIFO after the lstat, the open does not hang.
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            return None
        data = f.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise files.UnsafePath(f"{rel} is larger than {_size(max_bytes)}; not read")
    try:
        return data.decode("utf-8-sig")  # an editor's BOM is not part of the text
    except UnicodeDecodeError:
        raise files.UnsafePath(f"{rel} is not UTF-8 text") from None


def _size(n: int) -> str:
    return f"{n / (1 << 20):.1f} MiB" if n >= 1 << 20 else f"{n} bytes"


def plan_task(source: str, stem: str, folder: str, data: Mapping[Any, Any], body: str, notes: list[str]) -> PlannedTask:
    """The CreateTaskRequest for a file's frontmatter ``data`` and ``body``; what was read loosely goes
    into ``notes``. Values are normalized (one-line text, known status words) but not judged: the
    server says what it refuses."""
    date_slug = DATE_SLUG.fullmatch(stem)
    t_id = T_ID.fullmatch(stem)
    file_slug = date_slug["slug"] if date_slug else None

    old_id = _task_ref(data.get("task_id"))
    if old_id is None:
        old_id = _task_ref(data.get("id"))
    own_number = int(t_id["number"]) if t_id and old_id == int(t_id["number"]) else None

    # The frontmatter's name is what tells one task from another (render.other_task); the heading
    # only names the task.
    file_name = _text(data.get("name")) or _text(data.get("title"))
    name = file_name or _heading(body)
    if name is None:
        name = _readable(file_slug) if file_slug else f"T{int(t_id['number'])}" if t_id else stem
        notes.append("no name in the file: named after its file name")
    slug = _text(data.get("slug")) or (_text(file_slug) if file_slug else None)

    req = tasks_pb2.CreateTaskRequest(name=name, request_id=request_id_for(stem), actor=ACTOR)
    if slug is not None:
        req.slug = slug
    req.status = tasks_pb2.TaskStatus.Value("TASK_STATUS_" + _status(data.get("status"), folder, notes).upper())
    for key in ("type", "priority", "model", "assigned_to", "workflow", "discord_thread_id"):
        value = _text(data.get(key))
        if value is not None:
            setattr(req, key, value)
    req.repos.extend(_repos(data.get("repos"), notes))
    qa = _bool(data.get("requires_qa"))
    if qa is not None:
        req.requires_qa = qa
    estimate = _estimate(data.get("estimate_minutes"))
    if estimate is not None:
        req.estimate_minutes_exact = estimate

    created = _time("created", _first(data, "created", "created_at"), notes)
    if created is None and date_slug:
        created = date_slug["date"]  # the date the old fleet named the file by
    completed = _time("completed", _first(data, "completed", "completed_at"), notes)
    return PlannedTask(
        request=req,
        own_number=own_number,
        source=source,
        old_task_id=None if old_id is None else f"T{old_id}",
        created=created,
        completed=completed,
        file_name=file_name,
    )


def _first(data: Mapping[Any, Any], *keys: str) -> object:
    for key in keys:
        if data.get(key) is not None:
            return data[key]
    return None


def _text(value: object) -> str | None:
    """A one-line text value: strings and numbers, whitespace runs folded to one space; None for
    anything else (a list, a mapping, null, a boolean) or when blank."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        text = str(value)
    elif isinstance(value, str):
        text = value
    else:
        return None
    # A YAML escape can make a lone surrogate ("\ud800"), which no protobuf string may hold.
    folded = _SURROGATE.sub("\ufffd", _SPACE_RUN.sub(" ", text)).strip()
    return folded or None


def _heading(body: str) -> str | None:
    """The first ``# `` heading's text (lobwife's own ``T42 · `` prefix taken off)."""
    for line in body.splitlines():
        m = _HEADING.fullmatch(line.strip())
        if m:
            return _text(_OWN_HEADING.sub("", m["text"], count=1))
    return None


def _readable(slug: str) -> str:
    """``fix-login_redirect`` -> ``Fix login redirect``."""
    words = _text(slug.replace("-", " ").replace("_", " ")) or slug
    return words[:1].upper() + words[1:]


def _task_ref(value: object) -> int | None:
    """``T42``, ``t42``, ``42`` or 42 -> 42; None for anything else."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value > 0 else None
    if isinstance(value, str):
        m = T_ID.fullmatch(value.strip()) or re.fullmatch(r"0*(?P<number>[1-9][0-9]{0,17})", value.strip())
        return int(m["number"]) if m else None
    return None


def _status(value: object, folder: str, notes: list[str]) -> str:
    """The frontmatter's status word (or a synonym of one); else the folder's (FOLDER_STATUS)."""
    fallback = FOLDER_STATUS[folder]
    text = _text(value)
    if text is None:
        return fallback
    word = STATUS_WORDS.get(re.sub(r"[\s_]+", "-", text.lower()))
    if word is None:
        notes.append(f"status {text[:40]!r} is not one lobwife knows: {fallback}, from the folder")
        return fallback
    return word


def _repos(value: object, notes: list[str]) -> list[str]:
    """A list, or a string of names split at commas and spaces; GitHub URLs become ``owner/name``."""
    if value is None:
        return []
    items: list[object]
    if isinstance(value, str):
        items = [p for p in re.split(r"[,\s]+", value) if p]
    elif isinstance(value, list):
        items = list(value)
    else:
        notes.append(f"repos is a {type(value).__name__}, not a list: left out")
        return []
    out: list[str] = []
    for item in items:
        text = _text(item)
        if text is None:
            notes.append("repos: an item that is not text was left out")
            continue
        text = _GITHUB.sub("", text, count=1).rstrip("/")
        text = text.removesuffix(".git")
        if text and text not in out:
            out.append(text)
    return out


def _bool(value: object) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return {0: False, 1: True}.get(value)
    text = _text(value)
    if text is None:
        return None
    word = text.lower()
    return True if word in _TRUE else False if word in _FALSE else None


def _estimate(value: object) -> float | None:
    """Minutes from a number, ``"30"`` or ``"30m"``/``"30 min"``; an out-of-range number is sent (the
    server names it), NaN is not a number anyone wrote."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        try:
            number = float(value)
        except OverflowError:  # an int YAML read whole, beyond any float: no one's estimate
            raise ValueError(f"estimate_minutes is too large ({len(str(abs(int(value))))} digits)") from None
        return None if math.isnan(number) else number
    text = _text(value)
    m = _ESTIMATE.fullmatch(text) if text else None
    return float(m["n"]) if m else None


def _time(key: str, value: object, notes: list[str]) -> str | None:
    """ISO 8601 UTC text for a YAML time or date, or any form ``parse_legacy`` reads; text that is
    not a time is kept as written (one line, bounded), with a note."""
    if value is None:
        return None
    if isinstance(value, datetime):
        at = value if value.tzinfo else value.replace(tzinfo=UTC)
        return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    if isinstance(value, date):
        return value.isoformat()
    try:
        us = parse_legacy(value)
    except (ValueError, OverflowError):  # an epoch number beyond any float: not a time
        us = None
    if us is not None:
        return from_us(us).strftime("%Y-%m-%dT%H:%M:%SZ")
    text = _text(value)
    if text is None:
        return None
    notes.append(f"{key}: {text[:40]!r} is not a time; kept as written")
    return text[:200]


# --- sending ---------------------------------------------------------------------------------------


def create_kwargs(req: tasks_pb2.CreateTaskRequest) -> dict[str, Any]:
    """``req`` as :meth:`Client.create_task`'s keyword arguments (the fields it sets, and no others)."""
    kwargs: dict[str, Any] = {"name": req.name, "request_id": req.request_id, "actor": req.actor}
    for key in ("slug", "type", "priority", "model", "assigned_to", "discord_thread_id", "workflow"):
        if req.HasField(key):
            kwargs[key] = getattr(req, key)
    if req.status:
        kwargs["status"] = int(req.status)
    if req.repos:
        kwargs["repos"] = list(req.repos)
    if req.requires_qa:
        kwargs["requires_qa"] = True
    if req.HasField("estimate_minutes_exact"):
        kwargs["estimate_minutes"] = req.estimate_minutes_exact
    return kwargs


def _refusal(e: LobwifeError) -> str:
    text = f"{e.code.name}: {e.message}"
    return text if len(text) <= 500 else text[:499] + "…"


def _newest_task_id(client: Client) -> int:
    page = client.list_tasks(page_size=1)
    return page.tasks[0].id if page.tasks else 0


def _has_imported_event(client: Client, task_id: str) -> bool:
    return any(e.event_type == IMPORTED_EVENT for e in client.iter_events(task_id, page_size=1000))


def another_task(plan: PlannedTask, task: tasks_pb2.Task) -> str | None:
    """Why the server's ``task`` (the one numbered as ``plan``'s ``T<n>.md``) is another task than the
    file's, or None when it is the same one, or nothing says otherwise.

    The old fleet numbered its own tasks, so the server's T42 may be unrelated to an old ``T42.md``. The
    vault sync's own rule (``render.other_task``): the file's ``created``, else its frontmatter name,
    so that a file the import leaves as "already a task" is one the sync adopts, and the other way round.
    """
    given = {"created": plan.created, "name": plan.file_name}
    return render.other_task(given, task.id, task.created_at, _text(task.name) or "")


def run(client: Client, found: Iterable[Found], *, dry_run: bool = False) -> Iterator[Outcome]:
    """Imports each file (a dry run only reads: GetTask for ``T<n>`` files) and yields its outcome.

    A refusal that concerns the file (INVALID_ARGUMENT and the like) is that file's ``failed``
    outcome and the run goes on; any other error (the server gone, no permission) is raised.
    "created" versus "already imported" is told by the task's number: a task numbered above the
    newest one before the run was created by it.
    """
    newest = 0 if dry_run else _newest_task_id(client)
    first_of: dict[str, str] = {}  # request id -> the file of this run that used it
    for item in found:
        if item.plan is None:
            yield Outcome(item.path, FAILED if item.fails else SKIPPED, reason=item.problem, notes=item.notes)
            continue
        yield _one(client, item, item.plan, newest, first_of, dry_run)


def _one(
    client: Client, item: Found, plan: PlannedTask, newest: int, first_of: dict[str, str], dry_run: bool
) -> Outcome:
    path, notes = item.path, item.notes
    if plan.own_number is not None:
        try:
            task = client.get_task(plan.own_number)
        except LobwifeError as e:
            if e.code != grpc.StatusCode.NOT_FOUND:
                raise
        else:
            other = another_task(plan, task)
            if other is None:
                return Outcome(path, ALREADY_A_TASK, task.task_id)  # what was read loosely does not matter
            notes = (*notes, f"the number {task.task_id} is taken by another task ({other}): this file is a new task")
    request_id = plan.request.request_id
    if request_id in first_of:
        reason = f"the same file name as {first_of[request_id]}, which is the one imported"
        return Outcome(path, SKIPPED, reason=reason, notes=notes)
    first_of[request_id] = path
    if dry_run:
        return Outcome(path, WOULD_CREATE, notes=notes, request=plan.request)
    try:
        task = client.create_task(**create_kwargs(plan.request))
    except LobwifeError as e:
        if e.code not in _FILE_CODES:
            raise
        if e.code == grpc.StatusCode.ALREADY_EXISTS:
            m = _REUSED_BY.search(e.message)
            task_id = f"T{m['number']}" if m else None
            reason = f"imported before{f' as {task_id}' if task_id else ''}, changed since"
            return Outcome(path, SKIPPED, task_id, reason=reason, notes=notes)
        return Outcome(path, FAILED, reason=_refusal(e), notes=notes)
    except (TypeError, ValueError) as e:  # the client's own checks of a value
        return Outcome(path, FAILED, reason=str(e), notes=notes)
    result = CREATED if task.id > newest else ALREADY_IMPORTED
    try:
        if not _has_imported_event(client, task.task_id):
            client.add_event(task.task_id, IMPORTED_EVENT, detail=plan.event_detail(), actor=ACTOR)
            if result == ALREADY_IMPORTED:
                notes = (*notes, "its imported event was missing (an interrupted run) and is added now")
    except LobwifeError as e:
        if e.code not in _FILE_CODES:
            raise
        reason = f"{task.task_id} was created but its imported event was refused ({_refusal(e)}); run again"
        return Outcome(path, FAILED, task.task_id, reason=reason, notes=notes)
    return Outcome(path, result, task.task_id, notes=notes)


def summary(outcomes: Iterable[Outcome]) -> dict[str, int]:
    """How many files had each result (every result named, zeros included)."""
    counts = dict.fromkeys(RESULTS, 0)
    for o in outcomes:
        counts[o.result] += 1
    return counts
