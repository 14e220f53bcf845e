"""What the vault's files say: a task's frontmatter, the folder rule, the overview, summary pages.

Pure functions (no I/O), so every rule here is tested on strings.

The ownership rule: lobwife owns the frontmatter keys in :data:`OWNED_KEYS` (and, in the
overview and summary pages, their own lists) and rewrites only those. A person's keys, their
order, their comments and the whole body are kept byte for byte: the frontmatter is edited line
by line (each owned key's lines replaced where they stand, new ones appended), never re-dumped.
A file whose frontmatter does not parse raises :class:`FrontmatterError` and is left alone.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

import yaml
from google.protobuf import timestamp_pb2

from lobwife.v1 import tasks_pb2
from lobwife_server.core.timeutil import parse_legacy

#: The folder under the vault root that holds everything lobwife writes.
TASKS_DIR = "010-tasks"

#: Which folder a status's file lives in.
FOLDER_OF: Mapping[str, str] = {
    "queued": "active",
    "active": "active",
    "blocked": "active",
    "completed": "completed",
    "failed": "failed",
    "cancelled": "failed",
}
FOLDERS = ("active", "completed", "failed")
STATUSES = ("queued", "active", "blocked", "completed", "failed", "cancelled")

#: The frontmatter keys lobwife owns in a task's file, in the order a new file lists them. Each is
#: always present (null when the task has no value), so Dataview queries see one shape.
OWNED_KEYS: tuple[str, ...] = (
    "task_id",
    "name",
    "slug",
    "status",
    "type",
    "priority",
    "model",
    "assigned_to",
    "repos",
    "workflow",
    "requires_qa",
    "estimate_minutes",
    "created_by",
    "created",
    "updated",
    "queued",
    "assigned",
    "completed",
)

#: The overview's owned keys: one count per status, the total, the newest completions, and the
#: newest ``updated`` among the tasks (not the time of the sync, so that an idle cycle changes nothing).
OVERVIEW_KEYS: tuple[str, ...] = ("total", *STATUSES, "recent_completions", "updated")
OVERVIEW_FILE = "_overview.md"
RECENT_COMPLETIONS = 10

#: ``T42.md``: the only file names lobwife reads or writes as task files.
TASK_FILE = re.compile(r"T([1-9][0-9]{0,18})\.md")
_TASK_REF = re.compile(r"T([1-9][0-9]{0,18})")
#: A summary page's name (``costs`` -> ``_costs.md``) and its frontmatter keys.
PAGE_NAME = re.compile(r"[a-z][a-z0-9-]{0,40}")
PAGE_KEY = re.compile(r"[a-z_][a-z0-9_]{0,60}")
TABLE_BEGIN = "<!-- lobwife:table:begin -->"
TABLE_END = "<!-- lobwife:table:end -->"

# Characters that must never reach a YAML scalar unescaped: control characters and every line break
# YAML or an editor knows (NEL, LS, PS), and the BOM. A string holding one is written double-quoted,
# where each is an escape sequence on the same line.
_UNSAFE_IN_PLAIN = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\ufeff]")


class FrontmatterError(ValueError):
    """A file's frontmatter is missing, does not parse, or cannot be rewritten without touching a person's keys."""


class _Dumper(yaml.SafeDumper):
    """safe_dump, with strings that hold a line break or control character double-quoted (one line, escaped)."""


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = '"' if _UNSAFE_IN_PLAIN.search(value) else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _represent_str)

_Loader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _dump_entry(key: str, value: object, newline: str) -> str:
    # A huge width: PyYAML would otherwise fold a long string onto continuation lines.
    text = yaml.dump(
        {key: value}, Dumper=_Dumper, sort_keys=False, allow_unicode=True, default_flow_style=False, width=1 << 30
    )
    return text.replace("\n", newline)


# --- tasks -------------------------------------------------------------------------------------


def status_word(status: int) -> str | None:
    """``TASK_STATUS_COMPLETED`` -> ``completed``; None for UNSPECIFIED or a value this build does not know."""
    try:
        name = tasks_pb2.TaskStatus.Name(status)  # type: ignore[arg-type]
    except ValueError:
        return None
    word = name.removeprefix("TASK_STATUS_").lower()
    return word if word in FOLDER_OF else None


def task_number(task: tasks_pb2.Task) -> int | None:
    """The task's number, from ``id`` or else from a ``T42`` ``task_id``; None when neither is one."""
    if task.id > 0:
        return task.id
    m = _TASK_REF.fullmatch(task.task_id)
    return int(m.group(1)) if m else None


