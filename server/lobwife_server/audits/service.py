"""AuditService: findings the audit jobs report and people resolve.

A finding is known by its fingerprint (given, or a digest of category, subject and title):

- reported while **open**: counted (``count`` + 1, ``last_seen_at``), no new row, no event: the
  audit job that runs every hour would otherwise bury the trail;
- reported after it was **resolved**: reopened (status ``open``, the resolution cleared) with a
  ``reopened`` event that says what the resolution was;
- reported after **won't fix**: counted only. Someone decided it stays; a daily audit reopening
  it every day would make the decision worthless (ResolveFinding with ``open`` reopens it).

Every change (created, updated, resolved, wont_fix, reopened) is a finding event, in the write
that makes the change. A change that changes nothing writes nothing. ``request_id`` makes a
report idempotent: a retry answers what the first attempt did, without counting again.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

import grpc

from lobwife import enums
from lobwife.v1 import audits_pb2
from lobwife_server.api.fields import UpdateMask
from lobwife_server.api.rpc import CallContext
from lobwife_server.core.errors import ApiError, invalid_argument, not_found
from lobwife_server.core.timeutil import now_us, set_ts
from lobwife_server.core.validation import (
    MAX_DETAIL,
    MAX_NAME,
    MAX_REQUEST_ID,
    MAX_SHORT,
    PageTokens,
    check_text,
    parse_task_number,
    request_page_size,
    timestamp_us,
)
from lobwife_server.storage import audit_store
from lobwife_server.storage.audit_store import FindingFilter, FindingRow, NewFinding
from lobwife_server.storage.database import WriteContext
from lobwife_server.storage.interfaces import AuditStore, Conn, Storage

_SEVERITY = audits_pb2.Severity.DESCRIPTOR
_STATUS = audits_pb2.FindingStatus.DESCRIPTOR
#: The severity of a finding reported without one.
DEFAULT_SEVERITY = audits_pb2.SEVERITY_MEDIUM
#: GetFinding's events: the newest this many.
MAX_EVENTS_SHOWN = 100
#: ``T42`` as a subject is task 42 (a bare number is free text: it could be anything).
_TASK_SUBJECT = re.compile(r"[Tt]([0-9]{1,18})")

_UPDATE_MASK = UpdateMask(audits_pb2.Finding.DESCRIPTOR, audit_store.UPDATABLE, request_only=("actor", "update_mask"))


def _severity(value: int, field: str) -> int:
    if value == 0:
        return DEFAULT_SEVERITY
    if enums.short_name(_SEVERITY, value) is None:
        names = ", ".join(n for n in enums.short_names(_SEVERITY).values() if n)
        raise invalid_argument(field, f"must be one of {names}")
    return value


def _status_word(value: int, field: str) -> str:
    word = enums.short_name(_STATUS, value)
    if word is None:
        raise invalid_argument(field, f"must be one of {', '.join(audit_store.STATUSES)}")
    return word


def default_fingerprint(category: str, subject: str, title: str) -> str:
    """The fingerprint of a report that gives none: category, subject and title, hashed."""
    raw = "\x1f".join((category, subject, title)).encode()
    return hashlib.sha256(raw).hexdigest()[:32]


def _not_found(finding_id: int) -> ApiError:
    return not_found(f"Finding {finding_id} not found")


def _to_proto(row: FindingRow, out: audits_pb2.Finding | None = None) -> audits_pb2.Finding:
    f = out if out is not None else audits_pb2.Finding()
    f.id = row.id
    if row.task_number is not None:
        f.task_id = row.task_number
    f.severity = row.severity  # type: ignore[assignment]
    f.category = row.category
    f.title = row.title
    f.detail = row.detail
    f.status = enums.lookup(_STATUS)[row.status]  # type: ignore[assignment]
    f.resolution = row.resolution
    if row.resolved_by is not None:
        f.resolved_by = row.resolved_by
    set_ts(f.created_at, row.created_at)
    set_ts(f.updated_at, row.updated_at)
    if row.resolved_at is not None:
        set_ts(f.resolved_at, row.resolved_at)
    f.subject = row.subject
    f.source = row.source
    f.fingerprint = row.fingerprint
    f.count = row.count
    set_ts(f.last_seen_at, row.last_seen_at)
    f.note = row.note
    return f


class AuditService:
    """AuditService RPCs over the audit store."""

    def __init__(self, db: Storage, page_tokens: PageTokens, store: AuditStore = audit_store) -> None:
        self.db = db
        self.tokens = page_tokens
        self.store = store

    # -- validation -----------------------------------------------------------------------------

    def _subject(self, value: str, field: str) -> tuple[str, int | None]:
        subject = check_text(field, value, MAX_SHORT) or ""
        m = _TASK_SUBJECT.fullmatch(subject)
        if m is None:
            return subject, None
        number = int(m.group(1))
        return f"T{number}", number

    def _new(self, f: audits_pb2.Finding) -> NewFinding:
        category = check_text("finding.category", f.category, MAX_SHORT, required=True)
        title = check_text("finding.title", f.title, MAX_NAME, required=True)
        assert category is not None and title is not None
        subject, number = self._subject(f.subject, "finding.subject")
        fingerprint = check_text("finding.fingerprint", f.fingerprint, MAX_SHORT)
        return NewFinding(
            fingerprint=fingerprint or default_fingerprint(category, subject, title),
            category=category,
            severity=_severity(f.severity, "finding.severity"),
            title=title,
            detail=check_text("finding.detail", f.detail, MAX_DETAIL, multiline=True) or "",
            subject=subject,
            task_number=number,
            source=check_text("finding.source", f.source, MAX_SHORT) or "",
        )

    def _check_task(self, conn: Conn, number: int | None, field: str) -> None:
        if number is not None and not self.store.task_exists(conn, number):
            raise invalid_argument(field, f"names task T{number}, which does not exist")

    # -- RPCs -----------------------------------------------------------------------------------

    async def CreateFinding(
        self, req: audits_pb2.CreateFindingRequest, ctx: CallContext
    ) -> audits_pb2.CreateFindingResponse:
        new = self._new(req.finding)
        request_id = check_text("request_id", req.request_id, MAX_REQUEST_ID)
        # What the request asks, hashed: a reused request_id must come with the same report.
        request_fp = hashlib.blake2b(repr(new).encode(), digest_size=16).digest()
        actor = ctx.caller()
        now = now_us()

        def write(conn: Conn, w: WriteContext) -> tuple[FindingRow, bool, bool]:
            if request_id is not None:
                seen = self.store.find_request(conn, request_id)
                if seen is not None:
                    finding_id, fp, created, reopened = seen
                    if fp != request_fp:
                        desc = (
                            f"{request_id[:40]!r} was already used for finding {finding_id} with a different"
                            " report; a retry must repeat the report as it was"
                        )
                        raise ApiError(
                            grpc.StatusCode.ALREADY_EXISTS,
                            f"request_id: {desc}",
                            violations=[("request_id", desc)],
                            reason="REQUEST_ID_REUSED",
                        )
                    row = self.store.get_finding(conn, finding_id)
                    assert row is not None
                    return row, created, reopened
            self._check_task(conn, new.task_number, "finding.subject")
            row = self.store.find_by_fingerprint(conn, new.fingerprint)
            created = reopened = False
            if row is None:
                row = self.store.insert_finding(conn, new, now)
                self.store.insert_event(conn, row.id, "created", actor, f"{new.category}: {new.title}", now)
                created = True
            elif row.status == "resolved":
                was = row.resolution or "no resolution given"
                row = self.store.count_report(conn, row.id, now, reopen=True)
                self.store.insert_event(
                    conn, row.id, "reopened", actor, f"reported again after it was resolved ({was})", now
                )
                reopened = True
            else:
                row = self.store.count_report(conn, row.id, now, reopen=False)
            if request_id is not None:
                self.store.insert_request(conn, request_id, row.id, request_fp, created, reopened, now)
            return row, created, reopened

        row, created, reopened = await self.db.write(write)
        if not created:
            ctx.http_status = 200  # counted on a finding that exists: nothing was created
        return audits_pb2.CreateFindingResponse(finding=_to_proto(row), created=created, reopened=reopened)

    async def GetFinding(self, req: audits_pb2.GetFindingRequest, ctx: CallContext) -> audits_pb2.GetFindingResponse:
        finding_id = req.id

        def read(conn: Conn) -> tuple[FindingRow | None, list[audit_store.FindingEventRow]]:
            row = self.store.get_finding(conn, finding_id)
            events = self.store.list_events(conn, finding_id, MAX_EVENTS_SHOWN) if row is not None else []
            return row, events

        row, events = await self.db.read(read)
        if row is None:
            raise _not_found(finding_id)
        resp = audits_pb2.GetFindingResponse(finding=_to_proto(row))
        for e in events:
            out = resp.events.add(id=e.id, kind=e.kind, actor=e.actor, detail=e.detail)
            set_ts(out.created_at, e.created_at)
        return resp

    async def ListFindings(
        self, req: audits_pb2.ListFindingsRequest, ctx: CallContext
    ) -> audits_pb2.ListFindingsResponse:
        task_ref = check_text("task_id", req.task_id, MAX_SHORT)
        # A subject `T42` is matched as stored (normalised); `task_id` is the task filter.
        subject, _ = self._subject(req.subject, "subject")
        flt = FindingFilter(
            status=_status_word(req.status, "status") if req.status else None,
            min_severity=_severity(req.min_severity, "min_severity") if req.min_severity else None,
            task_number=parse_task_number(task_ref, "task_id") if task_ref else None,
            category=check_text("category", req.category, MAX_SHORT),
            subject=subject or None,
            seen_since=timestamp_us("since", req.since) if req.HasField("since") else None,
        )
        size = request_page_size(req)
        filters = [flt.status, flt.min_severity, flt.task_number, flt.category, flt.subject, flt.seen_since]
        before = self.tokens.parse(req.page_token, "findings", filters)
        rows = await self.db.read(lambda c: self.store.list_findings(c, flt, before, size + 1))
        resp = audits_pb2.ListFindingsResponse()
        for row in rows[:size]:
            _to_proto(row, resp.findings.add())
        resp.next_page_token = self.tokens.after("findings", filters, rows, size)
        return resp

    async def UpdateFinding(
        self, req: audits_pb2.UpdateFindingRequest, ctx: CallContext
    ) -> audits_pb2.UpdateFindingResponse:
        f = req.finding
        finding_id = f.id
        if finding_id <= 0:
            raise invalid_argument("finding.id", "is required")
        paths = _UPDATE_MASK.paths(req.update_mask) if req.HasField("update_mask") else []
        if not paths:
            raise invalid_argument("update_mask", f"name at least one of {', '.join(audit_store.UPDATABLE)}")
        values: dict[str, Any] = {}
        for path in paths:
            if path == "severity":
                values["severity"] = _severity(f.severity, "finding.severity")
            elif path == "title":
                values["title"] = check_text("finding.title", f.title, MAX_NAME, required=True)
            elif path == "detail":
                values["detail"] = check_text("finding.detail", f.detail, MAX_DETAIL, multiline=True) or ""
            elif path == "subject":
                values["subject"], values["task_number"] = self._subject(f.subject, "finding.subject")
            elif path == "source":
                values["source"] = check_text("finding.source", f.source, MAX_SHORT) or ""
        actor = check_text("actor", req.actor, MAX_SHORT) or ctx.caller()
        now = now_us()

        def write(conn: Conn, w: WriteContext) -> FindingRow:
            row = self.store.get_finding(conn, finding_id)
            if row is None:
                raise _not_found(finding_id)
            changed = {k: v for k, v in values.items() if getattr(row, k) != v}
            if not changed:
                return row  # nothing changes: no event, updated_at stays
            if "task_number" in changed:
                self._check_task(conn, changed["task_number"], "finding.subject")
            row_after = self.store.update_finding(conn, finding_id, changed, now)
            shown = [
                f"{k}: {_shown(k, getattr(row, k))} -> {_shown(k, v)}" for k, v in changed.items() if k != "task_number"
            ]
            self.store.insert_event(conn, finding_id, "updated", actor, "; ".join(shown), now)
            return row_after

        row = await self.db.write(write)
        return audits_pb2.UpdateFindingResponse(finding=_to_proto(row))

    async def ResolveFinding(
        self, req: audits_pb2.ResolveFindingRequest, ctx: CallContext
    ) -> audits_pb2.ResolveFindingResponse:
        finding_id = req.id
        status = _status_word(req.status, "status") if req.status else "resolved"
        resolution = check_text("resolution", req.resolution, MAX_NAME) or ""
        note = check_text("note", req.note, MAX_DETAIL, multiline=True) or ""
        if status == "open" and (resolution or note):
            raise invalid_argument("resolution", "a finding reopened (status open) takes no resolution or note")
        actor = check_text("actor", req.actor, MAX_SHORT) or ctx.caller()
        now = now_us()

        def write(conn: Conn, w: WriteContext) -> FindingRow:
            row = self.store.get_finding(conn, finding_id)
            if row is None:
                raise _not_found(finding_id)
            if row.status == status and (status == "open" or (row.resolution, row.note) == (resolution, note)):
                return row  # already so: nothing written
            was = row.status
            row = self.store.set_status(conn, finding_id, status, resolution, note, actor, now)
            kind = "reopened" if status == "open" else status
            detail = f"was {was}" + (f": {resolution}" if resolution else "")
            self.store.insert_event(conn, finding_id, kind, actor, detail, now)
            return row

        row = await self.db.write(write)
        return audits_pb2.ResolveFindingResponse(finding=_to_proto(row))


def _shown(field: str, value: object) -> str:
    if field == "severity" and isinstance(value, int):
        return enums.short_name(_SEVERITY, value) or str(value)
    text = str(value)
    return repr(text[:60] + "..." if len(text) > 60 else text)


__all__ = ["AuditService", "default_fingerprint"]
