"""EventBridge schedule expressions: what is accepted, what is refused, and when they fire."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from servicekit.cron import ScheduleError, parse


def fires(expression: str, start: datetime, count: int, timezone: str = "UTC") -> list[datetime]:
    """The next ``count`` fire times from ``start``, in UTC, as serve mode would see them."""
    trigger = parse(expression).trigger(timezone)
    found: list[datetime] = []
    previous = None
    now = start
    for _ in range(count):
        previous = trigger.get_next_fire_time(previous, now)
        assert previous is not None
        now = previous
        found.append(previous.astimezone(UTC))
    return found


def at(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        # Day-of-week counts 1=SUN..7=SAT: 2-6 is Monday to Friday.
        ("cron(0 18 ? * 2-6 *)", [at(2026, 3, 6, 18), at(2026, 3, 9, 18), at(2026, 3, 10, 18)]),
        ("cron(0 18 ? * MON-FRI *)", [at(2026, 3, 6, 18), at(2026, 3, 9, 18), at(2026, 3, 10, 18)]),
        ("cron(0 9 ? * 1 *)", [at(2026, 3, 8, 9), at(2026, 3, 15, 9), at(2026, 3, 22, 9)]),
        ("cron(0 9 ? * 7 *)", [at(2026, 3, 7, 9), at(2026, 3, 14, 9), at(2026, 3, 21, 9)]),
        # Quartz increments: from 5, every 20 minutes.
        (
            "cron(5/20 10 * * ? *)",
            [at(2026, 3, 6, 10, 5), at(2026, 3, 6, 10, 25), at(2026, 3, 6, 10, 45)],
        ),
        ("cron(0 0 L * ? *)", [at(2026, 3, 31), at(2026, 4, 30), at(2026, 5, 31)]),
        # 6#3: the third Friday; 6L: the last Friday.
        ("cron(0 12 ? * 6#3 *)", [at(2026, 3, 20, 12), at(2026, 4, 17, 12), at(2026, 5, 15, 12)]),
        ("cron(0 12 ? * FRIL *)", [at(2026, 3, 27, 12), at(2026, 4, 24, 12), at(2026, 5, 29, 12)]),
        # L alone in day-of-week is the last day of the week: Saturday.
        ("cron(0 12 ? * L *)", [at(2026, 3, 7, 12), at(2026, 3, 14, 12), at(2026, 3, 21, 12)]),
        # W: the nearest weekday, never leaving the month. 2026-08-01 is a Saturday (-> Mon 3rd),
        # 2026-05-31 a Sunday (-> Fri 29th), 2026-03-15 a Sunday (-> Mon 16th).
        ("cron(0 6 1W 8 ? *)", [at(2026, 8, 3, 6), at(2027, 8, 2, 6), at(2028, 8, 1, 6)]),
        ("cron(0 6 LW 5 ? 2026-2027)", [at(2026, 5, 29, 6), at(2027, 5, 31, 6)]),
        ("cron(0 6 15W 3 ? *)", [at(2026, 3, 16, 6), at(2027, 3, 15, 6), at(2028, 3, 15, 6)]),
        ("cron(0 0 1 JAN,JUL ? 2027/2)", [at(2027, 1, 1), at(2027, 7, 1), at(2029, 1, 1)]),
        ("rate(5 minutes)", [at(2026, 3, 6, 0, 5), at(2026, 3, 6, 0, 10), at(2026, 3, 6, 0, 15)]),
        ("rate(1 day)", [at(2026, 3, 7), at(2026, 3, 8), at(2026, 3, 9)]),
    ],
)
def test_fire_times(expression: str, expected: list[datetime]) -> None:
    start = at(2026, 3, 6, 0, 1)
    assert fires(expression, start, len(expected)) == expected


@pytest.mark.parametrize(
    ("expression", "problem"),
    [
        ("cron(0 10 * * ? )", "takes 6 fields"),
        ("cron(0 10 * * * *)", "exactly one of day-of-month and day-of-week must be '?'"),
        ("cron(0 10 ? * ? *)", "exactly one of day-of-month and day-of-week must be '?'"),
        ("cron(60 10 * * ? *)", "minutes: 60 is outside 0-59"),
        ("cron(0 24 * * ? *)", "hours: 24 is outside 0-23"),
        ("cron(0 0 0 * ? *)", "day-of-month: 0 is outside 1-31"),
        ("cron(0 0 1 13 ? *)", "month: 13 is outside 1-12"),
        ("cron(0 0 ? * 0 *)", "day-of-week: 0 is outside 1-7"),
        ("cron(0 0 1 * ? 2200)", "year: 2200 is outside 1970-2199"),
        ("cron(0 0 ? * 2/2 *)", "day-of-week: '/' is not allowed"),
        ("cron(0 0 ? * FRI-MON *)", "goes backwards"),
        ("cron(0 0 ? * 3#6 *)", "'#' takes one weekday"),
        ("cron(0 0 ? * 3#1,6#2 *)", "'#' takes one weekday"),
        ("cron(0 0 1,L * ? *)", "L and W stand alone"),
        ("cron(0 0 L-3 * ? *)", "L and W stand alone"),
        ("cron(0 0 1 FOO ? *)", "'FOO' is not a number or a name"),
        ("cron(0 0 30 2 ? *)", "never fires"),
        ("cron(*/0 * * * ? *)", "must be at least 1"),
        ("rate(1 minutes)", "write 1 minute, not 1 minutes"),
        ("rate(5 minute)", "write 5 minutes, not 5 minute"),
        ("rate(0 minutes)", "rate() takes 'value unit'"),
        ("rate(5 weeks)", "unit 'weeks' is not one of minute, hour, day"),
        ("rate(30 seconds)", "unit 'seconds' is not one of"),
        ("at(2026-01-01T00:00:00)", "one-time schedule"),
        ("0 10 * * ? *", "neither cron(...) nor rate(...)"),
    ],
)
def test_invalid_expressions_say_why(expression: str, problem: str) -> None:
    with pytest.raises(ScheduleError) as raised:
        parse(expression)
    assert problem in str(raised.value)


def test_seconds_only_when_allowed() -> None:
    assert parse("rate(2 seconds)", allow_seconds=True).interval == timedelta(seconds=2)


def test_slot_is_the_latest_fire_time_at_or_before_the_instant() -> None:
    hourly = parse("cron(15 * * * ? *)")
    assert hourly.slot_at(at(2026, 3, 6, 10, 15), "UTC") == at(2026, 3, 6, 10, 15)
    assert hourly.slot_at(at(2026, 3, 6, 10, 14, 59), "UTC") == at(2026, 3, 6, 9, 15)
    yearly = parse("cron(0 0 1 1 ? *)")
    assert yearly.slot_at(at(2026, 3, 6, 10), "UTC") == at(2026, 1, 1)
    # rate() slots are counted from the epoch, so any process computes the same ones.
    every_five = parse("rate(5 minutes)")
    assert every_five.slot_at(at(2026, 3, 6, 10, 7, 29), "UTC") == at(2026, 3, 6, 10, 5)
    # A schedule whose years are all to come has no slot yet.
    assert parse("cron(0 0 1 1 ? 2190)").slot_at(at(2026, 1, 1), "UTC") is None


def test_timezone_is_the_schedule_timezone() -> None:
    # 09:00 in Paris is 08:00 UTC in winter and 07:00 UTC in summer.
    assert fires("cron(0 9 * * ? *)", at(2026, 3, 27), 3, "Europe/Paris") == [
        at(2026, 3, 27, 8),
        at(2026, 3, 28, 8),
        at(2026, 3, 29, 7),
    ]


def test_daylight_saving_follows_eventbridge() -> None:
    # Clocks go forward on 2026-03-29 at 02:00 in Paris: 02:30 does not exist and is skipped.
    assert fires("cron(30 2 * * ? *)", at(2026, 3, 28, 12), 2, "Europe/Paris") == [
        at(2026, 3, 30, 0, 30),
        at(2026, 3, 31, 0, 30),
    ]
    # They go back on 2026-10-25 at 03:00: 02:30 happens twice and runs once.
    assert fires("cron(30 2 * * ? *)", at(2026, 10, 24, 12), 2, "Europe/Paris") == [
        at(2026, 10, 25, 0, 30),
        at(2026, 10, 26, 1, 30),
    ]
    repeated_hour = parse("cron(0/20 * * * ? *)")
    assert repeated_hour.slot_at(at(2026, 10, 25, 1, 50), "Europe/Paris") == at(2026, 10, 25, 0, 40)
