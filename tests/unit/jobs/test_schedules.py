"""Schedules: cron parsing (standard cron semantics), intervals, one-offs, bounds and DST behaviour.

Real zones from the system tz database; dates are in 2027:
America/New_York springs forward 03-14 (02:00 EST -> 03:00 EDT) and falls back 11-07 (02:00 EDT -> 01:00 EST);
Europe/London 03-28 (01:00 GMT -> 02:00 BST) and 10-31 (02:00 BST -> 01:00 GMT);
Australia/Lord_Howe shifts by 30 minutes: 10-03 (02:00 -> 02:30) and 04-04 (02:00 -> 01:30).
"""

from __future__ import annotations

import bisect
import itertools
import time
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from lobwife_server.core.errors import ApiError
from lobwife_server.jobs import schedules
from lobwife_server.jobs.schedules import Schedule, Slot, describe, next_slot, next_slots, parse, slots_between

NY = "America/New_York"
LONDON = "Europe/London"
LORD_HOWE = "Australia/Lord_Howe"
ANCHOR = datetime(2027, 1, 1, tzinfo=UTC)


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0, micro: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, second, micro, tzinfo=UTC)


def cron(expr: str, zone: str | None = None) -> Schedule:
    return parse(cron=expr, time_zone=zone, anchor=ANCHOR)


def ats(slots: list[Slot] | tuple[Slot, ...]) -> list[datetime]:
    return [s.at for s in slots]


def window(s: Schedule, start: datetime, end: datetime) -> tuple[Slot, ...]:
    got = slots_between(s, start, end, 100_000)
    assert not got.truncated
    return got.slots


def local_day(slots: tuple[Slot, ...], day: str) -> list[Slot]:
    return [s for s in slots if s.local.strftime("%Y-%m-%d") == day]


def assert_steady(slots: tuple[Slot, ...], step: timedelta) -> None:
    """Strictly increasing, no duplicates, and exactly `step` apart in real time."""
    times = ats(slots)
    assert len(set(times)) == len(times)
    gaps = {b - a for a, b in itertools.pairwise(times)}
    assert gaps == {step}, sorted(gaps)


# --------------------------------------------------------------------------- cron syntax


def test_five_fields_are_minute_hour_dom_month_dow() -> None:
    s = cron("30 9 * * *")
    assert next_slots(s, utc(2027, 6, 1, 10), 2) == [
        Slot(utc(2027, 6, 2, 9, 30), utc(2027, 6, 2, 9, 30).astimezone(ZoneInfo("UTC"))),
        Slot(utc(2027, 6, 3, 9, 30), utc(2027, 6, 3, 9, 30).astimezone(ZoneInfo("UTC"))),
    ]


def test_six_fields_put_seconds_first() -> None:
    s = cron("15 30 9 * * *")
    assert ats(next_slots(s, utc(2027, 6, 1, 10), 2)) == [utc(2027, 6, 2, 9, 30, 15), utc(2027, 6, 3, 9, 30, 15)]
    every_30s = cron("*/30 * * * * *")
    assert ats(next_slots(every_30s, utc(2027, 6, 1, 10, 0, 10), 3)) == [
        utc(2027, 6, 1, 10, 0, 30),
        utc(2027, 6, 1, 10, 1),
        utc(2027, 6, 1, 10, 1, 30),
    ]


def test_slots_are_strictly_after() -> None:
    s = cron("0 * * * *")
    assert next_slot(s, utc(2027, 6, 1, 10)) == next_slot(s, utc(2027, 6, 1, 10, 30))
    assert next_slot(s, utc(2027, 6, 1, 10) - timedelta(microseconds=1)) is not None
    assert next_slot(s, utc(2027, 6, 1, 9, 59, 59, 999999)).at == utc(2027, 6, 1, 10)  # type: ignore[union-attr]


def test_ranges_steps_and_lists() -> None:
    s = cron("*/20 1-2,22 * * *")
    assert [t.strftime("%H:%M") for t in ats(next_slots(s, utc(2027, 6, 1), 9))] == [
        "01:00",
        "01:20",
        "01:40",
        "02:00",
        "02:20",
        "02:40",
        "22:00",
        "22:20",
        "22:40",
    ]
    stepped_range = cron("10-50/20 3 * * *")
    assert [t.minute for t in ats(next_slots(stepped_range, utc(2027, 6, 1), 3))] == [10, 30, 50]
    # "5/15" means 5-59/15, as in most cron dialects.
    assert [t.minute for t in ats(next_slots(cron("5/15 3 * * *"), utc(2027, 6, 1), 4))] == [5, 20, 35, 50]


