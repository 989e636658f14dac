"""The steps after commit: watch the committed version with the previous one kept parked,
then remove the parked containers.

The watch's deadline is wall-clock time in the journal, so an agent restarted during the
watch resumes it with the time that is left (or, past the deadline, takes one look at the
units). A stop request ends the watch early with the journal left open at ``WATCH``:
whoever takes the deploy lock next resumes it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

from twilight_agent.core import machine as m
from twilight_agent.core.ports import Snapshot
from twilight_agent.errors import DockerUnavailable, TwilightError
from twilight_agent.logs import get_logger
from twilight_agent.run.deploy_run import Step

log = get_logger("twilight.deploy")


def watch(s: Step, _: m.Watch) -> m.Event | None:
    c, run = s.ctx, s.run
    if c.config.watch <= 0:
        return None
    watcher = "daemon" if c.hand_off_watch else c.watcher
    if run.watch_until is None or run.watcher != watcher:  # status says who watches
        run.watch_until = run.watch_until or c.clock.wall() + c.config.watch
        run.watcher = watcher
        c.store.journal(run.deploy_id, m.State.WATCH.value, "Watch", run.payload("Watch"))
    if c.hand_off_watch:
        log.info("watch_handed_off", deploy_id=run.deploy_id, to="daemon",
                 left_s=round(max(run.watch_until - c.clock.wall(), 0.0), 1))
        return m.WatchSuspended()
    units = s.snap.units()
    watched: list[tuple[str, str | None]] = []
    for index, unit in enumerate(units):
        pair = _watched(s, index, unit)
        if pair is None:
            return m.WatchFailed(f"the new {unit.name} is gone (watch)", index, len(units))
        watched.append(pair)
    return _watch(s, watched, units)


def _watched(s: Step, index: int, unit: Snapshot) -> tuple[str, str | None] | None:
    """The unit's new container and its health URL; None when it is gone."""
    c = s.ctx
    cid = s.engine("watch", lambda: c.target.new_instance(unit, s.run.new_ids.get(index)))
    if cid is None:
        return None
    s.run.new_ids[index] = cid
    return cid, s.engine("watch", lambda: c.target.health_url(unit, cid))


def _watch(s: Step, watched: list[tuple[str, str | None]],
           units: tuple[Snapshot, ...]) -> m.Event | None:
    c, run, cfg = s.ctx, s.run, s.ctx.config
    assert run.watch_until is not None
    left = max(run.watch_until - c.clock.wall(), 0.0)
    log.info("watching", deploy_id=run.deploy_id, left_s=round(left, 1), units=len(watched),
             until=dt.datetime.fromtimestamp(run.watch_until, dt.timezone.utc).strftime(
                 "%Y-%m-%dT%H:%M:%SZ"))
    if c.notice is not None and run.to is not None:
        c.notice(f"healthy: watching {run.to.tag} for {left:.0f}s more, the previous version "
                 "kept parked (Ctrl-C leaves the watch to the next poll or start)")
    verdict = c.health.watch_over(watched, seconds=left, timeout=cfg.health_timeout,
                                  interval=cfg.health_interval,
                                  should_stop=s.ticking("watch"))
    if verdict.ok:
        return None
    if verdict.detail.get("interrupted"):
        log.info("watch_suspended", deploy_id=run.deploy_id,
                 left_s=round(max(run.watch_until - c.clock.wall(), 0.0), 1),
                 resumed_by="the next deploy-lock holder (poll, CLI command, start-up)")
        return m.WatchSuspended()
    index = int(verdict.detail.get("unit", 0))
    into = cfg.watch - max(run.watch_until - c.clock.wall(), 0.0)
    return m.WatchFailed(f"{units[index].name}: {verdict.reason} ({into:.0f}s into the "
                         f"{cfg.watch:g}s watch)", index, len(units))


def remove_parked(s: Step, _: m.RemoveParked) -> m.Event:
    """The watch is over (or off): the parked previous containers go; images are kept."""
    try:
        s.engine("remove_parked", lambda: s.ctx.target.remove_parked(s.snap))
    except DockerUnavailable:
        raise
    except TwilightError as exc:
        s.warn("remove_parked", exc)
    return m.WatchEnded()


HANDLERS: dict[type, Callable[[Step, Any], m.Event | None]] = {
    m.Watch: watch, m.RemoveParked: remove_parked,
}
