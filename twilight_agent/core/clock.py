"""The one way to read time: an injected ``Clock`` (monotonic seconds, wall-clock seconds,
a way to wait).

Production code uses ``SYSTEM``; unit tests pass a fake whose ``sleep`` advances ``now``.
This module is the only one that reads the system's clocks (``tests/unit/test_structure.py``).
"""

from __future__ import annotations

import datetime as dt
import time
from typing import Protocol


class Clock(Protocol):
    """Monotonic time (durations, deadlines), wall-clock time (epoch seconds: deploy
    windows, a build's age, the watch's deadline in the journal) and a way to wait."""

    def now(self) -> float: ...

    def wall(self) -> float: ...

    def sleep(self, seconds: float) -> None: ...


class SystemClock:
    """``time.monotonic``, ``time.time`` and ``time.sleep``."""

    def now(self) -> float:
        return time.monotonic()

    def wall(self) -> float:
        return time.time()

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


SYSTEM = SystemClock()


def utc(clock: Clock = SYSTEM) -> dt.datetime:
    """The clock's wall-clock time as an aware UTC datetime."""
    return dt.datetime.fromtimestamp(clock.wall(), dt.timezone.utc)


def utcnow(clock: Clock = SYSTEM) -> str:
    """``utc`` as the history, the quarantine and webhooks write it (ISO 8601 UTC)."""
    return utc(clock).isoformat(timespec="seconds").replace("+00:00", "Z")


def stamp(clock: Clock = SYSTEM) -> str:
    """``utc`` compact, for names: ``20260101T000000Z``."""
    return utc(clock).strftime("%Y%m%dT%H%M%SZ")
