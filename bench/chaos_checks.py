"""The chaos soak's invariants, checked at a settled moment (``check_settled``) and over
the engine's events at the end (``check_engine_events``)."""

from __future__ import annotations

import contextlib
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bench.chaos_run import Chaos


def check_settled(chaos: Chaos, snap: dict[str, Any]) -> None:
    count, st, digest = chaos.ledger.count, snap["status"], snap["digest"]
    names = sorted(c.name for c in snap["containers"])
    count("not exactly one app container", len(snap["running"]) == 1, f"{names}")
    count("something left parked", len(snap["containers"]) == 1, f"{names}")
    if len(snap["running"]) != 1:
        return
    build = chaos.builds.of(digest)
    count("service not answering its build", build is not None and _serves(chaos, build.served),
          f"{digest[:19]} ({build.version if build else 'unknown'}): {chaos.site.healthz()}")
    first = chaos.builds.all[0].digest
    count(".env does not name what runs", snap["env"] == digest or (
        snap["env"] == "" and digest == first), f".env {snap['env'][:19]} runs {digest[:19]}")
    current = (st.get("current") or {}).get("digest")
    count("status disagrees with the engine", current == digest, f"{current} vs {digest}")
    pinned = chaos.pin.digest if chaos.pin else None
    count("a known-bad build serving", build is None or not build.bad, f"{build}")
    quarantined = {q["digest"] for q in st.get("quarantined") or []}
    count("quarantined build running", digest not in quarantined or digest == pinned, digest)
    count("halted", not st.get("halted"), str(st.get("halted_reason")))
    _check_back(chaos, build, pinned)
    calm = time.monotonic() > max(chaos.calm_at, chaos.pin_at + 40)
    count("pin not running", pinned is None or not calm or digest == pinned,
          f"pinned {chaos.pin.tag if chaos.pin else ''}, running {build}")
    out = b""
    with contextlib.suppress(Exception):
        out = snap["running"][0].exec_run(["cat", "/data/marker"]).output
    count("volume data lost", out.strip() == b"chaos", repr(out[:80]))


def _serves(chaos: Chaos, version: str, within: float = 10) -> bool:
    """The running build answers as itself (a moment after an engine restart, it may be
    booting again: a few seconds' grace)."""
    deadline = time.monotonic() + within
    while True:
        if chaos.site.healthz() == (200, f"ok {version}"):
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.3)


def _check_back(chaos: Chaos, build: Any, pinned: str | None) -> None:
    """CI moved ``main`` back to ``target`` while ``then`` ran: unless an operator pinned
    since, the agent must not have gone there when it is older than what ran."""
    for target, then, at in chaos.back:
        if build is None or target.digest != build.digest or then is None:
            continue
        if chaos.pin_at > at or pinned == target.digest:
            continue
        chaos.ledger.count("track followed back to an older build",
                           target.n >= then.n, f"{then.version} -> {target.version}")


def check_engine_events(chaos: Chaos, st: dict[str, Any]) -> int:
    """Pulls before a signature existed; containers created from a build after the agent
    had quarantined it (and no operator ever pinned it)."""
    from bench.chaos_run import quarantine_time
    assert chaos.watch is not None
    time.sleep(1)  # the stream's last events
    quarantined = {q["digest"]: quarantine_time(q) for q in st.get("quarantined") or []}
    events = list(chaos.watch.events)
    for ev in events:
        b = chaos.builds.of(ev.digest)
        if ev.kind == "pull" and b is not None:
            chaos.ledger.count("unsigned build pulled",
                               b.signed_at is not None and ev.t >= b.signed_at - 0.5,
                               f"{b.version} pulled at {ev.t:.1f}, signed {b.signed_at}")
        at = quarantined.get(ev.digest)
        if ev.kind == "create" and at and ev.digest not in chaos.pins:
            chaos.ledger.count("quarantined build created again", ev.t <= at + 1,
                               f"{b.version if b else ev.digest[:19]} created {ev.t - at:.1f}s "
                               "after its quarantine")
    return len(events)
