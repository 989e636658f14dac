"""Progress of the work in flight, as the watchdog judges it. Pure.

A run reports that it moved (``Progress``: pull bytes grew, a swarm task changed state,
the health gate or the watch took another look, the machine began a step) by calling the
callable its context was given; it never learns who listens. The daemon's ``Heartbeat``
keeps when that last happened and what it was, and asks ``stalled``: work that keeps
moving is never stuck, however long it takes; work quiet for longer than the bound (plus
what the step said it may be quiet for: a pre-deploy task's own timeout, the drain) is.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol


class Progress(Protocol):
    """``progress("pull: 12.5 MB")``: the work moved. ``quiet_s``: the step that begins now
    may say nothing for that long on its own (it has its own bound)."""

    def __call__(self, what: str, quiet_s: float = 0.0) -> None: ...


def no_progress(what: str, quiet_s: float = 0.0) -> None:
    """The ``Progress`` of a run nobody watches (the CLI)."""


@dataclass(frozen=True)
class Stall:
    """Work that did not move for longer than it may."""

    what: str  # the last thing that moved
    quiet_s: float  # how long ago
    limit_s: float  # how long it could have been quiet


class Heartbeat:
    """When the work in flight last moved. Thread-safe: the run beats from its thread, the
    daemon's loop reads from its own."""

    def __init__(self, now: Callable[[], float]) -> None:
        self._now = now
        self._lock = threading.Lock()
        self._at = now()
        self._what = "idle"
        self._allowed = 0.0

    def beat(self, what: str, quiet_s: float = 0.0) -> None:
        """A ``Progress``: the work moved (``what``), and may be quiet ``quiet_s`` more."""
        at = self._now()
        with self._lock:
            self._at, self._what, self._allowed = at, what, max(quiet_s, 0.0)

    def stalled(self, bound: float) -> Stall | None:
        """The stall, when nothing moved for longer than ``bound`` + the step's own quiet."""
        now = self._now()
        with self._lock:
            at, what, allowed = self._at, self._what, self._allowed
        limit = bound + allowed
        quiet = now - at
        return Stall(what, round(quiet, 1), limit) if quiet > limit else None
