"""EventBridge Scheduler schedule expressions: ``cron(...)`` and ``rate(...)``.

AWS validates expressions only when a schedule is created, and moto not at all, so the suite
checks them itself: :func:`parse` accepts what EventBridge documents and nothing looser
(https://docs.aws.amazon.com/scheduler/latest/UserGuide/schedule-types.html). A parsed
:class:`Schedule` turns into an APScheduler trigger for ``serve`` and answers "which slot is
this instant in" for ``run``; both go through the same trigger, so the two modes agree.

EventBridge differs from APScheduler 3 in ways that matter here: day-of-week counts 1=SUN..7=SAT
(APScheduler: 0=mon), exactly one of day-of-month and day-of-week is ``?``, and ``L``, ``W`` and
``#`` have Quartz meanings. Ranges must go upwards (``FRI-MON`` is refused: write two ranges).
"""

from __future__ import annotations

import calendar
import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.cron.expressions import AllExpression
from apscheduler.triggers.cron.fields import DayOfMonthField
from apscheduler.triggers.interval import IntervalTrigger

__all__ = ["EPOCH", "Schedule", "ScheduleError", "parse"]

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# EventBridge's year field stops at 2199; bounding the trigger keeps "never fires" checks finite.
_END = datetime(2200, 1, 1, tzinfo=UTC)

_MONTHS = ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"]
_EB_WEEKDAYS = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"]  # EventBridge: 1=SUN
_APS_WEEKDAYS = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]  # names mean the same day
_ORDINALS = ["1st", "2nd", "3rd", "4th", "5th"]
_RATE_UNITS = {"minute": 60, "hour": 3600, "day": 86400}


class ScheduleError(ValueError):
    """An expression EventBridge would refuse (or that this runtime cannot honour)."""


@dataclass(frozen=True)
class _Field:
    name: str
    low: int
    high: int
    names: tuple[str, ...] = ()
    steps: bool = True


_MINUTE = _Field("minutes", 0, 59)
_HOUR = _Field("hours", 0, 23)
_DOM = _Field("day-of-month", 1, 31)
_MONTH = _Field("month", 1, 12, tuple(_MONTHS))
_DOW = _Field("day-of-week", 1, 7, tuple(_EB_WEEKDAYS), steps=False)
_YEAR = _Field("year", 1970, 2199)

_ITEM = re.compile(r"^(?P<start>\*|\w+)(?:-(?P<end>\w+))?(?:/(?P<step>\d+))?$")


def _value(field: _Field, text: str) -> int:
    upper = text.upper()
    if upper in field.names:
        number = field.names.index(upper) + 1
    elif text.isdigit():
        number = int(text)
    else:
        raise ScheduleError(f"{field.name}: {text!r} is not a number or a name")
    if not field.low <= number <= field.high:
        raise ScheduleError(f"{field.name}: {number} is outside {field.low}-{field.high}")
    return number


def _values(field: _Field, text: str) -> frozenset[int]:
    """The set a plain field (numbers, names, ``*``, ``,``, ``-``, ``/``) stands for."""
    chosen: set[int] = set()
    for item in text.split(","):
        match = _ITEM.match(item)
        if match is None:
            raise ScheduleError(f"{field.name}: cannot read {item!r}")
        start, end, step = match["start"], match["end"], match["step"]
        if step is not None and not field.steps:
            raise ScheduleError(f"{field.name}: '/' is not allowed here")
        if start == "*":
            if end is not None:
                raise ScheduleError(f"{field.name}: cannot read {item!r}")
            first, last = field.low, field.high
        else:
            first = _value(field, start)
            # Quartz: "5/15" runs from 5 to the end of the field's range.
            last = _value(field, end) if end else (field.high if step else first)
            if first > last:
                raise ScheduleError(
                    f"{field.name}: range {item!r} goes backwards; write it as two ranges"
                )
        increment = int(step) if step is not None else 1
        if increment < 1:
            raise ScheduleError(f"{field.name}: the step in {item!r} must be at least 1")
        chosen.update(range(first, last + 1, increment))
    return frozenset(chosen)


def _listing(values: frozenset[int], field: _Field) -> str:
    if len(values) == field.high - field.low + 1:
        return "*"
    return ",".join(str(value) for value in sorted(values))