def test_names_are_case_insensitive() -> None:
    s = cron("0 9 * JAN-mar Mon-FRI")
    got = ats(next_slots(s, utc(2027, 3, 30), 4))
    # 2027-03-30 is a Tuesday; after March 31 the next match is Monday 2028-01-03.
    assert got == [utc(2027, 3, 30, 9), utc(2027, 3, 31, 9), utc(2028, 1, 3, 9), utc(2028, 1, 4, 9)]


@pytest.mark.parametrize("dow", ["0", "7", "sun", "SUN", "7-7", "0,7"])
def test_sunday_is_0_and_7(dow: str) -> None:
    got = ats(next_slots(cron(f"0 12 * * {dow}"), utc(2027, 3, 3), 3))  # a Wednesday
    assert got == [utc(2027, 3, 7, 12), utc(2027, 3, 14, 12), utc(2027, 3, 21, 12)]
    assert all(t.weekday() == 6 for t in got)


def test_day_of_week_counts_from_sunday_not_monday() -> None:
    # APScheduler's own numbering starts at Monday = 0; ours is cron's.
    assert [t.strftime("%a") for t in ats(next_slots(cron("0 0 * * 1-5"), utc(2027, 3, 6), 5))] == [
        "Mon",
        "Tue",
        "Wed",
        "Thu",
        "Fri",
    ]
    assert [t.strftime("%a") for t in ats(next_slots(cron("0 0 * * */2"), utc(2027, 3, 6), 4))] == [
        "Sun",
        "Tue",
        "Thu",
        "Sat",
    ]
    assert [t.strftime("%a") for t in ats(next_slots(cron("0 0 * * fri-sun"), utc(2027, 3, 1), 3))] == [
        "Fri",
        "Sat",
        "Sun",
    ]
    assert [t.strftime("%a") for t in ats(next_slots(cron("0 0 * * 5-7"), utc(2027, 3, 1), 3))] == [
        "Fri",
        "Sat",
        "Sun",
    ]


def test_day_of_month_or_day_of_week_when_both_restricted() -> None:
    # Friday the 13th in cron means "every Friday and every 13th".
    got = ats(next_slots(cron("0 0 13 * 5"), utc(2027, 8, 1), 6))
    assert got == [
        utc(2027, 8, 6),  # Friday
        utc(2027, 8, 13),  # Friday the 13th: one slot, not two
        utc(2027, 8, 20),
        utc(2027, 8, 27),
        utc(2027, 9, 3),
        utc(2027, 9, 10),
    ]
    got = ats(next_slots(cron("0 0 1,15 * mon"), utc(2027, 3, 1), 5))
    assert got == [utc(2027, 3, 8), utc(2027, 3, 15), utc(2027, 3, 22), utc(2027, 3, 29), utc(2027, 4, 1)]


def test_a_day_field_starting_with_star_is_unrestricted() -> None:
    # Vixie cron: "*/2" counts as "*", so it ANDs with day-of-week: odd-dated Mondays only.
    got = ats(next_slots(cron("0 0 */2 * 1"), utc(2027, 3, 1), 3))
    assert got == [utc(2027, 3, 15), utc(2027, 3, 29), utc(2027, 4, 5)]
    # Day-of-week alone restricts when day-of-month is "*".
    assert all(t.weekday() == 2 for t in ats(next_slots(cron("0 0 * * wed"), utc(2027, 3, 1), 5)))
    # "1-31" is restricted (it does not start with '*'), so with a weekday it ORs: every day.
    assert ats(next_slots(cron("0 0 1-31 * 1"), utc(2027, 3, 1), 3)) == [
        utc(2027, 3, 2),
        utc(2027, 3, 3),
        utc(2027, 3, 4),
    ]


def test_an_impossible_day_of_month_with_a_weekday_fires_on_the_weekday() -> None:
    got = ats(next_slots(cron("0 0 30 2 mon"), utc(2027, 3, 1), 2))
    assert got == [utc(2028, 2, 7), utc(2028, 2, 14)]


def test_february_29_fires_in_leap_years() -> None:
    assert ats(next_slots(cron("0 0 29 2 *"), utc(2027, 1, 1), 2)) == [utc(2028, 2, 29), utc(2032, 2, 29)]


