"""Input rules shared by every service: bounds, references, page sizes, page tokens.

Each limit is stated once here and documented in docs/http.md ("Bounds").
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from google.protobuf import timestamp_pb2
from google.protobuf.message import Message

from lobwife_server.core.errors import ApiError, invalid_argument, not_found
from lobwife_server.core.timeutil import to_us

MAX_NAME = 500
MAX_SHORT = 200  # slug, type, priority, model, assigned_to, workflow, actor, event_type, ...
MAX_DETAIL = 64 * 1024
MAX_REPOS = 100
MAX_REQUEST_ID = 128
MAX_ESTIMATE_MINUTES = 10_000_000
#: A sum of US dollars a client sends (one call's cost, a task's budget) at most.
MAX_USD = 1_000_000.0
INT64_MAX = 2**63 - 1

#: google.protobuf.Timestamp's valid range, 0001-01-01T00:00:00Z .. 9999-12-31T23:59:59.999999999Z.
#: Every timestamp a client sends, over either transport, is held to it (check_timestamp): it
#: also keeps the stored microseconds well inside SQLite's 64-bit integer.
TIMESTAMP_MIN_SECONDS = -62_135_596_800
TIMESTAMP_MAX_SECONDS = 253_402_300_799

_TASK_REF = re.compile(r"^[Tt]?([0-9]{1,19})$")


def parse_task_number(value: str, field: str = "task_id") -> int:
    """``42`` or ``T42`` -> 42. Anything else is INVALID_ARGUMENT naming the field."""
    m = _TASK_REF.match(value.strip()) if value else None
    if m is None:
        raise invalid_argument(field, f"must be a task number like 42 or T42, got {value[:40]!r}")
    number = int(m.group(1))
    if number < 1 or number > INT64_MAX:
        raise invalid_argument(field, f"task number out of range: {value[:40]!r}")
    return number


def check_usd(field: str, value: float) -> float:
    """A sum of US dollars: finite, 0 to MAX_USD (NaN and infinities fail the range test)."""
    if not 0 <= value <= MAX_USD:
        raise invalid_argument(field, f"must be a number of US dollars, 0 to {MAX_USD:,.0f}")
    return float(value)


def check_timestamp(field: str, seconds: int, nanos: int, shown: str | None = None) -> None:
    """INVALID_ARGUMENT naming ``field`` unless (seconds, nanos) is a valid Timestamp.

    ``shown`` is the value as the client wrote it (the HTTP gateway's RFC 3339 text).
    """
    if not TIMESTAMP_MIN_SECONDS <= seconds <= TIMESTAMP_MAX_SECONDS:
        what = f'"{shown[:40]}"' if shown is not None else f"{seconds}s"
        raise invalid_argument(field, f"timestamp {what} is out of range (years 0001-9999)")
    if not 0 <= nanos <= 999_999_999:
        raise invalid_argument(field, f"timestamp nanos must be 0 to 999999999, got {nanos}")


def timestamp_us(field: str, ts: timestamp_pb2.Timestamp) -> int:
    """A client's Timestamp as stored (microseconds), once check_timestamp accepts it."""
    check_timestamp(field, ts.seconds, ts.nanos)
    return to_us(ts)


def task_not_found(number: int) -> ApiError:
    return not_found(f"Task T{number} not found")


#: Control characters (Unicode Cc: C0, DEL, C1). A name or other one-line text refuses them all;
#: multi-line text (an event's detail) allows tab, newline and carriage return.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_CONTROL_IN_LINES = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


def check_chars(field: str, value: str, *, multiline: bool = False, offset: int = 0) -> str:
    """INVALID_ARGUMENT naming ``field`` when ``value`` holds a control character (a NUL, an escape, ...).

    One-line text refuses every control character; ``multiline`` text allows tab,
    newline and carriage return. The error says which character and where (``offset``
    is added to the position: where ``value`` starts in what the client sent).
    """
    # isprintable() is one C pass and true for almost every value; only a value it
    # refuses (a control character, or a merely unprintable one such as U+00A0) is searched.
    if value.isprintable():
        return value
    m = (_CONTROL_IN_LINES if multiline else _CONTROL).search(value)
    if m is not None:
        allowed = "; tab and newline are allowed" if multiline else ""
        raise invalid_argument(
            field,
            f"must not contain control characters: U+{ord(m.group()):04X} at position {m.start() + offset}{allowed}",
        )
    return value


def check_text(
    field: str, value: str | None, limit: int = MAX_SHORT, *, required: bool = False, multiline: bool = False
) -> str | None:
    """Strip and bound a text field; blank means absent (or an error when required).

    Control characters are refused (check_chars); ``multiline`` text may hold tabs and newlines.
    """
    if value is None:
        if required:
            raise invalid_argument(field, "is required")
        return None
    if len(value) > limit:
        raise invalid_argument(field, f"is longer than {limit} characters")
    stripped = value.strip()
    if not stripped:
        if required:
            raise invalid_argument(field, "must not be blank")
        return None
    # Surrounding whitespace (a trailing newline from a shell) is stripped as before; what is kept is checked.
    if not stripped.isprintable():
        check_chars(field, stripped, multiline=multiline, offset=len(value) - len(value.lstrip()))
    return stripped


def check_list(field: str, values: Sequence[str], *, max_items: int = MAX_REPOS, limit: int = MAX_SHORT) -> list[str]:
    if len(values) > max_items:
        raise invalid_argument(field, f"has more than {max_items} items")
    out: list[str] = []
    for i, v in enumerate(values):
        text = v.strip() if len(v) <= limit else None
        if not text:  # the item's field name is only spelled out for the error
            text = check_text(f"{field}[{i}]", v, limit)
            if text is None:
                raise invalid_argument(f"{field}[{i}]", "must not be blank")
        out.append(text)
    return out


# A GitHub repository as ``owner/name``: what the broker scopes tokens to.
_REPO = re.compile(r"[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+")


def check_repos(field: str, values: Sequence[str]) -> list[str]:
    """Repository names (``owner/name``), bounded as check_list bounds a list: the one rule for every repos field."""
    out = check_list(field, values)
    for i, repo in enumerate(out):
        owner, _, name = repo.partition("/")
        if _REPO.fullmatch(repo) is None or owner in (".", "..") or name in (".", ".."):
            raise invalid_argument(
                f"{field}[{i}]", f"must be a repository as owner/name (letters, digits, . - _), got {repo[:40]!r}"
            )
    return out


@dataclass(frozen=True, slots=True)
class PageBounds:
    """A list's page size: what 0 means, and what a larger request is cut to."""

    default: int
    maximum: int


#: Every list's page size, keyed by its request type: the one table (docs/http.md, "Bounds",
#: repeats it). A list RPC that is built gets its row; tests/unit/core checks none is missing.
PAGE_SIZES: Mapping[str, PageBounds] = MappingProxyType(
    {
        "lobwife.v1.ListTasksRequest": PageBounds(default=100, maximum=500),
        "lobwife.v1.ListTaskEventsRequest": PageBounds(default=100, maximum=1000),
        "lobwife.v1.ListJobsRequest": PageBounds(default=100, maximum=1000),
        "lobwife.v1.ListJobRunsRequest": PageBounds(default=50, maximum=500),
        "lobwife.v1.ListTokenAuditRequest": PageBounds(default=100, maximum=1000),
        "lobwife.v1.ListFindingsRequest": PageBounds(default=100, maximum=500),
        "lobwife.v1.ListCostsRequest": PageBounds(default=100, maximum=1000),
    }
)


def request_page_size(req: Message) -> int:
    """The page size of a list request (its ``page_size`` field), by the request type's row of PAGE_SIZES."""
    bounds = PAGE_SIZES[req.DESCRIPTOR.full_name]
    return page_size(req.page_size, default=bounds.default, maximum=bounds.maximum)  # type: ignore[attr-defined]


def page_size(value: int, *, default: int, maximum: int, field: str = "page_size") -> int:
    """AIP-158: negative is an error, 0 means the default, above the maximum is coerced."""
    if value < 0:
        # Over HTTP this field is the `limit` query parameter (its JSON name).
        raise invalid_argument(field, "must not be negative (`limit` over HTTP)")
    if value == 0:
        return default
    return min(value, maximum)


class PageTokens:
    """Opaque, signed page tokens bound to the filters of the request that made them.

    A token carries the position (the last id returned) and a digest of the
    filters; it is HMAC-signed with a per-database secret so that a forged or
    garbled token, or one reused with other filters, is refused rather than
    silently returning the wrong page.
    """

    def __init__(self, secret: bytes) -> None:
        self._secret = secret
        # (kind, filters) -> digest: a list pages with the same few filter sets over
        # and over. Bounded: cleared when full.
        self._digests: dict[tuple[object, ...], str] = {}

    def _sig(self, payload: bytes) -> bytes:
        return hmac.digest(self._secret, payload, "sha256")[:16]

    def _filters_digest(self, kind: str, filters: Sequence[object]) -> str:
        key = (kind, *filters)
        try:
            digest = self._digests.get(key)
        except TypeError:  # an unhashable filter value: compute, do not cache
            digest, key = None, ()
        if digest is None:
            raw = json.dumps([kind, *filters], separators=(",", ":"), default=str).encode()
            digest = hashlib.sha256(raw).hexdigest()[:16]
            if key:
                if len(self._digests) >= 1024:
                    self._digests.clear()
                self._digests[key] = digest
        return digest

    def after(self, kind: str, filters: Sequence[object], rows: Sequence[Any], size: int) -> str:
        """A list's ``next_page_token``: rows were read with a limit of ``size + 1`` (each with an ``id``);
        "" when that extra row did not come, else a token after the page's last row."""
        return self.make(kind, filters, rows[size - 1].id) if len(rows) > size else ""

    def make(self, kind: str, filters: Sequence[object], last_id: int) -> str:
        # The same bytes json.dumps({"k": kind, "f": digest, "p": last_id}) spells
        # (kind and digest are plain ASCII identifiers), without its overhead.
        payload = b'{"k": "%s", "f": "%s", "p": %d}' % (
            kind.encode(),
            self._filters_digest(kind, filters).encode(),
            last_id,
        )
        return base64.urlsafe_b64encode(payload + self._sig(payload)).decode().rstrip("=")

    def parse(self, token: str, kind: str, filters: Sequence[object], field: str = "page_token") -> int | None:
        """The position in ``token``, None for an empty token, or INVALID_ARGUMENT."""
        if not token:
            return None
        if len(token) > 512:
            raise invalid_argument(field, "is not a valid page token")
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        except (ValueError, TypeError):
            raise invalid_argument(field, "is not a valid page token") from None
        payload, sig = raw[:-16], raw[-16:]
        if len(raw) <= 16 or not hmac.compare_digest(sig, self._sig(payload)):
            raise invalid_argument(field, "is not a valid page token")
        data = json.loads(payload)
        if data.get("k") != kind:
            raise invalid_argument(field, "belongs to another list")
        if data.get("f") != self._filters_digest(kind, filters):
            raise invalid_argument(field, "was made for other filters; repeat the request's filters or start over")
        position = data.get("p")
        if not isinstance(position, int):
            raise invalid_argument(field, "is not a valid page token")
        return position
