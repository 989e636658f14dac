"""Promotion, the pure rules: when a canary points a second tag (``TWILIGHT_PROMOTE_TO``,
e.g. ``stable``) at a build it deployed and kept, and when it must not.

A promotion is one row per digest in the store's ``promotion`` table, moving through
steps (each written before what it stands for happens):

``waiting``   due at the deploy's history ``finished`` time (after its watch) +
              ``TWILIGHT_PROMOTE_AFTER``; a restart reads the same ``due``.
``promoting`` written before the registry is asked anything; an agent that dies here
              finds it at its next poll and does the whole step again (the PUT of the same
              manifest bytes under the tag is idempotent: the tag points at the old digest
              or the new one, never at anything else).
``promoted``  the tag points at the digest; the history row says so.
``dropped``   not promoted: superseded by another deploy, quarantined, never verified
              here (with verification on), older than what the tag points at, not
              running (or unhealthy) here at the due time, or an operator promoted
              another build.

Which build is older: the order in which each digest first ran on this host (its history:
the oldest deployed row that brought it in or replaced it); for a digest this host never
ran, the ``org.opencontainers.image.created`` labels of both builds; when neither tells,
the promotion goes ahead (this canary is the tag's writer).
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Collection, Sequence
from dataclasses import dataclass

from twilight_agent.core.history import HistoryRow

WAITING, PROMOTING, PROMOTED, DROPPED = "waiting", "promoting", "promoted", "dropped"
STEPS = (WAITING, PROMOTING, PROMOTED, DROPPED)
PHASE = "PROMOTE"  # the history row's phase


@dataclass(frozen=True)
class Promotion:
    """One build on its way to the promote tag."""

    id: str  # also the history row's id
    digest: str
    tag: str  # the build's own tag (sha-xxxxxxx)
    to_tag: str  # TWILIGHT_PROMOTE_TO
    due: float  # epoch seconds
    step: str
    forced: bool = False  # an operator's `promote TAG`: no age, order or quarantine rule
    reason: str = ""


class Order(enum.Enum):
    NEWER = "newer"
    OLDER = "older"
    SAME = "same"
    UNKNOWN = "unknown"


def order_by_history(history: Sequence[HistoryRow], candidate: str,
                     current: str) -> Order:
    """``candidate`` against ``current`` by when each first ran on this host (rows newest
    first, as the store returns them): the oldest ``deployed`` row that brought it in, or
    that replaced it (it ran before that row's build, so a build the agent found running
    and one an operator went back to are placed where they first ran)."""
    if candidate == current:
        return Order.SAME
    first: dict[str, float] = {}  # digest -> age (larger is older)
    for i, row in enumerate(history):
        if not row.deployed:
            continue
        for digest, age in ((row.to_digest, float(i)), (row.from_digest, i + 0.5)):
            if digest is not None:
                first[digest] = max(first.get(digest, -1.0), age)
    if candidate not in first or current not in first:
        return Order.UNKNOWN
    return Order.NEWER if first[candidate] < first[current] else Order.OLDER


def order_by_created(candidate: str | None, current: str | None) -> Order:
    """Two ``org.opencontainers.image.created`` labels (RFC 3339); UNKNOWN if one is
    missing or unreadable."""
    try:
        a, b = _instant(candidate), _instant(current)
    except ValueError:
        return Order.UNKNOWN
    if a is None or b is None:
        return Order.UNKNOWN
    return Order.SAME if a == b else Order.NEWER if a > b else Order.OLDER


def _instant(value: str | None) -> dt.datetime | None:
    if not value:
        return None
    text = value.strip().replace("Z", "+00:00")
    if "." in text:  # Python before 3.11 takes at most 6 fraction digits
        head, _, rest = text.partition(".")
        digits = "".join(c for c in rest if c.isdigit())
        text = f"{head}.{digits[:6]}{rest[len(digits):]}"
    moment = dt.datetime.fromisoformat(text)
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.timezone.utc)


def refusal(p: Promotion, *, running: str | None, quarantined: Collection[str],
            order: Order, verified: bool = True) -> str | None:
    """Why ``p`` must not move its tag now; None when it may. An operator's forced
    promotion skips every rule (its build was verified when it was named)."""
    if p.forced:
        return None
    if p.digest in quarantined:
        return "quarantined"
    if not verified:
        return "its signature was never verified on this host"
    if order is Order.OLDER:
        return f"older than the build {p.to_tag} points at"
    if running != p.digest:
        return "not running healthy on this host"
    return None


def is_due(p: Promotion, now: float) -> bool:
    return p.step == WAITING and now >= p.due