@pytest.mark.parametrize(
    ("macro", "same_as"),
    [
        ("@yearly", "0 0 1 1 *"),
        ("@annually", "0 0 1 1 *"),
        ("@monthly", "0 0 1 * *"),
        ("@weekly", "0 0 * * 0"),
        ("@daily", "0 0 * * *"),
        ("@midnight", "0 0 * * *"),
        ("@hourly", "0 * * * *"),
        ("@HOURLY", "0 * * * *"),
    ],
)
def test_macros(macro: str, same_as: str) -> None:
    s = cron(macro, NY)
    assert next_slots(s, utc(2027, 3, 10), 5) == next_slots(cron(same_as, NY), utc(2027, 3, 10), 5)
    assert describe(s) == macro


def test_missing_zone_means_utc() -> None:
    for zone in (None, ""):
        s = cron("0 9 * * *", zone)
        assert s.time_zone == "UTC"
        assert next_slot(s, utc(2027, 6, 1)) == Slot(utc(2027, 6, 1, 9), utc(2027, 6, 1, 9).astimezone(ZoneInfo("UTC")))


def test_cron_in_a_zone() -> None:
    s = cron("0 9 * * *", NY)
    slot = next_slot(s, utc(2027, 6, 1))
    assert slot is not None
    assert slot.at == utc(2027, 6, 1, 13)  # 09:00 EDT
    assert slot.local == datetime(2027, 6, 1, 9, tzinfo=ZoneInfo(NY))
    assert slot.local.utcoffset() == timedelta(hours=-4)
    assert slot.at.tzinfo is UTC


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("kwargs", "field", "says"),
    [
        ({"cron": "61 * * * *"}, "cron", "minute field '61': 61 is out of range 0-59"),
        ({"cron": "* 24 * * *"}, "cron", "hour field '24': 24 is out of range 0-23"),
        ({"cron": "* * 0 * *"}, "cron", "day-of-month field '0': 0 is out of range 1-31"),
        ({"cron": "* * 32 * *"}, "cron", "out of range 1-31"),
        ({"cron": "* * * 13 *"}, "cron", "month field '13': 13 is out of range 1-12"),
        ({"cron": "* * * * 8"}, "cron", "day-of-week field '8': 8 is out of range 0-7"),
        ({"cron": "60 * * * * *"}, "cron", "second field '60': 60 is out of range 0-59"),
        ({"cron": "* * * *"}, "cron", "expected 5 fields"),
        ({"cron": "0 0 0 * * * 2027"}, "cron", "got 7"),
        ({"cron": ""}, "cron", "must not be blank"),
        ({"cron": "   "}, "cron", "must not be blank"),
        ({"cron": "*" * 257}, "cron", "longer than 256 characters"),
        ({"cron": "*/0 * * * *"}, "cron", "step 0 is out of range 1-60"),
        ({"cron": "*/x * * * *"}, "cron", "step 'x' is not a whole number"),
        ({"cron": "30-10 * * * *"}, "cron", "runs backwards"),
        ({"cron": "1,,2 * * * *"}, "cron", "empty list item"),
        ({"cron": "-5 * * * *"}, "cron", "not a range"),
        ({"cron": "1-2-3 * * * *"}, "cron", "not a range"),
        ({"cron": "0 0 ? * *"}, "cron", "'?' is not cron syntax"),
        ({"cron": "0 0 L * *"}, "cron", "L, W and # are not supported"),
        ({"cron": "0 0 * * 5#3"}, "cron", "L, W and # are not supported"),
        ({"cron": "0 0 * * funday"}, "cron", "day-of-week field 'funday'"),
        ({"cron": "0 0 * jam *"}, "cron", "expected 1-12 or a name"),
        ({"cron": "٣ * * * *"}, "cron", "'٣' is not part of cron syntax"),
        ({"cron": "0 0 * * *\n0 1 * * *"}, "cron", "'\\n' is not part of cron syntax"),
        ({"cron": "0 0 * * mon\x00"}, "cron", "is not part of cron syntax"),
        ({"cron": "0 0 * * sat-mon"}, "cron", "runs backwards"),
        ({"cron": "0 0 30 2 *"}, "cron", "never fires"),
        ({"cron": "0 0 31 4,6,9,11 *"}, "cron", "never fires"),
        ({"cron": "@reboot"}, "cron", "run_on_startup"),
        ({"cron": "@fortnightly"}, "cron", "unknown macro"),
        ({"cron": "* * * * *", "time_zone": "Mars/Olympus"}, "time_zone", "unknown time zone 'Mars/Olympus'"),
        ({"cron": "* * * * *", "time_zone": "america/new_york"}, "time_zone", "did you mean 'America/New_York'"),
        ({"cron": "* * * * *", "time_zone": "localtime"}, "time_zone", "unknown time zone"),
        ({"cron": "* * * * *", "time_zone": "../../etc/passwd"}, "time_zone", "unknown time zone"),
        ({"cron": "* * * * *", "time_zone": "/etc/localtime"}, "time_zone", "unknown time zone"),
        ({"cron": "* * * * *", "time_zone": "A" * 65}, "time_zone", "longer than 64"),
        ({"interval_seconds": 0}, "interval", "must be at least 1s, got 0s"),
        ({"interval_seconds": -30}, "interval", "must be at least 1s, got -30s"),
        ({"interval_seconds": 0.5}, "interval", "must be at least 1s, got 0.5s"),
        ({"interval_seconds": 366 * 86400 + 1}, "interval", "at most 366 days (31622400s), got 31622401s"),
        ({"interval_seconds": float("nan")}, "interval", "must be a number of seconds"),
        ({"interval_seconds": float("inf")}, "interval", "must be a number of seconds"),
        ({"interval_seconds": 30, "time_zone": "Nowhere"}, "time_zone", "unknown time zone"),
        ({"run_at": utc(1970, 1, 1)}, "run_at", "an unset timestamp?"),
        ({"run_at": utc(1969, 7, 20)}, "run_at", "must be between 1970-01-01T00:00:01Z and 9999-12-31T23:59:59Z"),
        ({}, "trigger", "exactly one of cron, interval or run_at (got none)"),
        ({"cron": "* * * * *", "interval_seconds": 5}, "trigger", "got cron and interval"),
        ({"interval_seconds": 5, "run_at": utc(2027, 1, 1)}, "trigger", "got interval and run_at"),
    ],
)
def test_bad_input_names_the_field(kwargs: dict[str, Any], field: str, says: str) -> None:
    with pytest.raises(ApiError) as e:
        parse(anchor=ANCHOR, **kwargs)
    assert e.value.code.name == "INVALID_ARGUMENT"
    assert e.value.violations[0][0] == field
    assert says in e.value.violations[0][1]
    assert e.value.message.startswith(f"{field}: ")