def task_path(number: int, folder: str) -> str:
    """``010-tasks/active/T42.md``: built from the number alone, never from a task's text."""
    if folder not in FOLDERS:
        raise ValueError(f"unknown folder {folder!r}")
    return f"{TASKS_DIR}/{folder}/T{int(number)}.md"


def iso(ts: timestamp_pb2.Timestamp) -> str | None:
    if ts.seconds == 0 and ts.nanos == 0:
        return None
    return datetime.fromtimestamp(ts.seconds, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def task_frontmatter(task: tasks_pb2.Task, number: int, status: str) -> dict[str, object]:
    """The owned keys' values for ``task`` (every key of :data:`OWNED_KEYS`, in that order).

    ``created``/``updated`` are explicit because a file's own times are when it was checked out.
    """
    estimate: float | int | None = None
    if task.HasField("estimate_minutes_exact"):
        estimate = task.estimate_minutes_exact
        if estimate == int(estimate):
            estimate = int(estimate)
    elif task.HasField("estimate_minutes"):
        estimate = task.estimate_minutes
    values: dict[str, object] = {
        "task_id": f"T{number}",
        "name": task.name,
        "slug": task.slug if task.HasField("slug") else None,
        "status": status,
        "type": task.type or None,
        "priority": task.priority or None,
        "model": task.model if task.HasField("model") else None,
        "assigned_to": task.assigned_to if task.HasField("assigned_to") else None,
        "repos": list(task.repos),
        "workflow": task.workflow if task.HasField("workflow") else None,
        "requires_qa": task.requires_qa,
        "estimate_minutes": estimate,
        "created_by": task.created_by if task.HasField("created_by") else None,
        "created": iso(task.created_at),
        "updated": iso(task.updated_at),
        "queued": iso(task.queued_at),
        "assigned": iso(task.assigned_at),
        "completed": iso(task.completed_at),
    }
    assert tuple(values) == OWNED_KEYS
    return values


# --- whose file a T<n>.md is -----------------------------------------------------------------------

#: How far a file's ``created`` may be from its task's creation time and still be that task's file:
#: the old daemon wrote its own clock's time, to the second or the minute, not lobwife's.
SAME_TASK_WITHIN = 60
_DAY_ONLY = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_NUMBERED = re.compile(r"[Tt]?0*([1-9][0-9]{0,18})")


def file_time(value: object) -> datetime | date | None:
    """A frontmatter time (``created``) as an aware UTC datetime, or a date when it names only a day; None
    when it is not a time. Reads what YAML builds and any text ``parse_legacy`` reads (the old daemon's forms)."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, datetime):
        return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, date):
        return value
    if isinstance(value, str) and _DAY_ONLY.fullmatch(value.strip()):
        try:
            return date.fromisoformat(value.strip())
        except ValueError:
            return None
    try:
        us = parse_legacy(value)
    except (ValueError, OverflowError):  # a 400-digit number is no time, and must not end the cycle
        return None
    return None if us is None else datetime.fromtimestamp(us / 1_000_000, tz=UTC)


def created_mismatch(value: object, created: timestamp_pb2.Timestamp) -> str | None:
    """``value`` (a file's ``created``) as text when it is a time more than :data:`SAME_TASK_WITHIN` seconds
    from ``created`` (a day when it names only a day); None when they agree or either is no time."""
    when = file_time(value)
    if when is None or (created.seconds == 0 and created.nanos == 0):
        return None
    task_at = datetime.fromtimestamp(created.seconds, tz=UTC)
    if not isinstance(when, datetime):
        # A day alone cannot be compared to the minute: the same day is the same task.
        return None if when == task_at.date() else when.isoformat()
    if abs((when - task_at).total_seconds()) <= SAME_TASK_WITHIN:
        return None
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def file_created(data: Mapping[str, Any]) -> object:
    """A task file's ``created`` value (``created_at``, the old daemon's other spelling, when it has none)."""
    value = data.get("created")
    return data.get("created_at") if value is None else value


def other_task(
    data: Mapping[str, Any], number: int, created: timestamp_pb2.Timestamp, name: str | None = None
) -> str | None:
    """Why the ``T<number>.md`` whose frontmatter is ``data`` is another task's file and not task
    ``T<number>``'s (created at ``created``); None when it is this task's, or nothing says otherwise.

    The sync's one rule before it adopts an existing file. A task number names a task only in one
    database: the old fleet's vault numbered its own tasks, so an old ``completed/T99.md`` may be about
    something else than lobwife's T99 when that is created. Adopting it would rewrite its keys, move it,
    and leave someone's notes about another task under this one. So a file that says it is another's
    (a ``task_id`` that is not ``T<number>``, a ``created`` more than a minute from the task's) is not
    adopted. A file with no ``created`` that is a time was not written by lobwife (it always writes
    one), so its ``name`` (or ``title``) says which task it is about: a different one than ``name``, the
    task's (compared without case), is another task's; a task renamed since lobwife wrote its file keeps
    its ``created`` and is not judged by name. One that says nothing either way is adopted. The
    importer asks the same question with this rule (``importer.another_task``).
    """
    task_id = data.get("task_id")
    if task_id is not None and task_id != "":
        m = None if isinstance(task_id, bool) else _NUMBERED.fullmatch(str(task_id).strip())
        if m is None or int(m.group(1)) != number:
            return f"its task_id is {one_line(str(task_id), 40)!r}, not T{number}"
    when = created_mismatch(file_created(data), created)
    if when is not None:
        return f"it was created {when}, and task T{number} was created {iso(created)}"
    if name is not None and file_time(file_created(data)) is None:
        given = data.get("name") or data.get("title")
        if isinstance(given, str) and given.strip() and given.strip().casefold() != name.strip().casefold():
            return f"it is about {one_line(given, 60)!r}, and task T{number} is {one_line(name, 60)!r}"
    return None


def one_line(text: str, limit: int = 200) -> str:
    """Text safe for one markdown line: control characters and line breaks become spaces, ``<`` is escaped."""
    flat = _UNSAFE_IN_PLAIN.sub(" ", text).replace("<", "&lt;").strip()
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def new_task_body(number: int, name: str) -> str:
    """The body a new task file starts with; after that it is the people's."""
    return (
        f"# T{number} · {one_line(name) or '(no name)'}\n"
        "\n"
        "<!-- lobwife keeps the frontmatter keys it owns up to date (see docs/vault.md); "
        "everything else in this file is yours. -->\n"
        "\n"
        "## Notes\n"
    )


# --- documents ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Document:
    """A markdown file split at its frontmatter: ``head`` + ``frontmatter`` + ``tail`` + ``body`` is the text."""

    head: str  # the opening ``---`` line, with its line ending
    frontmatter: str
    tail: str  # the closing ``---`` (or ``...``) line
    body: str
    newline: str
    data: dict[str, Any]


def split_document(text: str) -> Document:
    """Parses ``text``'s frontmatter; :class:`FrontmatterError` when there is none or it is not a YAML mapping."""
    lines = text.splitlines(keepends=True)
    if not lines or lines[0].rstrip("\r\n").rstrip() != "---":
        raise FrontmatterError("no frontmatter (the file does not start with a --- line)")
    newline = "\r\n" if lines[0].endswith("\r\n") else "\n"
    for i in range(1, len(lines)):
        if lines[i].rstrip("\r\n").rstrip() in ("---", "..."):
            break
    else:
        raise FrontmatterError("frontmatter is not closed (no second --- line)")
    fm = "".join(lines[1:i])
    try:
        data = yaml.load(fm, Loader=_Loader)
    except yaml.YAMLError as e:
        raise FrontmatterError(f"frontmatter does not parse: {_yaml_reason(e)}") from None
    except (ValueError, OverflowError, RecursionError) as e:
        # Well-formed YAML whose value cannot be built: a date that does not exist (2026-02-30), a
        # number out of range, nesting deeper than the parser's recursion.
        raise FrontmatterError(f"frontmatter has a value that cannot be read: {str(e)[:120]}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise FrontmatterError(f"frontmatter is a {type(data).__name__}, not a mapping of keys")
    return Document(lines[0], fm, lines[i], "".join(lines[i + 1 :]), newline, data)


def _yaml_reason(e: yaml.YAMLError) -> str:
    mark = getattr(e, "problem_mark", None)
    problem = getattr(e, "problem", None) or type(e).__name__
    return f"{problem} at line {mark.line + 2}" if mark is not None else str(problem)


def new_document(owned: Mapping[str, object], body: str, newline: str = "\n") -> str:
    fm = "".join(_dump_entry(k, v, newline) for k, v in owned.items())
    return f"---{newline}{fm}---{newline}{body}"


def update_frontmatter(doc: Document, owned: Mapping[str, object]) -> str:
    """``doc``'s frontmatter text with the owned keys set to ``owned``; everything else as it was.

    Each owned key's lines are replaced where they stand (a second occurrence of one is dropped) and
    the owned keys the file lacks are appended, so a person's keys keep their place, form and comments.
    The result is parsed again and must give the owned values and the person's values unchanged, else
    :class:`FrontmatterError` (say, an alias in a person's key that pointed into an owned one).
    """
    nl = doc.newline
    lines = doc.frontmatter.splitlines(keepends=True)
    try:
        node = yaml.compose(doc.frontmatter, Loader=_Loader)
    except yaml.YAMLError as e:  # parsed a moment ago; composing cannot disagree, but say so if it does
        raise FrontmatterError(f"frontmatter does not parse: {_yaml_reason(e)}") from None
    replaced: dict[int, str] = {}  # first line of an owned entry -> its new text
    dropped: set[int] = set()
    seen: set[str] = set()
    if node is not None:
        if not isinstance(node, yaml.MappingNode) or node.flow_style:
            raise FrontmatterError("frontmatter is a one-line {...} mapping; lobwife edits block mappings only")
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.value not in owned:
                continue
            if key_node.start_mark.column != 0:
                raise FrontmatterError("frontmatter keys are indented; lobwife edits top-level keys at column 0")
            start = key_node.start_mark.line
            end = value_node.end_mark.line + (1 if value_node.end_mark.column > 0 else 0)
            # Blank and comment lines after an entry belong to what follows it: keep them.
            while end > start + 1 and (not lines[end - 1].strip() or lines[end - 1].lstrip().startswith("#")):
                end -= 1
            key = key_node.value
            if key in seen:
                replaced[start] = ""
            else:
                replaced[start] = _dump_entry(key, owned[key], nl)
                seen.add(key)
            dropped.update(range(start + 1, end))
    out: list[str] = []
    for i, line in enumerate(lines):
        if i in replaced:
            out.append(replaced[i])
        elif i not in dropped:
            out.append(line)
    if out and not out[-1].endswith(("\n", "\r")):
        out[-1] += nl
    out.extend(_dump_entry(k, v, nl) for k, v in owned.items() if k not in seen)
    text = "".join(out)
    _check_rewrite(doc.data, text, owned)
    return text


def _check_rewrite(before: Mapping[str, Any], text: str, owned: Mapping[str, object]) -> None:
    try:
        after = yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as e:
        raise FrontmatterError(f"rewriting the owned keys would break the frontmatter: {_yaml_reason(e)}") from None
    if not isinstance(after, dict):
        raise FrontmatterError("rewriting the owned keys would break the frontmatter")
    for k, v in owned.items():
        if after.get(k, object()) != v:
            raise FrontmatterError(f"rewriting the owned keys would not give {k!r} its value")
    for k, v in before.items():
        if k in owned or v != v:  # NaN is not equal to itself (and is kept as written)
            continue
        if k not in after or after[k] != v:
            raise FrontmatterError(f"rewriting the owned keys would change a person's key {k!r}")


def _same(a: object, b: object) -> bool:
    """Equal and of the same types (``True == 1`` in Python; in the file they differ)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def update_document(text: str, owned: Mapping[str, object], doc: Document | None = None) -> str:
    """``text`` with its owned frontmatter keys set to ``owned``; body and a person's keys kept.

    ``doc``: ``text`` already split (:func:`split_document`), so that a caller who read it is not parsed twice.
    """
    if doc is None:
        doc = split_document(text)
    # The common case of a full rebuild: nothing to change, and no need to edit the lines.
    if all(k in doc.data and _same(doc.data[k], v) for k, v in owned.items()):
        return text
    return doc.head + update_frontmatter(doc, owned) + doc.tail + doc.body


# --- overview ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class OverviewEntry:
    """What the overview needs of one task."""

    number: int
    status: str
    updated: str | None
    completed: str | None


def overview_entry(number: int, data: Mapping[str, Any]) -> OverviewEntry | None:
    """A task file's owned values as an :class:`OverviewEntry` (None when its status is not one)."""
    status = data.get("status")
    if status not in FOLDER_OF:
        return None

    def text(v: object) -> str | None:
        if isinstance(v, datetime):
            return v.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if v.tzinfo else v.strftime("%Y-%m-%dT%H:%M:%SZ")
        if isinstance(v, date):
            return v.isoformat()
        return v if isinstance(v, str) else None

    return OverviewEntry(number, str(status), text(data.get("updated")), text(data.get("completed")))


def overview_values(entries: Iterable[OverviewEntry], recent: int = RECENT_COMPLETIONS) -> dict[str, object]:
    counts = dict.fromkeys(STATUSES, 0)
    done: list[OverviewEntry] = []
    newest: str | None = None
    total = 0
    for e in entries:
        total += 1
        counts[e.status] += 1
        if e.status == "completed":
            done.append(e)
        if e.updated is not None and (newest is None or e.updated > newest):
            newest = e.updated
    done.sort(key=lambda e: (e.completed or "", e.number), reverse=True)
    values: dict[str, object] = {"total": total, **counts}
    values["recent_completions"] = [f"[[T{e.number}]]" for e in done[:recent]]
    values["updated"] = newest
    assert tuple(values) == OVERVIEW_KEYS
    return values


def overview_body() -> str:
    """The overview's body when it is new: the counts inline and ready Dataview queries."""
    d = TASKS_DIR
    fence = "```"
    return (
        "# Tasks\n"
        "\n"
        "<!-- lobwife keeps this page's frontmatter up to date (see docs/vault.md); the body is yours. -->\n"
        "\n"
        "Queued `= this.queued` · active `= this.active` · blocked `= this.blocked` · "
        "completed `= this.completed` · failed `= this.failed` · cancelled `= this.cancelled` "
        "(of `= this.total`)\n"
        "\n"
        "## In progress\n"
        "\n"
        f"{fence}dataview\n"
        "TABLE status, priority, assigned_to, updated\n"
        f'FROM "{d}/active"\n'
        "SORT updated DESC\n"
        f"{fence}\n"
        "\n"
        "## Recently completed\n"
        "\n"
        f"{fence}dataview\n"
        "TABLE completed, type, assigned_to\n"
        f'FROM "{d}/completed"\n'
        "SORT completed DESC\n"
        "LIMIT 20\n"
        f"{fence}\n"
        "\n"
        "## Failed and cancelled\n"
        "\n"
        f"{fence}dataview\n"
        "TABLE status, updated, assigned_to\n"
        f'FROM "{d}/failed"\n'
        "SORT updated DESC\n"
        "LIMIT 20\n"
        f"{fence}\n"
        "\n"
        "## By status\n"
        "\n"
        f"{fence}dataview\n"
        "TABLE length(rows) AS tasks\n"
        f'FROM "{d}"\n'
        "WHERE task_id\n"
        "GROUP BY status\n"
        f"{fence}\n"
    )


# --- summary pages -----------------------------------------------------------------------------

Scalar = str | int | float | bool | None

_TASK_LINK = re.compile(r"T[0-9]{1,19}")


class TaskLink(str):
    """A cell that links to a task's file (``[[T42]]``); made by lobwife from a task number only."""

    __slots__ = ()

    def __new__(cls, number: int) -> TaskLink:
        text = f"T{int(number)}"
        if not _TASK_LINK.fullmatch(text):
            raise ValueError(f"not a task number: {number!r}")
        return super().__new__(cls, text)


def _cell(v: Scalar) -> str:
    if v is None:
        return ""
    if isinstance(v, TaskLink):
        return f"[[{v}]]"
    if isinstance(v, float):
        return f"{v:.6g}"
    # Clients' text (a finding's title) is shown, never acted on: `[`, `]` and `!` escaped, so no
    # value is a link, a wiki link or an embed (`![](https://...)` would have Obsidian fetch it);
    # backticks too, so none is inline code Dataview would run (`= ...`, `$= ...`).
    text = one_line(str(v), limit=500).replace("\\", "\\\\").replace("|", "\\|")
    return text.replace("[", "\\[").replace("]", "\\]").replace("!", "\\!").replace("`", "\\`")


def _check_rows(columns: Sequence[str], rows: Sequence[Sequence[Scalar]]) -> None:
    for row in rows:
        if len(row) != len(columns):
            raise ValueError(f"a row has {len(row)} cells for {len(columns)} columns")


def _section(heading: str, columns: Sequence[str], rows: Sequence[Sequence[Scalar]], note: str) -> list[str]:
    """One table's lines: an optional ``###`` heading, the table, an optional line under it."""
    out = [f"### {one_line(heading)}", ""] if heading else []
    out.append("| " + " | ".join(_cell(c) for c in columns) + " |")
    out.append("|" + "|".join("---" for _ in columns) + "|")
    out.extend("| " + " | ".join(_cell(v) for v in row) + " |" for row in rows)
    if note:
        out += ["", one_line(note, limit=1000)]
    return out


@dataclass(frozen=True)
class Table:
    """A further table on a summary page (:attr:`TablePage.more`), under its own heading."""

    heading: str
    columns: Sequence[str]
    rows: Sequence[Sequence[Scalar]]
    note: str = ""

    def __post_init__(self) -> None:
        _check_rows(self.columns, self.rows)


@dataclass(frozen=True)
class TablePage:
    """A summary page (``010-tasks/_costs.md``, ``_audits.md``) from plain rows the caller hands over.

    ``summary`` becomes owned frontmatter keys (with ``page`` and ``rows``, the main table's row
    count); the tables are written between :data:`TABLE_BEGIN` and :data:`TABLE_END` and only there,
    so the rest of the body is the people's. Cells, headings and notes are text on one line: ``|``
    (in cells) and ``<`` are escaped, line breaks become spaces, so no value can end the table or
    the marked region. ``heading`` and ``note`` go above and under the main table; ``more`` adds
    tables after it, in the same region.
    """

    name: str
    title: str
    columns: Sequence[str]
    rows: Sequence[Sequence[Scalar]]
    summary: Mapping[str, Scalar] = field(default_factory=dict)
    heading: str = ""
    note: str = ""
    more: Sequence[Table] = ()

    def __post_init__(self) -> None:
        if not PAGE_NAME.fullmatch(self.name):
            raise ValueError(f"page name must match {PAGE_NAME.pattern}, got {self.name!r}")
        for k, v in self.summary.items():
            if not PAGE_KEY.fullmatch(k) or k in ("page", "rows"):
                raise ValueError(f"summary key must match {PAGE_KEY.pattern} and not be page/rows, got {k!r}")
            if not isinstance(v, str | int | float | bool | type(None)):
                raise ValueError(f"summary value for {k!r} must be a scalar, got {type(v).__name__}")
        _check_rows(self.columns, self.rows)

    @property
    def path(self) -> str:
        return f"{TASKS_DIR}/_{self.name}.md"

    def owned(self) -> dict[str, object]:
        return {"page": self.name, "rows": len(self.rows), **self.summary}

    def table(self) -> str:
        lines = [TABLE_BEGIN, *_section(self.heading, self.columns, self.rows, self.note)]
        for t in self.more:
            lines += ["", *_section(t.heading, t.columns, t.rows, t.note)]
        lines.append(TABLE_END)
        return "\n".join(lines) + "\n"

    def new_body(self) -> str:
        return (
            f"# {one_line(self.title)}\n\n"
            "<!-- lobwife rewrites the table between its markers and the frontmatter keys it owns; "
            "the rest is yours. -->\n\n" + self.table()
        )

    def update(self, text: str) -> str:
        """``text`` with the owned keys and the table replaced; FrontmatterError if the markers are gone."""
        doc = split_document(text)
        lines = doc.body.splitlines(keepends=True)
        begin = next((i for i, ln in enumerate(lines) if ln.strip() == TABLE_BEGIN), None)
        end = next((i for i, ln in enumerate(lines) if ln.strip() == TABLE_END), None)
        if begin is None or end is None or end < begin:
            raise FrontmatterError(f"the table markers {TABLE_BEGIN} ... {TABLE_END} are missing")
        table = self.table().replace("\n", doc.newline)
        body = "".join(lines[:begin]) + table + "".join(lines[end + 1 :])
        return doc.head + update_frontmatter(doc, self.owned()) + doc.tail + body
