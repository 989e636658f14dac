"""HealthPort: the health gate a new (or restored) container must pass.

Every tick (~0.25 s) it reads the container state and fails at once on exit, death,
disappearance, a restart, an OOM kill or a Docker HEALTHCHECK saying ``unhealthy``. At most
every ``interval`` seconds it probes the URL (httpx GET under one overall deadline of
``min(interval, 5)`` seconds for connect, headers and body together, reading at most
``MAX_PROBE_BODY`` bytes of the body: a server that drips bytes or streams for ever cannot
hold the gate). The gate is passed when the probe answers 2xx and, when the image
has a HEALTHCHECK, Docker says ``healthy``; then the same checks must hold for ``soak``
seconds. Not passed within ``timeout``: fail, naming the last probe result.

While the engine itself does not answer (dockerd restarting), nothing is concluded: the
window and the soak start over once it answers again, and a container found stopped after
that (dockerd stops them all and starts those with a restart policy again) is waited for
within the new window instead of failing at once.

The clock, the sleep and the probe are injectable so unit tests run in milliseconds.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from twilight_agent.adapters.docker.probe import (
    MAX_PROBE_BODY,
    HttpProbe,
    Probe,
    ProbeResult,
    StateSource,
    state_failure,
)
from twilight_agent.adapters.docker.watch import Watcher
from twilight_agent.core.clock import SYSTEM, Clock
from twilight_agent.core.ports import ContainerState, HealthVerdict
from twilight_agent.core.tunables import DEFAULT
from twilight_agent.errors import RuntimeError_

__all__ = ["MAX_PROBE_BODY", "NO_SIGNAL_WARNING", "HealthGate", "HttpProbe", "ProbeResult"]

NO_SIGNAL_WARNING = "no health URL and no HEALTHCHECK: passed on container state alone"


@dataclass
class _Run:
    """One verify() call in progress."""

    container_id: str
    url: str | None
    timeout: float
    interval: float
    soak: float
    start: float
    window_start: float = 0.0  # the timeout counts from here: the start, or the engine's return
    baseline_restarts: int | None = None
    last_probe: ProbeResult | None = None
    next_probe_at: float = 0.0
    probes: int = 0
    failures: int = 0  # this many 5xx answers in a row fail the gate at once (0: never)
    server_errors: int = 0  # 5xx answers in a row so far
    passed_at: float | None = None
    last_state: ContainerState | None = None
    killed_seen_at: float | None = None  # when the container was first seen signal-killed
    watch: tuple[str, ...] = ()  # units swapped before, which must keep running
    watch_restarts: dict[str, int] = field(default_factory=dict)
    detail: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> str:
        if self.last_probe is not None and not self.last_probe.ok:
            return self.last_probe.text
        st = self.last_state
        if st is not None and st.health not in (None, "healthy"):
            return f"docker health {st.health}"
        if st is not None and not st.running:
            return f"container {st.status}"
        return self.last_probe.text if self.last_probe else "no answer yet"


class HealthGate:
    """Implements HealthPort.verify against a runtime's container state and an HTTP probe."""

    def __init__(self, runtime: StateSource, *, probe: Probe | None = None,
                 clock: Clock = SYSTEM, tick: float = DEFAULT.health_tick_s) -> None:
        self._runtime = runtime
        self._probe = probe
        self._clock_obj = clock
        self._clock = clock.now
        self._sleep = clock.sleep
        self._tick = tick

    def verify(self, container_id: str, url: str | None, *, timeout: float, interval: float,
               soak: float, should_stop: Callable[[], bool] | None = None,
               watch: Sequence[str] = (), failures: int = 0) -> HealthVerdict:
        now = self._clock()
        run = _Run(container_id, url, timeout, interval, soak, start=now, window_start=now,
                   watch=tuple(watch), failures=failures)
        with self._probing() as probe:
            while True:
                verdict = self._step(run, probe, should_stop)
                if verdict is not None:
                    return verdict
                self._sleep(self._pause(run))

    def watch_over(self, units: Sequence[tuple[str, str | None]], *, seconds: float,
                   timeout: float, interval: float,
                   should_stop: Callable[[], bool] | None = None) -> HealthVerdict:
        """The watch after commit (``adapters/docker/watch.py``) over ``(container, url)`` pairs."""
        with self._probing() as probe:
            watcher = Watcher(self._runtime, probe, self._clock_obj, self._tick,
                              timeout=timeout, interval=interval)
            return watcher.run(units, self._clock() + max(seconds, 0.0), should_stop)

    @contextmanager
    def _probing(self) -> Iterator[Probe]:
        if self._probe is not None:
            yield self._probe
            return
        http = HttpProbe()
        try:
            yield http
        finally:
            http.close()

    def _step(self, run: _Run, probe: Probe,
              should_stop: Callable[[], bool] | None) -> HealthVerdict | None:
        if should_stop is not None and should_stop():
            return self._verdict(run, False, "interrupted")
        st = self._observe(run)
        if st is not None and (other := self._watched_failure(run)):
            return self._verdict(run, False, self._during_soak(run, other))
        if st is not None and (failure := state_failure(st, run.baseline_restarts or 0)) \
                and not self._stopped_by_engine(run, st) and not self._signal_grace(run, st):
            return self._verdict(run, False, self._during_soak(run, failure))
        if run.url and self._clock() >= run.next_probe_at:
            run.last_probe = probe(run.url, min(run.interval, DEFAULT.probe_timeout_cap_s))
            run.probes += 1
            run.next_probe_at = self._clock() + run.interval
            if run.passed_at is not None and not run.last_probe.ok:
                return self._soak_broken(run, run.last_probe.text)
            if self._broken(run, run.last_probe):
                return self._verdict(run, False, f"{run.server_errors} {run.last_probe.text} "
                                     "answers in a row (the app is up and failing)")
        return self._judge(run, st)

    @staticmethod
    def _broken(run: _Run, probe: ProbeResult) -> bool:
        """``failures`` 5xx answers in a row: not a slow boot (that refuses connections or
        times out, and keeps the whole window), an app that answers and fails."""
        run.server_errors = run.server_errors + 1 if probe.server_error else 0
        return run.failures > 0 and run.server_errors >= run.failures

    @staticmethod
    def _stopped_by_engine(run: _Run, st: ContainerState) -> bool:
        """The engine went away during this verify and the container is stopped (not OOM
        killed): a restarting dockerd stops every container and starts those with a restart
        policy again, so this is not the image failing. Wait for it; the window counts from
        the engine's return, and a container that never comes back fails on the timeout."""
        return "engine_error" in run.detail and not st.oom_killed \
            and st.status in ("exited", "created")

    def _watched_failure(self, run: _Run) -> str | None:
        """A unit swapped before this one stopped, restarted or died (a group deploy)."""
        for cid in run.watch:
            try:
                st = self._runtime.state(cid)
            except RuntimeError_:
                return None  # the engine is away: _observe handles it on the next tick
            base = run.watch_restarts.setdefault(cid, st.restart_count)
            failure = state_failure(st, base)
            if failure and not self._stopped_by_engine(run, st) \
                    and not self._signal_grace(run, st):
                return f"{failure} (an earlier unit, {cid[:12]})"
        return None

    def _signal_grace(self, run: _Run, st: ContainerState) -> bool:
        """A container killed by a signal (exit 137/143) may be dockerd stopping everything
        on its way down, while its API still answers: look again for ``Tunables.signal_grace_s``
        before blaming the image (by then a restarting engine no longer answers)."""
        if st.status != "exited" or st.exit_code not in (137, 143) or st.oom_killed:
            return False
        if run.killed_seen_at is None:
            run.killed_seen_at = self._clock()
        return self._clock() - run.killed_seen_at < DEFAULT.signal_grace_s

    def _soak_broken(self, run: _Run, probe_text: str) -> HealthVerdict | None:
        """A probe failed during the soak: a verdict, unless the engine is what went away."""
        st = self._observe(run)
        if st is None or self._signal_grace(run, st):
            return None
        failure = state_failure(st, run.baseline_restarts or 0) or probe_text
        return self._verdict(run, False, f"{failure} during soak")

    def _observe(self, run: _Run) -> ContainerState | None:
        """The container state, or None while the engine does not answer (not a verdict)."""
        try:
            st = self._runtime.state(run.container_id)
        except RuntimeError_ as exc:
            # The engine itself is down (e.g. dockerd restarting): not the image's fault.
            # Start over once it answers again: a new window, a new soak.
            run.detail["engine_error"] = str(exc)
            run.last_state, run.passed_at, run.window_start = None, None, self._clock()
            run.baseline_restarts = None  # a restarted engine counts restarts afresh
            return None
        if run.baseline_restarts is None:
            run.baseline_restarts = st.restart_count
        run.last_state = st
        return st

    def _judge(self, run: _Run, st: ContainerState | None) -> HealthVerdict | None:
        now = self._clock()
        if st is not None and self._passing(run, st):
            if run.passed_at is None:
                run.passed_at = now
                run.detail["passed_after_s"] = round(now - run.start, 3)
            if now - run.passed_at >= run.soak:
                return self._verdict(run, True, "healthy")
            return None
        if run.passed_at is None and now - run.window_start >= run.timeout:
            return self._verdict(run, False, f"timeout after {run.timeout:g}s: {run.summary()}")
        return None

    @staticmethod
    def _passing(run: _Run, st: ContainerState) -> bool:
        if not st.running or st.status != "running":
            return False
        if st.health is not None and st.health != "healthy":
            return False
        if run.url:
            return run.last_probe is not None and run.last_probe.ok
        if st.health is None:
            run.detail["warning"] = NO_SIGNAL_WARNING
        return True

    @staticmethod
    def _during_soak(run: _Run, reason: str) -> str:
        return f"{reason} during soak" if run.passed_at is not None else reason

    def _pause(self, run: _Run) -> float:
        now = self._clock()
        wait = self._tick
        if run.url:
            wait = min(wait, max(run.next_probe_at - now, 0.0))
        return max(wait, 0.01)

    def _verdict(self, run: _Run, ok: bool, reason: str) -> HealthVerdict:
        st = run.last_state
        detail = dict(run.detail)
        detail.update(probes=run.probes, probe=run.last_probe.text if run.last_probe else None,
                      status=st.status if st else None, health=st.health if st else None,
                      restart_count=st.restart_count if st else None)
        return HealthVerdict(ok=ok, reason=reason, after_s=round(self._clock() - run.start, 3),
                             detail=detail)