def test_error_fields_take_a_prefix() -> None:
    with pytest.raises(ApiError) as e:
        parse(cron="99 * * * *", anchor=ANCHOR, prefix="job")
    assert e.value.violations[0][0] == "job.cron"
    with pytest.raises(ApiError) as e:
        parse(cron="* * * * *", time_zone="Nope/Nope", anchor=ANCHOR, prefix="jobs.backup")
    assert e.value.violations[0][0] == "jobs.backup.time_zone"


def test_bounds_are_inclusive() -> None:
    assert parse(cron="0 0 1 1 *" + " " * 247, anchor=ANCHOR).cron == "0 0 1 1 *"  # 256 characters
    assert parse(interval_seconds=1, anchor=ANCHOR).interval == timedelta(seconds=1)
    assert parse(interval_seconds=366 * 86400, anchor=ANCHOR).interval == timedelta(days=366)
    assert parse(run_at=utc(1970, 1, 1, 0, 0, 1), anchor=ANCHOR).run_at == utc(1970, 1, 1, 0, 0, 1)


def test_programming_errors_are_not_api_errors() -> None:
    s = cron("* * * * *")
    with pytest.raises(ValueError, match="aware"):
        next_slot(s, datetime(2027, 1, 1))
    with pytest.raises(ValueError):
        next_slots(s, utc(2027, 1, 1), schedules.MAX_PREVIEW + 1)
    with pytest.raises(ValueError):
        slots_between(s, utc(2027, 1, 1), utc(2027, 1, 2), -1)


# --------------------------------------------------------------------------- intervals and one-offs


def test_interval_counts_from_the_anchor() -> None:
    anchor = utc(2027, 6, 1, 12, 0, 7)
    s = parse(interval_seconds=30, anchor=anchor, time_zone=NY)
    assert s.kind == "interval"
    # The first slot is one interval after the anchor, also when asked from before it.
    assert next_slot(s, utc(2020, 1, 1)).at == utc(2027, 6, 1, 12, 0, 37)  # type: ignore[union-attr]
    assert next_slot(s, anchor).at == utc(2027, 6, 1, 12, 0, 37)  # type: ignore[union-attr]
    # Strictly after: from a slot, the next one.
    assert next_slot(s, utc(2027, 6, 1, 12, 0, 37)).at == utc(2027, 6, 1, 12, 1, 7)  # type: ignore[union-attr]
    far = next_slot(s, utc(2027, 6, 9, 3, 4, 5))
    assert far is not None
    assert (far.at - anchor) % timedelta(seconds=30) == timedelta(0)
    assert utc(2027, 6, 9, 3, 4, 5) < far.at <= utc(2027, 6, 9, 3, 4, 35)
    assert far.local.tzinfo == ZoneInfo(NY)
    assert describe(s) == "every 30s"


