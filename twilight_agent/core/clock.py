"""One way to inject time: a ``Clock`` gives monotonic seconds and sleeps.

Production code uses ``SYSTEM``; unit tests pass a fake whose ``sleep`` advances ``now``.
"""

from __future__ import annotations

import datetime as dt
import time
from typing import Protocol


class Clock(Protocol):
    """Monotonic time and a way to wait."""

    def now(self) -> float: ...

    def sleep(self, seconds: float) -> None: ...


class SystemClock:
    """``time.monotonic`` and ``time.sleep``."""

    def now(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


SYSTEM = SystemClock()


def utcnow() -> str:
    """Wall-clock time as the history, the quarantine and webhooks write it (ISO 8601 UTC)."""
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")
