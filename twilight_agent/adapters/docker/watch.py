"""The watch after commit: the committed units must keep running, and keep answering their
health URL, until the watch's deadline.

Every tick (~0.25 s) it reads each unit's container state and fails at once on exit, death,
disappearance, a restart, an OOM kill or a Docker HEALTHCHECK saying ``unhealthy`` (a
signal-killed container gets ``Tunables.signal_grace_s`` first, as in the gate: that may be dockerd
stopping everything). Every ``interval`` it probes each URL; a URL that has failed without
a break for ``timeout`` seconds fails the watch (a blip shorter than that does not).

While the engine does not answer, nothing is concluded; a container the engine stopped on
its way down must be running again within ``timeout`` of the engine's return. At the
deadline the engine must have answered for every unit: if it is away then, the watch waits
for it (a stop request still ends the wait).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from twilight_agent.adapters.docker.probe import (
    Probe,
    ProbeResult,
    StateSource,
    state_failure,
)
from twilight_agent.core.clock import Clock
from twilight_agent.core.ports import ContainerState, HealthVerdict
from twilight_agent.core.tunables import DEFAULT
from twilight_agent.errors import RuntimeError_


@dataclass
class _Unit:
    """One watched container."""

    container_id: str
    url: str | None
    # Restarts allowed: none (the gate passed it with none); counted afresh after the
    # engine itself went away (a restarted dockerd starts its containers again).
    baseline: int | None = 0
    answered: bool = False  # the engine answered for it on the last look
    engine_stopped_at: float | None = None  # found stopped after the engine went away
    killed_seen_at: float | None = None
    failing_since: float | None = None  # the URL fails without a break since then
    last_probe: ProbeResult | None = None
    next_probe_at: float = 0.0


class Watcher:
    """``HealthPort.watch_over``: one watch of the committed units until ``until``."""

    def __init__(self, runtime: StateSource, probe: Probe, clock: Clock, tick: float,
                 *, timeout: float, interval: float) -> None:
        self._runtime = runtime
        self._probe = probe
        self._now = clock.now
        self._sleep = clock.sleep
        self._tick = tick
        self._timeout = timeout
        self._interval = interval
        self._engine_away = False

    def run(self, units: Sequence[tuple[str, str | None]], until: float,
            should_stop: Callable[[], bool] | None) -> HealthVerdict:
        start = self._now()
        watched = [_Unit(cid, url) for cid, url in units]
        while True:
            if should_stop is not None and should_stop():
                return HealthVerdict(False, "interrupted", self._since(start),
                                     {"interrupted": True})
            for index, unit in enumerate(watched):
                failure = self._look(unit)
                if failure:
                    return HealthVerdict(False, failure, self._since(start),
                                         {"unit": index, "container_id": unit.container_id})
            if self._engine_away and all(u.answered and u.engine_stopped_at is None
                                         for u in watched):
                self._engine_away = False  # back, and every unit runs again
            if self._now() >= until and all(u.answered for u in watched):
                return HealthVerdict(True, "no failure during the watch", self._since(start),
                                     {"units": len(watched)})
            self._sleep(max(min(self._tick, until - self._now()), 0.01))

    def _since(self, start: float) -> float:
        return round(self._now() - start, 3)

    def _look(self, unit: _Unit) -> str | None:
        try:
            st = self._runtime.state(unit.container_id)
        except RuntimeError_:
            self._engine_away, unit.answered, unit.baseline = True, False, None
            return None
        unit.answered = True
        if unit.baseline is None:
            unit.baseline = st.restart_count
        failure = self._state_failure(unit, st)
        if failure is None and unit.url and self._now() >= unit.next_probe_at:
            failure = self._probe_once(unit)
        return failure

    def _state_failure(self, unit: _Unit, st: ContainerState) -> str | None:
        failure = state_failure(st, unit.baseline or 0)
        if failure is None:
            unit.engine_stopped_at = unit.killed_seen_at = None
            return None
        now = self._now()
        if self._engine_away and not st.oom_killed and st.status in ("exited", "created"):
            # dockerd went away and stopped it; one with a restart policy comes back
            unit.engine_stopped_at = unit.engine_stopped_at or now
            if now - unit.engine_stopped_at < self._timeout:
                return None
            return f"not running again {self._timeout:g}s after the engine came back"
        if st.status == "exited" and st.exit_code in (137, 143) and not st.oom_killed:
            unit.killed_seen_at = unit.killed_seen_at or now
            if now - unit.killed_seen_at < DEFAULT.signal_grace_s:
                return None
        return failure

    def _probe_once(self, unit: _Unit) -> str | None:
        assert unit.url is not None
        result = self._probe(unit.url, min(self._interval, DEFAULT.probe_timeout_cap_s))
        now = self._now()
        unit.last_probe, unit.next_probe_at = result, now + self._interval
        if result.ok:
            unit.failing_since = None
            return None
        unit.failing_since = unit.failing_since if unit.failing_since is not None else now
        if now - unit.failing_since >= self._timeout:
            return f"health URL failing for {self._timeout:g}s: {result.text}"
        return None