def test_interval_ignores_daylight_saving() -> None:
    s = parse(interval_seconds=3600, anchor=utc(2027, 11, 7), time_zone=NY)
    got = window(s, utc(2027, 11, 7), utc(2027, 11, 7, 12))
    assert_steady(got, timedelta(hours=1))
    assert len(got) == 12
    # 01:00 local shows twice, an hour apart: they are different instants.
    assert [x.local.strftime("%H %Z") for x in got[3:7]] == ["00 EDT", "01 EDT", "01 EST", "02 EST"]


def test_fractional_interval() -> None:
    s = parse(interval_seconds=1.5, anchor=utc(2027, 1, 1), time_zone=None)
    assert ats(next_slots(s, utc(2027, 1, 1), 3)) == [
        utc(2027, 1, 1, 0, 0, 1) + timedelta(milliseconds=500),
        utc(2027, 1, 1, 0, 0, 3),
        utc(2027, 1, 1, 0, 0, 4) + timedelta(milliseconds=500),
    ]
    assert describe(s) == "every 1.5s"


def test_one_off() -> None:
    at = utc(2026, 2, 16, 12)
    s = parse(run_at=at, anchor=ANCHOR, time_zone=LONDON)
    assert s.kind == "once"
    assert next_slot(s, utc(2026, 2, 16, 11, 59, 59)) == Slot(at, at.astimezone(ZoneInfo(LONDON)))
    assert next_slot(s, at) is None  # strictly after
    assert next_slot(s, utc(2027, 1, 1)) is None  # past: a missed one-off, the caller decides
    assert len(next_slots(s, utc(2026, 1, 1), 10)) == 1
    assert describe(s) == "at 2026-02-16T12:00:00Z"


def test_one_off_times_are_normalised_to_utc() -> None:
    naive = parse(run_at=datetime(2026, 2, 16, 12), anchor=ANCHOR)
    assert naive.run_at == utc(2026, 2, 16, 12)  # naive is UTC (protobuf's ToDatetime())
    tokyo = parse(run_at=datetime(2026, 2, 16, 21, tzinfo=ZoneInfo("Asia/Tokyo")), anchor=ANCHOR)
    assert tokyo.run_at == utc(2026, 2, 16, 12)
    assert describe(parse(run_at=utc(2026, 2, 16, 12, 0, 0, 250000), anchor=ANCHOR)) == "at 2026-02-16T12:00:00.250000Z"


def test_describe_cron_is_the_expression_as_given() -> None:
    assert describe(cron("  */5  * * * MON-fri ")) == "*/5  * * * MON-fri"


# --------------------------------------------------------------------------- previews and windows


def test_next_slots_preview() -> None:
    s = cron("*/5 * * * *", NY)
    assert next_slots(s, utc(2027, 6, 1), 0) == []
    got = next_slots(s, utc(2027, 6, 1), schedules.MAX_PREVIEW)
    assert len(got) == 100
    assert_steady(tuple(got), timedelta(minutes=5))
    assert got[0].at == utc(2027, 6, 1, 0, 5)


def test_slots_between_is_start_exclusive_end_inclusive() -> None:
    s = cron("0 * * * *")
    got = slots_between(s, utc(2027, 6, 1, 10), utc(2027, 6, 1, 13), 10)
    assert ats(got.slots) == [utc(2027, 6, 1, 11), utc(2027, 6, 1, 12), utc(2027, 6, 1, 13)]
    assert not got.truncated
    assert slots_between(s, utc(2027, 6, 1, 10), utc(2027, 6, 1, 10, 59), 10).slots == ()
    assert slots_between(s, utc(2027, 6, 1, 13), utc(2027, 6, 1, 10), 10).slots == ()


