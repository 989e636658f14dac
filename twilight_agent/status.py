"""What ``status``, the STATUS= line and the sinks' totals say, read from the store."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable
from typing import Any, Protocol

from twilight_agent.core.clock import SYSTEM, Clock
from twilight_agent.core.events import Totals
from twilight_agent.core.models import Release
from twilight_agent.core.outcomes import Outcome, release_dict
from twilight_agent.core.ports import JournalEntry, StorePort


class Follows(Protocol):
    """What the agent follows: a pin, else the track (the Agent's ``AgentConfig``)."""

    @property
    def pin(self) -> str: ...

    @property
    def track(self) -> str: ...


def totals(store: StorePort) -> Totals:
    """Finished deploys by outcome, the last success, what serves now, halted or not,
    the phase of an unfinished deploy and the build held back."""
    counts = store.outcome_counts()
    meta = store.meta()
    journal = store.open_journal()
    hold = store.get_meta("hold")
    hold = hold if isinstance(hold, dict) else {}
    return Totals(deploys={k: n for k, (n, _) in counts.items()},
                  last_success=counts.get(Outcome.DEPLOYED.value, (0, ""))[1] or None,
                  current=meta.current, halted=meta.halted is not None,
                  phase=journal.phase if journal else ("HALTED" if meta.halted else "IDLE"),
                  phase_since=journal.at if journal else None,
                  hold=str(hold["kind"]) if hold.get("kind") else None,
                  hold_since=str(hold["since"]) if hold.get("since") else None)


def status(store: StorePort, follows: Follows,
           live_current: Callable[[], Release | None], clock: Clock = SYSTEM) -> dict[str, Any]:
    """``status --json``: current/previous, pin, track, quarantine, phase, last result."""
    journal = store.open_journal()
    meta = store.meta()
    phase = journal.phase if journal else ("HALTED" if meta.halted else "IDLE")
    last = meta.last_result
    watch = _watch(journal, clock) if journal and phase == "WATCH" else None
    return {
        "current": watch["to"] if watch else release_dict(meta.current or live_current()),
        "previous": watch["from"] if watch else release_dict(meta.previous),
        "watch": watch,
        "pinned": follows.pin or None,
        "track": follows.track,
        "quarantined": [{"digest": q.digest, "tag": q.tag, "reason": q.reason, "at": q.at}
                        for q in store.quarantined()],
        "phase": phase,
        "last_result": dataclasses.asdict(last) if last else None,
        "halted": meta.halted is not None,
        "halted_reason": meta.halted.reason if meta.halted else None,
        "held": _held(store),
    }


def _held(store: StorePort) -> dict[str, Any] | None:
    """The track's build held back, as the last poll told it: waiting for its signature
    (``kind`` signature) or older than what runs (``kind`` downgrade)."""
    hold = store.get_meta("hold")
    if not isinstance(hold, dict):
        return None
    return {k: hold.get(k) for k in ("kind", "tag", "digest", "reason", "since")}


def _watch(journal: JournalEntry, clock: Clock) -> dict[str, Any] | None:
    """The watch in progress: the committed release, the parked one, the time left."""
    p = journal.payload
    until = p.get("watch_until")
    snap = p.get("snapshot") or {}
    if not isinstance(until, (int, float)):
        return None
    left = max(until - clock.wall(), 0.0)
    prev = {"tag": snap.get("tag"), "digest": snap.get("digest")} if snap.get("digest") else None
    return {"deploy_id": journal.deploy_id, "to": p.get("to"), "from": prev,
            "by": p.get("watcher") or None,
            "until": dt.datetime.fromtimestamp(until, dt.timezone.utc).isoformat(
                timespec="seconds").replace("+00:00", "Z"),
            "left_s": round(left, 1)}


def status_line(store: StorePort, follows: Follows) -> str:
    """The one-line summary (systemd STATUS=, CLI reports)."""
    meta = store.meta()
    if meta.halted:
        return f"HALTED: {meta.halted.reason}"[:120]
    cur = meta.current
    at = f" at {cur.tag or cur.digest.short}" if cur else ""
    if follows.pin:
        return f"pinned to {follows.pin}{at}"
    return f"following {follows.track}{at}"
