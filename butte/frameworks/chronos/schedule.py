"""ISO8601 repeating intervals (``R[n]/<start>/<period>``) as Chronos takes them, and the
arithmetic that turns one into slot instants in an IANA time zone.

Slot ``k`` of a schedule is ``start + k x period``, computed from the start each time (never
by adding to the previous slot, so rounding and month-end clamping do not drift):

* the period's calendar part (years, months, weeks, days) is added to the start's *wall
  clock* in the schedule's time zone, so ``P1D`` at 09:00 stays at 09:00 across DST changes;
  a wall time that does not exist (spring forward) is taken as the instant after the gap, an
  ambiguous one (fall back) as its first occurrence; the 31st plus one month is the last day
  of the next month;
* the period's clock part (hours, minutes, seconds) is elapsed time, so ``PT1H`` is exactly
  3600 s apart even across a DST change.

Slot instants never decrease with ``k``. Two indexes can map to the same instant (a wall day
a zone skipped entirely, Pacific/Apia 2011); the scheduling core runs that instant once.
Everything here is pure: time comes in as POSIX seconds.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

MAX_REPEATS = 1_000_000_000
MIN_PERIOD_SECONDS = 1.0
# Longest period accepted: 100 years. Anything longer is almost certainly a typo.
MAX_PERIOD_MONTHS = 1200
_MAX_FIELD = 10**7

_DURATION = re.compile(
    r"^P(?:(?P<Y>\d+)Y)?(?:(?P<M>\d+)M)?(?:(?P<W>\d+)W)?(?:(?P<D>\d+)D)?"
    r"(?:T(?:(?P<h>\d+)H)?(?:(?P<m>\d+)M)?(?:(?P<s>\d+(?:\.\d+)?)S)?)?$"
)


class ScheduleError(ValueError):
    """A schedule, duration or time zone that cannot be used; the message says why."""


@dataclass(frozen=True)
class Period:
    """A period split into its calendar part (months, days on the wall clock) and its clock
    part (elapsed seconds)."""

    months: int
    days: int
    seconds: float
    text: str

    @property
    def approx_seconds(self) -> float:
        """Average length, for estimating slot indexes (never for the slots themselves)."""
        return self.months * 30.436875 * 86400 + self.days * 86400 + self.seconds


def parse_duration(text: str) -> Period:
    """An ISO8601 duration (``P1D``, ``PT1H30M``, ``P1Y2M``, ``PT0.5S``...)."""
    if not isinstance(text, str):
        raise ScheduleError(f"duration must be a string, not {type(text).__name__}")
    match = _DURATION.match(text.strip())
    if not match or text.strip() in ("P", "PT") or text.strip().endswith("T"):
        raise ScheduleError(f"{text!r} is not an ISO8601 duration (like PT1H, P1D, P1M)")
    groups = match.groupdict("0")
    counts = {k: int(v) for k, v in groups.items() if k != "s"}  # only seconds may have a fraction
    fraction = float(groups["s"])
    if fraction > _MAX_FIELD or any(v > _MAX_FIELD for v in counts.values()):
        raise ScheduleError(f"duration {text!r} is too large")
    months = counts["Y"] * 12 + counts["M"]
    days = counts["W"] * 7 + counts["D"]
    seconds = counts["h"] * 3600 + counts["m"] * 60 + fraction
    return Period(months, days, seconds, text.strip())


# The three-letter ids Java's time zones take (ZoneId.SHORT_IDS), which Chronos accepts in
# `scheduleTimeZone` (its API doc's example is "PST"); the IANA database lacks most of them.
JAVA_SHORT_IDS = {
    "ACT": "Australia/Darwin",
    "AET": "Australia/Sydney",
    "AGT": "America/Argentina/Buenos_Aires",
    "ART": "Africa/Cairo",
    "AST": "America/Anchorage",
    "BET": "America/Sao_Paulo",
    "BST": "Asia/Dhaka",
    "CAT": "Africa/Harare",
    "CNT": "America/St_Johns",
    "CST": "America/Chicago",
    "CTT": "Asia/Shanghai",
    "EAT": "Africa/Addis_Ababa",
    "ECT": "Europe/Paris",
    "IET": "America/Indiana/Indianapolis",
    "IST": "Asia/Kolkata",
    "JST": "Asia/Tokyo",
    "MIT": "Pacific/Apia",
    "NET": "Asia/Yerevan",
    "NST": "Pacific/Auckland",
    "PLT": "Asia/Karachi",
    "PNT": "America/Phoenix",
    "PRT": "America/Puerto_Rico",
    "PST": "America/Los_Angeles",
    "SST": "Pacific/Guadalcanal",
    "VST": "Asia/Ho_Chi_Minh",
}
JAVA_FIXED_IDS = {"EST": -5 * 60, "MST": -7 * 60, "HST": -10 * 60}
# Java's custom ids: GMT+5, GMT-08:00, GMT+0530 (unlike IANA's Etc/GMT+5, + is east).
_CUSTOM_ID = re.compile(r"^GMT([+-])(\d{1,2})(?::?(\d{2}))?$")


def parse_zone(name: str) -> tzinfo:
    """A time zone by IANA name, Java short id (``PST``) or Java custom id (``GMT-08:00``),
    as Chronos resolves them; ``""`` is UTC. An unknown name is refused (Java would quietly
    take GMT)."""
    if not isinstance(name, str):
        raise ScheduleError("scheduleTimeZone must be a string")
    if name in ("", "UTC", "Z"):
        return UTC
    if len(name) > 64 or ".." in name or name.startswith("/"):
        raise ScheduleError(f"unknown time zone {name!r}")
    custom = _CUSTOM_ID.match(name)
    if name in JAVA_FIXED_IDS or custom:
        if custom:
            sign, hours, minutes = custom.groups()
            offset = (int(hours) * 60 + int(minutes or 0)) * (-1 if sign == "-" else 1)
            if abs(offset) > 18 * 60:
                raise ScheduleError(f"unknown time zone {name!r} (offsets go to 18 hours)")
        else:
            offset = JAVA_FIXED_IDS[name]
        return timezone(timedelta(minutes=offset), name)
    try:
        return ZoneInfo(JAVA_SHORT_IDS.get(name, name))
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ScheduleError(f"unknown time zone {name!r} (use an IANA name)") from None


@dataclass(frozen=True)
class Schedule:
    """A parsed repeating interval: ``repeats`` (None = forever), the start as a wall-clock
    time in ``zone``, and the period."""

    repeats: int | None
    start_wall: datetime  # naive: the wall clock in `zone`
    period: Period
    zone: tzinfo

    def slot(self, k: int) -> float | None:
        """The instant (POSIX seconds) of slot ``k``; None past year 9999."""
        p = self.period
        try:
            wall = _add_months(self.start_wall, k * p.months) + timedelta(days=k * p.days)
            instant = wall.replace(tzinfo=self.zone, fold=0).timestamp()
        except (OverflowError, ValueError):
            return None
        return instant + k * p.seconds

    def first_index_at_or_after(self, t: float, lo: int = 0) -> int | None:
        """The smallest ``k >= lo`` whose slot is at or after ``t``; None if there is none
        before year 9999. Estimates from the average period length, then steps, so a clock
        step of years costs a few slot computations, not one per missed slot."""
        first = self.slot(lo)
        if first is None:
            return None
        if first >= t:
            return lo
        k = max(lo, lo + int((t - first) / self.period.approx_seconds) - 2)
        while True:
            s = self.slot(k)
            if s is None:
                return None
            if s >= t:
                break
            k += max(1, int((t - s) / self.period.approx_seconds) - 1)
        while k > lo:
            s = self.slot(k - 1)
            if s is None or s < t:
                break
            k -= 1
        return k


def _add_months(wall: datetime, months: int) -> datetime:
    if not months:
        return wall
    total = wall.year * 12 + (wall.month - 1) + months
    year, month = divmod(total, 12)
    day = min(wall.day, _days_in_month(year, month + 1))
    return wall.replace(year=year, month=month + 1, day=day)


def _days_in_month(year: int, month: int) -> int:
    if month == 12:
        return 31
    return (datetime(year, month + 1, 1) - datetime(year, month, 1)).days


def parse_schedule(text: str, zone_name: str, now: float) -> Schedule:
    """``R[n]/<start>/<period>`` with an optional ``zone_name`` (`parse_zone`). An empty
    start means ``now``. With a zone, the start's date and time are a wall time in that zone
    and an offset written in the start is dropped, as Chronos' ``withZoneRetainFields`` does
    ("the zone takes precedence"): ``2030-10-10T18:32:00Z`` in ``America/Los_Angeles`` is
    18:32 there. Without one, the start is an instant (UTC unless it carries an offset)."""
    if not isinstance(text, str):
        raise ScheduleError("schedule must be a string")
    parts = text.strip().split("/")
    if len(parts) != 3:
        raise ScheduleError(f"schedule {text!r} is not R[n]/<start>/<period>")
    rep, start_text, period_text = parts
    repeats = _parse_repeats(rep)
    zone = parse_zone(zone_name)
    period = parse_duration(period_text)
    if period.months > MAX_PERIOD_MONTHS or period.approx_seconds > MAX_PERIOD_MONTHS * 31 * 86400:
        raise ScheduleError(f"period {period.text!r} is longer than 100 years")
    if period.months == 0 and period.days == 0 and period.seconds < MIN_PERIOD_SECONDS:
        raise ScheduleError(f"period {period.text!r} is shorter than {MIN_PERIOD_SECONDS:g}s")
    start_wall = _parse_start(start_text, zone, now, retain_fields=bool(zone_name))
    return Schedule(repeats, start_wall, period, zone)


def _parse_repeats(rep: str) -> int | None:
    if not rep.startswith("R"):
        raise ScheduleError(f"repetitions {rep!r} must be R or R<n>")
    if rep == "R":
        return None
    digits = rep[1:]
    if not digits.isdigit() or not digits.isascii():
        raise ScheduleError(f"repetitions {rep!r} must be R or R<n>")
    if len(digits) > 12 or int(digits) > MAX_REPEATS:
        raise ScheduleError(f"repeat count {digits} is over the limit of {MAX_REPEATS}")
    return int(digits)


def _parse_start(text: str, zone: tzinfo, now: float, retain_fields: bool) -> datetime:
    if text == "":
        return datetime.fromtimestamp(math.floor(now), zone).replace(tzinfo=None)
    try:
        start = datetime.fromisoformat(text)
    except ValueError:
        raise ScheduleError(f"start {text!r} is not an ISO8601 date-time") from None
    if start.year < 1970:
        raise ScheduleError(f"start {text!r} is before 1970")
    if start.tzinfo is None or retain_fields:
        return start.replace(tzinfo=None)
    return start.astimezone(zone).replace(tzinfo=None)


def format_instant(t: float, zone: tzinfo) -> str:
    """``t`` as ISO8601 with its offset in ``zone`` (millisecond precision, Chronos' style)."""
    dt = datetime.fromtimestamp(t, zone)
    text = dt.isoformat(timespec="milliseconds")
    return text.replace("+00:00", "Z") if zone is UTC else text


def format_seconds(seconds: float) -> str:
    """Seconds as an ISO8601 duration that `parse_duration` reads back (``PT60S``,
    ``PT2592000S``, ``PT0.5S``; never an exponent)."""
    if seconds == int(seconds):
        return f"PT{int(seconds)}S"
    return "PT" + f"{seconds:.6f}".rstrip("0").rstrip(".") + "S"