def test_slots_between_truncates_at_limit() -> None:
    s = cron("*/30 * * * * *")
    got = slots_between(s, utc(2027, 6, 1), utc(2027, 6, 8), 5)  # a week of downtime: 20,160 slots
    assert got.truncated
    assert ats(got.slots) == [utc(2027, 6, 1) + timedelta(seconds=30 * k) for k in range(1, 6)]
    exact = slots_between(s, utc(2027, 6, 1), utc(2027, 6, 1, 0, 2, 30), 5)
    assert len(exact.slots) == 5 and not exact.truncated
    zero = slots_between(s, utc(2027, 6, 1), utc(2027, 6, 1, 0, 1), 0)
    assert zero.slots == () and zero.truncated
    interval = parse(interval_seconds=60, anchor=utc(2027, 6, 1), time_zone=None)
    assert len(slots_between(interval, utc(2027, 6, 1), utc(2027, 6, 2), 2000).slots) == 1440
    one_off = parse(run_at=utc(2027, 6, 1, 5), anchor=ANCHOR)
    assert ats(slots_between(one_off, utc(2027, 6, 1), utc(2027, 6, 2), 10).slots) == [utc(2027, 6, 1, 5)]


def test_the_end_of_time() -> None:
    assert next_slot(cron("0 0 1 1 *"), utc(9999, 6, 1)) is None
    assert (
        next_slot(parse(interval_seconds=86400 * 366, anchor=utc(9999, 1, 1), time_zone=None), utc(9999, 6, 1)) is None
    )


# --------------------------------------------------------------------------- daylight saving: spring forward


def test_ny_spring_forward_daily_job_in_the_gap_is_shifted_not_dropped() -> None:
    s = cron("30 2 * * *", NY)
    assert s.wall_clock
    got = window(s, utc(2027, 3, 12), utc(2027, 3, 17))
    on_day = local_day(got, "2027-03-14")
    assert len(on_day) == 1
    slot = on_day[0]
    assert slot.at == utc(2027, 3, 14, 7)  # 03:00 EDT: the first instant after the gap
    assert slot.local.strftime("%H:%M %Z") == "03:00 EDT"
    assert slot.shifted
    assert slot.note is not None
    assert "02:30 does not exist on 2027-03-14 in America/New_York" in slot.note
    assert "clocks jump from 02:00 to 03:00" in slot.note
    # The days around it are ordinary.
    assert [x.local.strftime("%m-%d %H:%M") for x in got] == [
        "03-12 02:30",
        "03-13 02:30",
        "03-14 03:00",
        "03-15 02:30",
        "03-16 02:30",
    ]
    assert [x.shifted for x in got] == [False, False, True, False, False]


def test_ny_spring_forward_several_times_in_the_gap_run_once() -> None:
    got = local_day(window(cron("*/15 2 * * *", NY), utc(2027, 3, 13), utc(2027, 3, 16)), "2027-03-14")
    assert len(got) == 1
    assert got[0].at == utc(2027, 3, 14, 7)
    assert got[0].note is not None and "02:00, 02:15, 02:30, ... do not exist" in got[0].note
    # A gap time and 03:00 itself are one run at 03:00.
    both = local_day(window(cron("0 2,3 * * *", NY), utc(2027, 3, 13), utc(2027, 3, 16)), "2027-03-14")
    assert [x.local.strftime("%H:%M") for x in both] == ["03:00"]
    assert both[0].shifted


def test_ny_spring_forward_hourly_job_fires_every_real_hour() -> None:
    s = cron("0 * * * *", NY)
    assert not s.wall_clock
    got = window(s, utc(2027, 3, 14), utc(2027, 3, 15))
    assert_steady(got, timedelta(hours=1))
    assert len(got) == 24
    assert [x.local.strftime("%H") for x in got[4:9]] == ["00", "01", "03", "04", "05"]
    assert not any(x.shifted or x.note for x in got)
    # Same for an hourly job at :20 (02:20 EST is the instant 03:20 EDT).
    assert_steady(window(cron("20 * * * *", NY), utc(2027, 3, 14), utc(2027, 3, 15)), timedelta(hours=1))


def test_ny_spring_forward_every_15_minutes() -> None:
    got = window(cron("*/15 * * * *", NY), utc(2027, 3, 14, 5), utc(2027, 3, 14, 9))
    assert_steady(got, timedelta(minutes=15))
    assert len(got) == 16
    assert [x.local.strftime("%H:%M") for x in got[5:9]] == ["01:30", "01:45", "03:00", "03:15"]


def test_ny_spring_forward_every_30_seconds_six_fields() -> None:
    got = window(cron("*/30 * * * * *", NY), utc(2027, 3, 14, 6), utc(2027, 3, 14, 8))
    assert_steady(got, timedelta(seconds=30))
    assert len(got) == 240
    assert all(x.local.hour != 2 for x in got)