def _day_of_month(text: str) -> str:
    """Translate an EventBridge day-of-month to an APScheduler ``day`` expression."""
    upper = text.upper()
    if upper == "L":
        return "last"
    if upper.endswith("W"):
        base = upper[:-1]
        if base != "L":
            day = _value(_DOM, base)
            base = str(day)
        return f"{base.lower()}w"
    if "L" in upper or "W" in upper:
        raise ScheduleError(f"day-of-month: {text!r}: L and W stand alone (L, LW, 15W)")
    return _listing(_values(_DOM, text), _DOM)


def _day_of_week(text: str) -> tuple[str, str]:
    """Translate an EventBridge day-of-week to APScheduler's (day, day_of_week) pair."""
    upper = text.upper()
    if upper == "L":
        return "*", "sat"  # Quartz: "L" alone is the last day of the week
    if "#" in upper:
        weekday, _, nth = upper.partition("#")
        if "," in upper or not nth.isdigit() or not 1 <= int(nth) <= 5:
            raise ScheduleError(
                f"day-of-week: {text!r}: '#' takes one weekday and an instance 1-5 (6#3)"
            )
        day = _APS_WEEKDAYS[_value(_DOW, weekday) - 1]
        return f"{_ORDINALS[int(nth) - 1]} {day}", "*"
    if upper.endswith("L"):
        day = _APS_WEEKDAYS[_value(_DOW, upper[:-1]) - 1]
        return f"last {day}", "*"
    values = _values(_DOW, text)
    if len(values) == 7:
        return "*", "*"
    return "*", ",".join(_APS_WEEKDAYS[value - 1] for value in sorted(values))


class _NearestWeekday(AllExpression):  # type: ignore[misc]
    """Quartz ``15W`` / ``LW``: the weekday nearest that day, never leaving the month."""

    value_re = re.compile(r"(?P<day>\d+|l)w$", re.IGNORECASE)

    def __init__(self, day: str) -> None:
        super().__init__(None)
        self.day = None if day.lower() == "l" else int(day)

    def get_next_value(self, date: datetime, field: Any) -> int | None:
        first_weekday, last_day = calendar.monthrange(date.year, date.month)
        day = last_day if self.day is None else self.day
        if day > last_day:
            return None
        weekday = (first_weekday + day - 1) % 7  # 5 = Saturday, 6 = Sunday
        if weekday == 5:
            day = day + 2 if day == 1 else day - 1
        elif weekday == 6:
            day = day - 2 if day == last_day else day + 1
        return day if day >= date.day else None

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _NearestWeekday) and other.day == self.day

    def __hash__(self) -> int:
        return hash(self.day)

    def __str__(self) -> str:
        return f"{'l' if self.day is None else self.day}w"


class _DayOfMonthField(DayOfMonthField):  # type: ignore[misc]
    COMPILERS: ClassVar[list[Any]] = [*DayOfMonthField.COMPILERS, _NearestWeekday]


class _EventBridgeCronTrigger(CronTrigger):  # type: ignore[misc]
    """CronTrigger with the nearest-weekday (``W``) day-of-month and EventBridge's DST rules.

    EventBridge skips a local time that does not exist (clocks forward) and runs a repeated one
    (clocks back) once; APScheduler 3 would run the first at the shifted instant and the second
    twice.
    """

    FIELDS_MAP: ClassVar[dict[str, Any]] = {**CronTrigger.FIELDS_MAP, "day": _DayOfMonthField}

    def get_next_fire_time(
        self, previous_fire_time: datetime | None, now: datetime
    ) -> datetime | None:
        fire: datetime | None = super().get_next_fire_time(previous_fire_time, now)
        while fire is not None and not self._happens_once(fire):
            fire = super().get_next_fire_time(fire, fire.astimezone(UTC) + timedelta(seconds=1))
        return fire

    def _happens_once(self, fire: datetime) -> bool:
        actual = fire.astimezone(UTC).astimezone(self.timezone)
        if actual.replace(tzinfo=None) != fire.replace(tzinfo=None):
            return False  # the wall time does not exist that day
        # fold=1 with another offset for fold=0: the second pass through a repeated hour.
        return actual.fold == 0 or actual.replace(fold=0).utcoffset() == actual.utcoffset()


