"""When a job fires: parsing, validating and computing the slots of a schedule.

A schedule is a 5- or 6-field cron expression in a time zone, a fixed interval
from an anchor, or a one-off time. Everything here is pure and quick: the
scheduler computes the next slot of every job at start-up.

Cron fields are matched by APScheduler's ``CronTrigger``, but only on a plain
wall-clock calendar (the trigger runs in UTC, fed local wall times): two of its
rules differ from cron's and are compensated here. Its day-of-week counts from
Monday = 0 (cron: Sunday = 0 or 7), so day-of-week is parsed here and handed
over in its numbering; it ANDs day-of-month and day-of-week (cron ORs them when
both are restricted), so such an expression becomes two triggers whose next
times are merged. Daylight saving is handled here, not by the trigger, because
APScheduler runs a wall-clock time twice at fall-back and runs a time the clock
skips at the old offset (an hour late) without saying so. The policy is in
docs/scheduling.md; in short:

* A local time that occurs twice fires once, at its first occurrence, unless
  the hour field is every hour (``*/15 * * * *``): such a job follows real
  time and fires in both passes through the repeated hour.
* A local time that the clock skips is never dropped. Every-hour jobs fire at
  the instant it would have been under the old offset (02:15 EST is 03:15 EDT,
  which is a slot anyway); other jobs fire once at the first instant after the
  gap (03:00), and the slot says so in ``note``.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any, Final, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from apscheduler.triggers.cron import CronTrigger

from lobwife_server.core.errors import invalid_argument

MAX_CRON_LENGTH: Final = 256
MAX_TIME_ZONE_LENGTH: Final = 64
MIN_INTERVAL: Final = timedelta(seconds=1)
MAX_INTERVAL: Final = timedelta(days=366)
# A zero Timestamp is 1970-01-01T00:00:00Z: refusing it catches an unset run_at.
MIN_RUN_AT: Final = datetime(1970, 1, 1, 0, 0, 1, tzinfo=UTC)
MAX_RUN_AT: Final = datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)
MAX_PREVIEW: Final = 100

ScheduleKind = Literal["cron", "interval", "once"]

_EPS: Final = timedelta(microseconds=1)
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_SECOND: Final = timedelta(seconds=1)
# Measured over every zone in the tz database from 1970 to 2100: the largest
# offset change is 24 h (date-line moves such as Pacific/Apia in 2011) and
# changes are at least 7 days apart. So a 2-day window holds at most one change
# (comparing its two ends finds it), and a time 25 h after a change is past
# every gap or overlap that change made.
_SCAN: Final = timedelta(days=2)
_LOOKBACK: Final = timedelta(hours=25)


# --------------------------------------------------------------------------- public types


@dataclass(frozen=True, slots=True)
class Slot:
    """One time a job is due.

    ``at`` is aware UTC; ``local`` is the same instant in the job's zone.
    ``shifted`` is true when the slot stands for a local time that did not
    exist (spring-forward); ``note`` then says which, and also marks a local
    time that occurred twice and fired only once.
    """

    at: datetime
    local: datetime
    shifted: bool = False
    note: str | None = None


@dataclass(frozen=True, slots=True)
class SlotWindow:
    """The slots of a time window, earliest first; ``truncated`` when more existed past ``limit``."""

    slots: tuple[Slot, ...]
    truncated: bool


@dataclass(frozen=True, slots=True)
class Schedule:
    """A validated schedule. Build it with :func:`parse`.

    Exactly one of ``cron``, ``interval`` (with ``anchor``) and ``run_at`` is
    set, matching ``kind``. ``cron`` is the expression as given (stripped).
    """

    kind: ScheduleKind
    time_zone: str
    zone: ZoneInfo
    cron: str | None = None
    interval: timedelta | None = None
    anchor: datetime | None = None
    run_at: datetime | None = None
    _matcher: _Cron | None = field(default=None, repr=False, compare=False)

    @property
    def wall_clock(self) -> bool:
        """For a cron schedule: whether its hour field is restricted (DST rules for named times apply)."""
        return self._matcher is not None and not self._matcher.every_hour


# --------------------------------------------------------------------------- parsing


def parse(
    *,
    cron: str | None = None,
    interval_seconds: float | None = None,
    run_at: datetime | None = None,
    time_zone: str | None = None,
    anchor: datetime,
    prefix: str = "",
) -> Schedule:
    """Validate a schedule; exactly one of ``cron``, ``interval_seconds`` and ``run_at``.

    ``time_zone`` is an IANA name; empty or None means UTC. ``anchor`` is what
    an interval counts from (the first slot is ``anchor + interval``); it is
    ignored otherwise. Naive datetimes are taken as UTC (protobuf's
    ``Timestamp.ToDatetime()`` returns naive UTC).

    Bad input raises ``errors.invalid_argument`` naming the field (``cron``,
    ``interval``, ``run_at``, ``time_zone``; ``trigger`` when not exactly one
    is given), each prefixed by ``prefix + "."`` when ``prefix`` is set.
    """

    def name(f: str) -> str:
        return f"{prefix}.{f}" if prefix else f

    given = [k for k, v in (("cron", cron), ("interval", interval_seconds), ("run_at", run_at)) if v is not None]
    if len(given) != 1:
        got = "none" if not given else " and ".join(given)
        raise invalid_argument(name("trigger"), f"give exactly one of cron, interval or run_at (got {got})")
    zone_name, zone = _parse_zone(time_zone, name("time_zone"))
    if cron is not None:
        expr = cron.strip()
        matcher = _parse_cron(expr, name("cron"))
        return Schedule("cron", zone_name, zone, cron=expr, _matcher=matcher)
    if interval_seconds is not None:
        return Schedule(
            "interval",
            zone_name,
            zone,
            interval=_parse_interval(interval_seconds, name("interval")),
            anchor=_utc(anchor),
        )
    assert run_at is not None
    return Schedule("once", zone_name, zone, run_at=_parse_run_at(run_at, name("run_at")))


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _parse_zone(value: str | None, fname: str) -> tuple[str, ZoneInfo]:
    if not value:
        return "UTC", ZoneInfo("UTC")
    if len(value) > MAX_TIME_ZONE_LENGTH:
        raise invalid_argument(fname, f"is longer than {MAX_TIME_ZONE_LENGTH} characters; expected an IANA zone name")
    # "localtime" is whatever the host's clock says: a job must not change hours with the machine it runs on.
    if value != "localtime":
        try:
            return value, ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError, OSError):
            pass
    hint = _zone_hint(value)
    raise invalid_argument(
        fname,
        f"unknown time zone {value!r}: expected an IANA name such as 'UTC' or 'Europe/London'"
        + (f" (did you mean {hint!r}?)" if hint else ""),
    )


@lru_cache(maxsize=1)
def _zones_by_folded_name() -> Mapping[str, str]:
    return {z.casefold(): z for z in available_timezones() if z != "localtime"}


def _zone_hint(value: str) -> str | None:
    return _zones_by_folded_name().get(value.strip().replace(" ", "_").casefold())


def _parse_interval(seconds: float, fname: str) -> timedelta:
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) or not math.isfinite(seconds):
        raise invalid_argument(fname, f"must be a number of seconds, got {seconds!r}")
    # Whole microseconds, so that slot arithmetic is exact.
    value = timedelta(microseconds=round(seconds * 1_000_000)) if abs(seconds) < 1e12 else MAX_INTERVAL * 2
    if value < MIN_INTERVAL:
        raise invalid_argument(fname, f"must be at least 1s, got {_seconds_text(seconds)}")
    if value > MAX_INTERVAL:
        raise invalid_argument(
            fname, f"must be at most 366 days ({int(MAX_INTERVAL.total_seconds())}s), got {_seconds_text(seconds)}"
        )
    return value


def _seconds_text(seconds: float) -> str:
    return f"{seconds:.6f}".rstrip("0").rstrip(".") + "s"


def _parse_run_at(value: datetime, fname: str) -> datetime:
    if not isinstance(value, datetime):
        raise invalid_argument(fname, f"must be a time, got {type(value).__name__}")
    try:
        at = _utc(value)
    except (OverflowError, ValueError):
        raise invalid_argument(fname, "is not a representable time") from None
    if not MIN_RUN_AT <= at <= MAX_RUN_AT:
        unset = " (an unset timestamp?)" if at == _EPOCH else ""
        raise invalid_argument(
            fname, f"must be between 1970-01-01T00:00:01Z and 9999-12-31T23:59:59Z, got {_iso(at)}{unset}"
        )
    return at


# --------------------------------------------------------------------------- cron expressions


@dataclass(frozen=True, slots=True)
class _Field:
    name: str
    lo: int
    hi: int
    names: Mapping[str, int]


_MONTH_NAMES = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_MONTHS = {m: i + 1 for i, m in enumerate(_MONTH_NAMES)}
_WEEKDAYS = {d: i for i, d in enumerate(("sun", "mon", "tue", "wed", "thu", "fri", "sat"))}
_SECOND_F = _Field("second", 0, 59, {})
_MINUTE_F = _Field("minute", 0, 59, {})
_HOUR_F = _Field("hour", 0, 23, {})
_DOM_F = _Field("day-of-month", 1, 31, {})
_MONTH_F = _Field("month", 1, 12, _MONTHS)
# 0 and 7 are both Sunday, as in cron; parsed values are folded to 0-6 (Sunday = 0).
_DOW_F = _Field("day-of-week", 0, 7, _WEEKDAYS)
_FIVE: tuple[_Field, ...] = (_MINUTE_F, _HOUR_F, _DOM_F, _MONTH_F, _DOW_F)
_SIX: tuple[_Field, ...] = (_SECOND_F, *_FIVE)
_DIGITS = re.compile(r"[0-9]+")
# Spaces and tabs separate fields; anything else outside these (newlines, NUL, other scripts' digits) is refused
# up front so that the expression stored and shown back is plain text.
_STRAY = re.compile(r"[^A-Za-z0-9*/,\-@?# \t]")
_QUARTZ = re.compile(r"[0-9]*[lw]|l-?[0-9]*|lw|[0-9a-z]*#[0-9]*")
_DAYS_IN_MONTH = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)  # February: leap years count

MACROS: Final[Mapping[str, str]] = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}


def _parse_cron(expr: str, fname: str) -> _Cron:
    def bad(desc: str) -> Exception:
        return invalid_argument(fname, desc)

    if not expr:
        raise bad("must not be blank")
    if len(expr) > MAX_CRON_LENGTH:
        raise bad(f"is longer than {MAX_CRON_LENGTH} characters")
    stray = _STRAY.search(expr)
    if stray:
        raise bad(f"{stray.group()!r} is not part of cron syntax (fields use digits, names, * , - and /)")
    if expr.startswith("@"):
        macro = expr.lower()
        if macro == "@reboot":
            raise bad("@reboot is not a schedule here: set run_on_startup to run a job when the server starts")
        if macro not in MACROS:
            raise bad(f"unknown macro {_short(expr)}: expected one of {', '.join(MACROS)}")
        expr = MACROS[macro]
    parts = expr.split()
    if len(parts) == 5:
        specs, texts = _FIVE, parts
    elif len(parts) == 6:
        specs, texts = _SIX, parts
    else:
        raise bad(
            f"expected 5 fields (minute hour day-of-month month day-of-week) or 6 (second first), got {len(parts)}"
        )
    sets = [_parse_field(f, t, bad) for f, t in zip(specs, texts, strict=True)]
    if len(parts) == 5:
        sets.insert(0, frozenset({0}))
        texts = ["0", *texts]
    seconds, minutes, hours, days, months, weekdays = sets
    # Vixie cron: a day field "is restricted" unless its text starts with '*'.
    # Only when both are restricted does a day match if EITHER matches.
    dom_star, dow_star = texts[3].startswith("*"), texts[5].startswith("*")
    valid_dom = any(d <= _DAYS_IN_MONTH[m - 1] for m in months for d in days)
    if not valid_dom and (dow_star or dom_star):
        raise bad(f"never fires: day-of-month {texts[3]!r} does not occur in month {texts[4]!r}")
    if dom_star or dow_star:
        day_rules = [(days, weekdays)]
    else:
        day_rules = [(days, _ALL_WEEKDAYS), (_ALL_DAYS, weekdays)] if valid_dom else [(_ALL_DAYS, weekdays)]
    triggers = tuple(
        CronTrigger(
            year="*",
            month=_expr(months, 1, 12),
            day=_expr(d, 1, 31),
            week="*",
            # APScheduler numbers weekdays from Monday = 0.
            day_of_week=_expr(frozenset((w + 6) % 7 for w in dows), 0, 6),
            hour=_expr(hours, 0, 23),
            minute=_expr(minutes, 0, 59),
            second=_expr(seconds, 0, 59),
            timezone=UTC,
        )
        for d, dows in day_rules
    )
    return _Cron(triggers, has_seconds=len(parts) == 6, every_hour=len(hours) == 24)


_ALL_WEEKDAYS = frozenset(range(7))
_ALL_DAYS = frozenset(range(1, 32))


def _short(text: str, limit: int = 40) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "...")


def _parse_field(f: _Field, text: str, bad: Callable[[str], Exception]) -> frozenset[int]:
    where = f"{f.name} field {_short(text)}"
    allowed = f"{f.lo}-{f.hi}" + (f" or a name ({', '.join(list(f.names)[:3])}, ...)" if f.names else "")

    def value(token: str) -> int:
        if _DIGITS.fullmatch(token):
            v = int(token)
            if not f.lo <= v <= f.hi:
                raise bad(f"{where}: {v} is out of range {f.lo}-{f.hi}")
            return v
        if token in f.names:
            return f.names[token]
        if token == "?":
            raise bad(f"{where}: '?' is not cron syntax (it is Quartz's); use '*'")
        if _QUARTZ.fullmatch(token):
            raise bad(f"{where}: L, W and # are not supported; use numbers, names, ranges, lists and steps")
        raise bad(f"{where}: {token!r} is not a value; expected {allowed}")

    values: set[int] = set()
    for item in text.lower().split(","):
        if not item:
            raise bad(f"{where}: empty list item")
        base, slash, step_text = item.partition("/")
        step = 1
        if slash:
            if not _DIGITS.fullmatch(step_text):
                raise bad(f"{where}: step {step_text!r} is not a whole number")
            step = int(step_text)
            span = f.hi - f.lo + 1
            if not 1 <= step <= span:
                raise bad(f"{where}: step {step} is out of range 1-{span}")
        if base == "*":
            start, end = f.lo, f.hi
        elif "-" in base:
            a, _, b = base.partition("-")
            if not a or not b or "-" in b:
                raise bad(f"{where}: {base!r} is not a range; expected START-END")
            start, end = value(a), value(b)
            if f is _DOW_F and end == 0 and start > 0:
                end = 7  # "fri-sun": Sunday closes a range as 7
            if start > end:
                raise bad(f"{where}: range {base!r} runs backwards; ranges go from low to high")
        else:
            start = value(base)
            # "5/15" is "5-max/15", as most cron dialects read it.
            end = f.hi if slash else start
        values.update(range(start, end + 1, step))
    if f is _DOW_F and 7 in values:
        values.discard(7)
        values.add(0)
    return frozenset(values)


def _expr(values: frozenset[int], lo: int, hi: int) -> str:
    """APScheduler field text for a set of values: ``*``, a stepped range, or a list of ranges."""
    v = sorted(values)
    if len(v) == hi - lo + 1:
        return "*"
    if len(v) == 1:
        return str(v[0])
    step = v[1] - v[0]
    if all(b - a == step for a, b in itertools.pairwise(v)):
        return f"{v[0]}-{v[-1]}" + (f"/{step}" if step > 1 else "")
    runs: list[str] = []
    start = prev = v[0]
    for x in [*v[1:], None]:
        if x is not None and x == prev + 1:
            prev = x
            continue
        runs.append(str(start) if start == prev else f"{start}-{prev}")
        if x is not None:
            start = prev = x
    return ",".join(runs)


class _Cron:
    """Cron fields on a plain wall-clock calendar.

    Wall times are carried as UTC-aware datetimes holding local clock readings,
    so that arithmetic on them ignores DST; the zone is applied by the caller.
    """

    __slots__ = ("every_hour", "has_seconds", "triggers")

    def __init__(self, triggers: tuple[Any, ...], *, has_seconds: bool, every_hour: bool) -> None:
        self.triggers = triggers
        self.has_seconds = has_seconds
        self.every_hour = every_hour

    def next_wall(self, wall: datetime, inclusive: bool) -> datetime | None:
        """The first matching wall time at or after (inclusive) or after ``wall``."""
        start = wall if inclusive else wall + _EPS
        best: datetime | None = None
        for trigger in self.triggers:
            found: datetime | None = trigger.get_next_fire_time(None, start)
            if found is not None and (best is None or found < best):
                best = found
        return best


# --------------------------------------------------------------------------- slots


def next_slot(schedule: Schedule, after: datetime) -> Slot | None:
    """The first slot strictly after ``after`` (aware); None when there is none (a past one-off)."""
    for slot in _slots(schedule, _aware(after)):
        return slot
    return None


def next_slots(schedule: Schedule, after: datetime, n: int) -> list[Slot]:
    """The first ``n`` (0..MAX_PREVIEW) slots strictly after ``after``: the "next fire times" preview."""
    if not 0 <= n <= MAX_PREVIEW:
        raise ValueError(f"n must be between 0 and {MAX_PREVIEW}, got {n}")
    out: list[Slot] = []
    if n:
        for slot in _slots(schedule, _aware(after)):
            out.append(slot)
            if len(out) == n:
                break
    return out


def slots_between(schedule: Schedule, start: datetime, end: datetime, limit: int) -> SlotWindow:
    """Slots in (start, end], earliest first, at most ``limit`` of them: what was missed during downtime."""
    if limit < 0:
        raise ValueError(f"limit must not be negative, got {limit}")
    end = _aware(end)
    out: list[Slot] = []
    for slot in _slots(schedule, _aware(start)):
        if slot.at > end:
            break
        if len(out) == limit:
            return SlotWindow(tuple(out), truncated=True)
        out.append(slot)
    return SlotWindow(tuple(out), truncated=False)


def describe(schedule: Schedule) -> str:
    """The legacy ``schedule`` text: the cron expression as given, ``every 30s``, ``at 2026-02-16T12:00:00Z``."""
    if schedule.kind == "cron":
        assert schedule.cron is not None
        return schedule.cron
    if schedule.kind == "interval":
        assert schedule.interval is not None
        whole, micro = divmod(schedule.interval // _EPS, 1_000_000)
        return f"every {whole}s" if not micro else f"every {whole}.{micro:06d}".rstrip("0") + "s"
    assert schedule.run_at is not None
    return f"at {_iso(schedule.run_at)}"


def _iso(at: datetime) -> str:
    text = at.astimezone(UTC).replace(tzinfo=None).isoformat()
    return text + "Z"


def _aware(value: datetime) -> datetime:
    # A naive time here is a bug in the caller, not user input: refuse rather than guess.
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("expected an aware datetime")
    return value.astimezone(UTC)


def _slots(schedule: Schedule, after: datetime) -> Iterator[Slot]:
    zone = schedule.zone
    try:
        if schedule.kind == "once":
            assert schedule.run_at is not None
            if schedule.run_at > after:
                yield Slot(schedule.run_at, schedule.run_at.astimezone(zone))
        elif schedule.kind == "interval":
            assert schedule.interval is not None and schedule.anchor is not None
            step, anchor = schedule.interval, schedule.anchor
            # Slots are anchor + k*step for k >= 1; floor division of timedeltas is exact.
            k = max(1, (after - anchor) // step + 1)
            at = anchor + k * step
            while True:
                yield Slot(at, at.astimezone(zone))
                at += step
        else:
            assert schedule._matcher is not None
            yield from _cron_slots(schedule._matcher, zone, after)
    except OverflowError:
        # Past year 9999: there is no next slot.
        return


# --------------------------------------------------------------------------- DST-aware cron walk


def _offset(zone: ZoneInfo, at: datetime) -> timedelta:
    offset = at.astimezone(zone).utcoffset()
    assert offset is not None
    return offset


def _first_change(zone: ZoneInfo, lo: datetime, hi: datetime, base: timedelta) -> datetime | None:
    """The first instant in (lo, hi] whose UTC offset is not ``base`` (the offset at ``lo``), or None."""
    a = lo
    while a < hi:
        b = min(a + _SCAN, hi)
        if _offset(zone, b) != base:
            # Bisect on whole seconds: the tz database changes offsets only on whole seconds.
            lo_s = (a - _EPOCH) // _SECOND
            hi_s = -((_EPOCH - b) // _SECOND)  # ceiling
            while hi_s - lo_s > 1:
                mid = (lo_s + hi_s) // 2
                if _offset(zone, _EPOCH + mid * _SECOND) == base:
                    lo_s = mid
                else:
                    hi_s = mid
            return _EPOCH + hi_s * _SECOND
        a = b
    return None


def _cron_slots(c: _Cron, zone: ZoneInfo, after: datetime) -> Iterator[Slot]:
    start = after
    # Just after a change, slots can come from walls the forward walk has passed
    # (a skipped time mapped at the old offset, or the repeat of an hour): replay
    # the change from just before it and drop what is not after `after`.
    then = after - _LOOKBACK
    base = _offset(zone, then)
    if base != _offset(zone, after):
        change = _first_change(zone, then, after, base)
        if change is not None and after < change + abs(_offset(zone, change) - base):
            start = change - _EPS
    for slot in _walk(c, zone, start):
        if slot.at > after:
            yield slot


def _walk(c: _Cron, zone: ZoneInfo, t: datetime) -> Iterator[Slot]:
    """Every slot strictly after instant ``t``, in order.

    The walk holds an instant ``cur`` and the offset in force there, finds the
    next matching wall time, and checks whether the offset changes before that
    wall time comes round; if it does, the change is handled (gap or overlap)
    and the walk resumes on the other side of it.
    """
    off = _offset(zone, t)
    cur, inclusive = t, False
    skip_below: datetime | None = None  # after a fall-back: walls below this already fired (named-time jobs)
    while True:
        wall = c.next_wall(cur + off, inclusive)
        if wall is not None and skip_below is not None:
            if wall < skip_below:
                wall = c.next_wall(skip_below, True)
            skip_below = None
        if wall is None:
            return
        at = wall - off
        change = _first_change(zone, cur, at, off)
        if change is None:
            yield _plain_slot(c, zone, wall, at)
            cur, inclusive = at, False
            continue
        new = _offset(zone, change)
        if new < off:
            # Fall-back: walls [change+new, change+off) come round a second time.
            if not c.every_hour:
                skip_below = change + off
            cur, inclusive, off = change, True, new
            continue
        gap_start, gap_end = change + off, change + new  # walls the clock skips
        if wall >= gap_end:
            cur, inclusive, off = change, True, new
            continue
        if c.every_hour:
            yield from _every_hour_gap(c, zone, wall, off, new, gap_start, gap_end)
            cur, inclusive, off = change + (new - off), True, new
        else:
            yield _gap_slot(c, zone, wall, change, gap_start, gap_end)
            cur, inclusive, off = change, False, new


def _plain_slot(c: _Cron, zone: ZoneInfo, wall: datetime, at: datetime) -> Slot:
    local = at.astimezone(zone)
    if c.every_hour:
        return Slot(at, local)
    # Named times only: say so when this wall time occurs twice today (it fires at the first).
    naive = wall.replace(tzinfo=None)
    first, second = naive.replace(tzinfo=zone).utcoffset(), naive.replace(tzinfo=zone, fold=1).utcoffset()
    if first is None or second is None or first == second:
        return Slot(at, local)
    change = _first_change(zone, at, at + (first - second), first)
    if change is None:  # pragma: no cover - the zone data disagrees with itself
        return Slot(at, local)
    note = (
        f"{_hm(c, wall)} occurs twice on {wall:%Y-%m-%d} in {zone.key} (clocks go back from "
        f"{_hm(c, change + first)} to {_hm(c, change + second)}); runs once, at the first ({_utc_offset(first)})"
    )
    return Slot(at, local, note=note)


def _gap_slot(
    c: _Cron, zone: ZoneInfo, wall: datetime, change: datetime, gap_start: datetime, gap_end: datetime
) -> Slot:
    """A named-time job whose time(s) fall in a gap: one slot at the first instant after it."""
    missing = [wall]
    nxt = c.next_wall(wall, False)
    while nxt is not None and nxt < gap_end and len(missing) < 4:
        missing.append(nxt)
        nxt = c.next_wall(nxt, False)
    more = nxt is not None and nxt < gap_end
    shown = ", ".join(_hm(c, w) for w in missing[:3]) + (", ..." if more or len(missing) > 3 else "")
    verb = "does" if len(missing) == 1 else "do"
    note = (
        f"shifted: {shown} {verb} not exist on {gap_start:%Y-%m-%d} in {zone.key} (clocks jump from "
        f"{_hm(c, gap_start)} to {_hm(c, gap_end)}); runs once at {_hm(c, gap_end)}"
    )
    return Slot(change, change.astimezone(zone), shifted=True, note=note)


def _every_hour_gap(
    c: _Cron,
    zone: ZoneInfo,
    first: datetime,
    old: timedelta,
    new: timedelta,
    gap_start: datetime,
    gap_end: datetime,
) -> Iterator[Slot]:
    """Slots of an every-hour job in the ``new - old`` after a gap.

    A skipped wall time w is the instant ``w - old`` (where the clock would have
    been without the jump), which reads ``w + (new - old)`` on the new clock.
    So the slots here are the walls v in [gap_end, gap_end + delta) where v or
    v - delta matches; when both do, it is one instant and one slot.
    """
    delta = new - old
    limit = gap_end + delta
    skipped: datetime | None = first
    plain = c.next_wall(gap_end, True)
    while True:
        ka = skipped + delta if skipped is not None and skipped < gap_end else None
        kb = plain if plain is not None and plain < limit else None
        if ka is None and kb is None:
            return
        if kb is None or (ka is not None and ka < kb):
            assert ka is not None and skipped is not None
            at = ka - new
            note = (
                f"shifted: {_hm(c, skipped)} does not exist on {gap_start:%Y-%m-%d} in {zone.key} (clocks jump from "
                f"{_hm(c, gap_start)} to {_hm(c, gap_end)}); runs at {_hm(c, ka)}, when it would have been "
                "without the jump"
            )
            yield Slot(at, at.astimezone(zone), shifted=True, note=note)
            skipped = c.next_wall(skipped, False)
            continue
        at = kb - new
        yield Slot(at, at.astimezone(zone))
        if ka == kb:
            skipped = c.next_wall(skipped, False) if skipped is not None else None
        plain = c.next_wall(kb, False)


def _hm(c: _Cron, wall: datetime) -> str:
    return wall.strftime("%H:%M:%S" if c.has_seconds else "%H:%M")


def _utc_offset(offset: timedelta) -> str:
    minutes = offset // timedelta(minutes=1)
    sign = "-" if minutes < 0 else "+"
    hours, mins = divmod(abs(minutes), 60)
    return f"UTC{sign}{hours:02d}:{mins:02d}"


__all__ = [
    "MACROS",
    "MAX_CRON_LENGTH",
    "MAX_INTERVAL",
    "MAX_PREVIEW",
    "MIN_INTERVAL",
    "Schedule",
    "ScheduleKind",
    "Slot",
    "SlotWindow",
    "describe",
    "next_slot",
    "next_slots",
    "parse",
    "slots_between",
]