# --------------------------------------------------------------------------- daylight saving: fall back


def test_ny_fall_back_daily_job_in_the_overlap_runs_once() -> None:
    s = cron("30 1 * * *", NY)
    got = window(s, utc(2027, 11, 5), utc(2027, 11, 10))
    on_day = local_day(got, "2027-11-07")
    assert len(on_day) == 1
    assert on_day[0].at == utc(2027, 11, 7, 5, 30)  # the first 01:30, EDT
    assert on_day[0].local.strftime("%H:%M %Z") == "01:30 EDT"
    assert not on_day[0].shifted
    assert on_day[0].note is not None and "01:30 occurs twice on 2027-11-07" in on_day[0].note
    assert [x.local.strftime("%m-%d %H:%M %Z") for x in got] == [
        "11-05 01:30 EDT",
        "11-06 01:30 EDT",
        "11-07 01:30 EDT",
        "11-08 01:30 EST",
        "11-09 01:30 EST",
    ]


def test_ny_fall_back_asked_during_the_repeated_hour() -> None:
    # Asked at 01:10 EST (the second pass), a daily 01:30 job waits for tomorrow:
    # today's 01:30 already fired at 01:30 EDT.
    s = cron("30 1 * * *", NY)
    assert next_slot(s, utc(2027, 11, 7, 6, 10)).at == utc(2027, 11, 8, 6, 30)  # type: ignore[union-attr]
    every_15 = cron("*/15 * * * *", NY)
    assert next_slot(every_15, utc(2027, 11, 7, 6, 10)).at == utc(2027, 11, 7, 6, 15)  # type: ignore[union-attr]


def test_ny_fall_back_hourly_job_fires_every_real_hour() -> None:
    got = window(cron("0 * * * *", NY), utc(2027, 11, 7), utc(2027, 11, 8))
    assert_steady(got, timedelta(hours=1))
    assert len(got) == 24
    assert [x.local.strftime("%H %Z") for x in got[3:7]] == ["00 EDT", "01 EDT", "01 EST", "02 EST"]
    assert not any(x.note for x in got)


def test_ny_fall_back_every_15_minutes() -> None:
    got = window(cron("*/15 * * * *", NY), utc(2027, 11, 7, 4), utc(2027, 11, 7, 8))
    assert_steady(got, timedelta(minutes=15))
    assert len(got) == 16
    assert [x.local.strftime("%H:%M") for x in got].count("01:15") == 2


def test_ny_fall_back_every_30_seconds_six_fields() -> None:
    got = window(cron("*/30 * * * * *", NY), utc(2027, 11, 7, 4, 30), utc(2027, 11, 7, 7, 30))
    assert_steady(got, timedelta(seconds=30))
    assert len(got) == 360
    assert sum(1 for x in got if x.local.hour == 1) == 240  # the 01:00 hour happens twice


def test_fall_back_restricted_hour_fires_in_the_first_pass_only() -> None:
    got = local_day(window(cron("*/15 1 * * *", NY), utc(2027, 11, 6), utc(2027, 11, 9)), "2027-11-07")
    assert [x.local.strftime("%H:%M %Z") for x in got] == ["01:00 EDT", "01:15 EDT", "01:30 EDT", "01:45 EDT"]


# --------------------------------------------------------------------------- other zones


def test_london_both_transitions() -> None:
    spring = local_day(window(cron("30 1 * * *", LONDON), utc(2027, 3, 26), utc(2027, 3, 30)), "2027-03-28")
    assert len(spring) == 1
    assert spring[0].at == utc(2027, 3, 28, 1)  # 02:00 BST
    assert spring[0].shifted and "01:30 does not exist on 2027-03-28 in Europe/London" in (spring[0].note or "")
    autumn = local_day(window(cron("30 1 * * *", LONDON), utc(2027, 10, 29), utc(2027, 11, 2)), "2027-10-31")
    assert [x.at for x in autumn] == [utc(2027, 10, 31, 0, 30)]  # 01:30 BST, once
    for start in (utc(2027, 3, 27, 22), utc(2027, 10, 30, 22)):
        assert_steady(window(cron("0 * * * *", LONDON), start, start + timedelta(hours=8)), timedelta(hours=1))
        assert_steady(window(cron("*/15 * * * *", LONDON), start, start + timedelta(hours=8)), timedelta(minutes=15))
        assert_steady(window(cron("*/30 * * * * *", LONDON), start, start + timedelta(hours=6)), timedelta(seconds=30))


