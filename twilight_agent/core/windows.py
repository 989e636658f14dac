"""Deploy windows (``TWILIGHT_DEPLOY_WINDOW``) and the minimum age of a build: pure, no I/O.

A window is ``DAYS HH:MM-HH:MM ZONE``: days as ``Mon``, ``Mon-Fri`` or a comma list of
both (``Mon,Wed,Fri-Sun``), a start and an end time of day (an end before the start runs
past midnight into the next day), and an IANA time zone (``Europe/Berlin``, ``UTC``).
Several windows are separated by ``;``. Daylight saving is the zone's: ``09:00`` is 09:00
local time on both sides of a change.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_WINDOW = re.compile(r"(?P<days>[A-Za-z,\-]+)\s+(?P<start>\d{1,2}:\d{2})-(?P<end>\d{1,2}:\d{2})"
                     r"\s+(?P<zone>[A-Za-z0-9_+\-/]+)")


@dataclass(frozen=True)
class Window:
    """One weekly window in one time zone."""

    days: frozenset[int]  # 0 = Monday
    start: dt.time
    end: dt.time
    zone: str
    text: str

    def _opening(self, day: dt.date) -> tuple[dt.datetime, dt.datetime]:
        tz = ZoneInfo(self.zone)
        begin = dt.datetime.combine(day, self.start, tz)
        end_day = day + dt.timedelta(days=1) if self.end <= self.start else day
        return begin, dt.datetime.combine(end_day, self.end, tz)

    def openings(self, around: dt.datetime, days: int = 8) -> list[tuple[dt.datetime,
                                                                       dt.datetime]]:
        """The window's openings from the day before ``around`` on, ``days`` of them."""
        local = around.astimezone(ZoneInfo(self.zone)).date()
        out = []
        for i in range(-1, days):
            day = local + dt.timedelta(days=i)
            if day.weekday() in self.days:
                out.append(self._opening(day))
        return out


def parse_windows(text: str) -> tuple[Window, ...]:
    """``TWILIGHT_DEPLOY_WINDOW`` as windows; ``ValueError`` with a one-line reason."""
    windows = []
    for part in (p.strip() for p in text.split(";")):
        if not part:
            continue
        m = _WINDOW.fullmatch(part)
        if m is None:
            raise ValueError(f"deploy window {part!r}: expected 'DAYS HH:MM-HH:MM ZONE', "
                             "e.g. 'Mon-Fri 09:00-17:00 Europe/Berlin'")
        windows.append(Window(_days(m["days"], part), _time(m["start"], part),
                              _time(m["end"], part), _zone(m["zone"], part), part))
    return tuple(windows)


def _days(text: str, part: str) -> frozenset[int]:
    days: set[int] = set()
    for item in text.lower().split(","):
        first, _, last = item.partition("-")
        if first not in DAYS or (last and last not in DAYS):
            raise ValueError(f"deploy window {part!r}: unknown day in {text!r} "
                             "(Mon, Tue, Wed, Thu, Fri, Sat, Sun)")
        a, b = DAYS.index(first), DAYS.index(last or first)
        days |= {d % 7 for d in range(a, b + 1 if b >= a else b + 8)}
    return frozenset(days)


def _time(text: str, part: str) -> dt.time:
    hours, minutes = (int(x) for x in text.split(":"))
    if hours == 24 and minutes == 0:
        return dt.time(0, 0)
    if hours > 23 or minutes > 59:
        raise ValueError(f"deploy window {part!r}: {text} is not a time of day")
    return dt.time(hours, minutes)


def _zone(name: str, part: str) -> str:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"deploy window {part!r}: unknown time zone {name!r}") from None
    return name


def is_open(windows: tuple[Window, ...], now: dt.datetime) -> bool:
    """No windows: always open."""
    return not windows or any(begin <= now < end for w in windows
                              for begin, end in w.openings(now))


def next_opening(windows: tuple[Window, ...], now: dt.datetime) -> dt.datetime | None:
    """When the next window opens after ``now`` (None: no windows)."""
    starts = [begin for w in windows for begin, _ in w.openings(now) if begin > now]
    return min(starts) if starts else None


def age_left(first_seen: float, now: float, min_age: float) -> float:
    """Seconds a build seen at ``first_seen`` still has to wait (0: old enough)."""
    return max(first_seen + min_age - now, 0.0)