@dataclass(frozen=True)
class Schedule:
    """A validated expression. ``interval`` is set for rate(), ``cron`` (APScheduler fields)
    for cron()."""

    expression: str
    interval: timedelta | None = None
    cron: tuple[tuple[str, str], ...] = ()

    def trigger(self, timezone: str) -> Any:
        """The APScheduler trigger firing at this schedule's slots.

        rate() slots are counted from the Unix epoch in UTC, so every process (and every
        ``run`` given an instant) agrees on them whenever it started.
        """
        if self.interval is not None:
            return IntervalTrigger(seconds=self.interval.total_seconds(), start_date=EPOCH)
        return _EventBridgeCronTrigger(**dict(self.cron), timezone=timezone, end_date=_END)

    def slot_at(self, instant: datetime, timezone: str) -> datetime | None:
        """The latest slot at or before ``instant`` (UTC), or None when there is none."""
        trigger = self.trigger(timezone)
        limit = math.floor(instant.timestamp())

        def next_from(second: int) -> datetime | None:
            fire: datetime | None = trigger.get_next_fire_time(
                None, datetime.fromtimestamp(second, UTC)
            )
            return fire

        def fired_by_limit(second: int) -> bool:
            fire = next_from(second)
            return fire is not None and fire.timestamp() <= limit

        # Slots fall on whole seconds and "next slot from t" only grows with t: widen a window
        # back from the limit until it holds a slot, then bisect for the last one.
        width = 60
        while not fired_by_limit(limit - width):
            if limit - width < EPOCH.timestamp():
                return None
            width *= 2
        low, high = limit - width, limit + 1
        while high - low > 1:
            middle = (low + high) // 2
            if fired_by_limit(middle):
                low = middle
            else:
                high = middle
        found = next_from(low)
        return None if found is None else found.astimezone(UTC)


def _parse_rate(body: str, *, allow_seconds: bool) -> Schedule:
    match = re.fullmatch(r"([1-9]\d*) +([a-z]+)", body.strip())
    units = dict(_RATE_UNITS, second=1) if allow_seconds else _RATE_UNITS
    if match is None:
        raise ScheduleError(f"rate() takes 'value unit', for example rate(5 minutes); got {body!r}")
    value, unit = int(match[1]), match[2]
    singular = unit.removesuffix("s")
    if singular not in units:
        raise ScheduleError(f"rate(): unit {unit!r} is not one of {', '.join(units)}")
    # EventBridge refuses rate(1 minutes) and rate(5 minute).
    expected = singular if value == 1 else f"{singular}s"
    if unit != expected:
        raise ScheduleError(f"rate(): write {value} {expected}, not {value} {unit}")
    return Schedule(f"rate({value} {unit})", interval=timedelta(seconds=value * units[singular]))


def _parse_cron(body: str) -> Schedule:
    fields = body.split()
    if len(fields) != 6:
        raise ScheduleError(
            "cron() takes 6 fields (minutes hours day-of-month month day-of-week year); "
            f"got {len(fields)}"
        )
    minutes, hours, dom, month, dow, year = fields
    if (dom == "?") == (dow == "?"):
        raise ScheduleError("exactly one of day-of-month and day-of-week must be '?'")
    if dom == "?":
        day, day_of_week = _day_of_week(dow)
    else:
        day, day_of_week = _day_of_month(dom), "*"
    cron = (
        ("year", _listing(_values(_YEAR, year), _YEAR)),
        ("month", _listing(_values(_MONTH, month), _MONTH)),
        ("day", day),
        ("day_of_week", day_of_week),
        ("hour", _listing(_values(_HOUR, hours), _HOUR)),
        ("minute", _listing(_values(_MINUTE, minutes), _MINUTE)),
        ("second", "0"),
    )
    schedule = Schedule(f"cron({' '.join(fields)})", cron=cron)
    if schedule.trigger("UTC").get_next_fire_time(None, EPOCH) is None:
        raise ScheduleError("never fires (no date matches every field)")
    return schedule


def parse(expression: str, *, allow_seconds: bool = False) -> Schedule:
    """Validate an EventBridge ``cron(...)`` or ``rate(...)`` expression.

    ``allow_seconds`` admits ``rate(N seconds)``, which EventBridge does not have: only for
    test registries that must fire faster than once a minute.
    """
    match = re.fullmatch(r"\s*(rate|cron|at)\((.*)\)\s*", expression)
    if match is None:
        raise ScheduleError(f"{expression!r} is neither cron(...) nor rate(...)")
    kind, body = match[1], match[2]
    if kind == "at":
        raise ScheduleError("at() is a one-time schedule; a registry job recurs")
    try:
        if kind == "rate":
            return _parse_rate(body, allow_seconds=allow_seconds)
        return _parse_cron(body)
    except ScheduleError as error:
        raise ScheduleError(f"{expression!r}: {error}") from None