def test_lord_howe_half_hour_spring_forward() -> None:
    # 2027-10-03 02:00 +10:30 -> 02:30 +11:00.
    daily = local_day(window(cron("15 2 * * *", LORD_HOWE), utc(2027, 10, 1), utc(2027, 10, 5)), "2027-10-03")
    assert len(daily) == 1
    assert daily[0].local.strftime("%H:%M") == "02:30"
    assert daily[0].shifted and "02:15 does not exist" in (daily[0].note or "")
    assert_steady(
        window(cron("*/15 * * * *", LORD_HOWE), utc(2027, 10, 2, 13), utc(2027, 10, 2, 18)), timedelta(minutes=15)
    )
    # An hourly job keeps a real hour between 01:00 and the slot for 02:00, which
    # is where 02:00 would have been without the jump (02:30 on the new clock);
    # 03:00 then comes half an hour later.
    hourly = window(cron("0 * * * *", LORD_HOWE), utc(2027, 10, 2, 13), utc(2027, 10, 2, 17))
    assert [(x.local.strftime("%H:%M"), x.shifted) for x in hourly] == [
        ("00:00", False),
        ("01:00", False),
        ("02:30", True),
        ("03:00", False),
        ("04:00", False),
    ]
    assert ats(hourly)[2] - ats(hourly)[1] == timedelta(hours=1)


def test_lord_howe_half_hour_fall_back() -> None:
    # 2027-04-04 02:00 +11:00 -> 01:30 +10:30: 01:30-01:59 happens twice.
    daily = local_day(window(cron("45 1 * * *", LORD_HOWE), utc(2027, 4, 2), utc(2027, 4, 6)), "2027-04-04")
    assert [x.local.strftime("%H:%M %z") for x in daily] == ["01:45 +1100"]
    assert_steady(
        window(cron("*/15 * * * *", LORD_HOWE), utc(2027, 4, 3, 13), utc(2027, 4, 3, 18)), timedelta(minutes=15)
    )
    assert_steady(
        window(cron("*/30 * * * * *", LORD_HOWE), utc(2027, 4, 3, 14), utc(2027, 4, 3, 16)), timedelta(seconds=30)
    )
    # The local hour from 01:00 to 02:00 lasts 90 real minutes; an hourly job has no slot inside it.
    hourly = window(cron("0 * * * *", LORD_HOWE), utc(2027, 4, 3, 13), utc(2027, 4, 3, 17))
    assert [x.local.strftime("%H:%M") for x in hourly] == ["01:00", "02:00", "03:00"]
    assert ats(hourly)[1] - ats(hourly)[0] == timedelta(minutes=90)


# --------------------------------------------------------------------------- consistency


@pytest.mark.parametrize(
    ("expr", "zone", "start"),
    [
        ("30 2 * * *", NY, utc(2027, 3, 13, 12)),
        ("30 1 * * *", NY, utc(2027, 11, 6, 12)),
        ("*/15 * * * *", NY, utc(2027, 11, 7, 3)),
        ("*/15 1,2 * * *", LONDON, utc(2027, 10, 30, 22)),
        ("20 * * * *", LORD_HOWE, utc(2027, 10, 2, 12)),
        ("0 * * * *", LORD_HOWE, utc(2027, 4, 3, 12)),
        ("*/30 * * * * *", NY, utc(2027, 3, 14, 6, 30)),
    ],
)
def test_next_slot_agrees_with_the_sequence_from_anywhere(expr: str, zone: str, start: datetime) -> None:
    """Asked from any instant (including mid-gap, mid-overlap and exactly at a slot), the
    next slot is the first one of the sequence after it: catch-up and preview never disagree."""
    s = cron(expr, zone)
    seq = window(s, start, start + timedelta(days=3))
    times = ats(seq)
    probes = [start + timedelta(minutes=7 * k, seconds=k % 60) for k in range(2 * 24 * 60 // 7)]
    probes += [t + d for t in times[:400] for d in (timedelta(0), timedelta(microseconds=-1))]
    for p in probes:
        if p >= start + timedelta(days=2):
            continue
        i = bisect.bisect_right(times, p)
        assert next_slot(s, p) == seq[i], p


def test_next_slot_is_fast() -> None:
    s = cron("*/5 * * * *", NY)
    t = utc(2027, 6, 1, 12, 0, 0, 1)
    began = time.perf_counter()
    for k in range(2000):
        next_slot(s, t + timedelta(seconds=97 * k))
    # About 30 us a call on a laptop; the bound only catches a pathological slowdown.
    assert time.perf_counter() - began < 2.0
