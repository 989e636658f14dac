"""The health gate's decisions, on a fake clock, a fake container and a fake probe."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from twilight_agent.adapters.docker.health import NO_SIGNAL_WARNING, HealthGate, ProbeResult
from twilight_agent.core.ports import ContainerState
from twilight_agent.errors import DockerUnavailable

URL = "http://127.0.0.1:8080/healthz"
RUNNING = ContainerState(status="running", running=True)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds > 0
        self.now += seconds


class AsClock:
    """The gate's ``Clock`` port over the test's clock (whose ``now`` is a number)."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock

    def now(self) -> float:
        return self.clock.now

    def sleep(self, seconds: float) -> None:
        self.clock.sleep(seconds)


class Container:
    """State as a function of seconds since the gate started."""

    def __init__(self, clock: Clock, timeline: Callable[[float], ContainerState]) -> None:
        self.clock, self.timeline, self.t0 = clock, timeline, clock.now
        self.reads = 0

    def state(self, container_id: str) -> ContainerState:
        self.reads += 1
        return self.timeline(self.clock.now - self.t0)


def probe_from(clock: Clock, answer: Callable[[float], ProbeResult], latency: float = 0.01):
    t0 = clock.now
    calls: list[float] = []

    def probe(url: str, timeout: float) -> ProbeResult:
        assert url == URL
        calls.append(timeout)
        result = answer(clock.now - t0)
        clock.now += timeout if result.text == "read timeout" else latency
        return result

    probe.calls = calls  # type: ignore[attr-defined]
    return probe


def gate(timeline=lambda t: RUNNING, answer=lambda t: ProbeResult(True, "http 200"),
         latency: float = 0.01):
    clock = Clock()
    container = Container(clock, timeline)
    probe = probe_from(clock, answer, latency)
    return HealthGate(container, probe=probe, clock=AsClock(clock)), clock, probe


def verify(g: HealthGate, url: str | None = URL, **kw):
    opts = {"timeout": 60.0, "interval": 2.0, "soak": 10.0} | kw
    return g.verify("c1", url, **opts)


def test_good_container_passes_after_first_2xx_and_the_soak():
    g, _, probe = gate()
    v = verify(g)
    assert v.ok and v.reason == "healthy"
    assert 10.0 <= v.after_s < 10.5
    assert v.detail["passed_after_s"] < 0.1 and v.detail["probe"] == "http 200"
    assert len(probe.calls) == 6 and set(probe.calls) == {2.0}  # every interval, soak included


def test_exit_fails_at_once_not_at_the_timeout():
    def timeline(t):
        return RUNNING if t < 3 else ContainerState("exited", False, exit_code=3)

    g, _, _ = gate(timeline, answer=lambda t: ProbeResult(False, "connection refused"))
    v = verify(g)
    assert not v.ok and v.reason == "exited with code 3"
    assert 3.0 <= v.after_s <= 3.3


@pytest.mark.parametrize(("state", "reason"), [
    (ContainerState("restarting", True, restart_count=1), "restarting (restart count 1)"),
    (ContainerState("running", True, restart_count=2), "restarting (restart count 2)"),
    (ContainerState("exited", False, exit_code=137, oom_killed=True), "oom killed"),
    (ContainerState("running", True, health="unhealthy"), "docker healthcheck unhealthy"),
    (ContainerState("missing", False), "container disappeared"),
    (ContainerState("dead", False), "dead"),
])
def test_restart_oom_unhealthy_and_missing_fail_within_a_second(state, reason):
    g, _, _ = gate(lambda t: RUNNING if t < 1 else state,
                   answer=lambda t: ProbeResult(False, "http 503"))
    v = verify(g)
    assert not v.ok and v.reason == reason and v.after_s <= 1.3


def test_restart_count_is_counted_from_the_first_look():
    g, _, _ = gate(lambda t: ContainerState("running", True, restart_count=4))
    assert verify(g, soak=1).ok


def test_http_500_fails_at_the_timeout_naming_the_probe():
    g, _, probe = gate(answer=lambda t: ProbeResult(False, "http 500"))
    v = verify(g, timeout=8, interval=0.5, soak=1)
    assert not v.ok and v.reason == "timeout after 8s: http 500"
    assert 8.0 <= v.after_s < 8.6
    assert len(probe.calls) >= 15


def test_hanging_app_fails_at_the_timeout_with_read_timeout():
    g, _, probe = gate(answer=lambda t: ProbeResult(False, "read timeout"))
    v = verify(g, timeout=60, interval=10, soak=1)
    assert not v.ok and v.reason == "timeout after 60s: read timeout"
    assert set(probe.calls) == {5.0}  # per-request timeout capped at 5 s


def test_slow_boot_within_the_window_passes():
    g, _, _ = gate(answer=lambda t: ProbeResult(t >= 3, "http 200" if t >= 3 else
                                                "connection refused"))
    v = verify(g, timeout=20, interval=0.5, soak=1)
    assert v.ok and 3.0 <= v.detail["passed_after_s"] < 3.6


def test_failure_during_soak_fails_at_once():
    g, _, _ = gate(answer=lambda t: ProbeResult(t < 4, "http 200" if t < 4 else "http 500"))
    v = verify(g, interval=1, soak=10)
    assert not v.ok and v.reason == "http 500 during soak" and 4.0 <= v.after_s < 5.1


def test_healthcheck_must_say_healthy_as_well_as_http():
    def timeline(t):
        return ContainerState("running", True, health="starting" if t < 5 else "healthy")

    g, _, _ = gate(timeline)
    v = verify(g, interval=0.5, soak=1)
    assert v.ok and 5.0 <= v.detail["passed_after_s"] < 5.3


def test_healthcheck_stuck_in_starting_times_out_naming_it():
    g, _, _ = gate(lambda t: ContainerState("running", True, health="starting"))
    v = verify(g, timeout=8, interval=0.5, soak=1)
    assert not v.ok and v.reason == "timeout after 8s: docker health starting"


def test_without_url_the_healthcheck_decides():
    def timeline(t):
        return ContainerState("running", True, health="starting" if t < 2 else "healthy")

    g, _, probe = gate(timeline)
    v = verify(g, url=None, soak=1)
    assert v.ok and "warning" not in v.detail and probe.calls == []


def test_without_url_or_healthcheck_passes_after_soak_with_a_warning():
    g, _, _ = gate()
    v = verify(g, url=None, soak=3)
    assert v.ok and v.detail["warning"] == NO_SIGNAL_WARNING and 3.0 <= v.after_s < 3.3


def test_should_stop_interrupts():
    g, clock, _ = gate(answer=lambda t: ProbeResult(False, "http 500"))
    start = clock.now
    v = verify(g, should_stop=lambda: clock.now - start > 2)
    assert not v.ok and v.reason == "interrupted" and v.after_s < 2.5


def test_a_signal_kill_is_looked_at_again_before_a_verdict():
    def timeline(t):
        return RUNNING if t < 3 else ContainerState("exited", False, exit_code=137)

    g, _, _ = gate(timeline, answer=lambda t: ProbeResult(False, "connection refused"))
    v = verify(g)
    assert not v.ok and v.reason == "exited with code 137"
    assert 5.0 <= v.after_s <= 5.5  # the grace, then the verdict: not the 30 s timeout


def test_a_stopping_engine_that_kills_the_container_first_is_waited_out():
    """dockerd on its way down SIGKILLs the container while its API still answers, then
    goes away and comes back; the container is started again: not the image's fault."""
    clock = Clock()

    class Stopping(Container):
        def state(self, container_id: str) -> ContainerState:
            t = self.clock.now - self.t0
            if 2 <= t < 3:
                return ContainerState("exited", False, exit_code=137)
            if 3 <= t < 6:
                raise DockerUnavailable("engine restarting")
            return RUNNING

    g = HealthGate(Stopping(clock, lambda t: RUNNING),
                   probe=probe_from(clock, lambda t: ProbeResult(not 2 <= t < 7, "http 200")),
                   clock=AsClock(clock))
    v = g.verify("c1", URL, timeout=20, interval=0.5, soak=4)
    assert v.ok and v.detail["engine_error"] == "engine restarting" and v.after_s >= 10


def test_engine_hiccup_is_waited_out_not_a_verdict():
    clock = Clock()

    class Flaky(Container):
        def state(self, container_id: str) -> ContainerState:
            if 1 <= self.clock.now - self.t0 < 3:
                raise DockerUnavailable("engine restarting")
            return RUNNING

    g = HealthGate(Flaky(clock, lambda t: RUNNING),
                   probe=probe_from(clock, lambda t: ProbeResult(t >= 2, "http 200")),
                   clock=AsClock(clock))
    v = g.verify("c1", URL, timeout=20, interval=0.5, soak=1)
    assert v.ok and v.detail["passed_after_s"] >= 3.0
    assert v.detail["engine_error"] == "engine restarting"


def test_created_but_never_started_times_out():
    g, _, _ = gate(lambda t: ContainerState("created", False))
    v = verify(g, url=None, timeout=5, soak=1)
    assert not v.ok and v.reason == "timeout after 5s: container created"


def test_engine_restart_during_soak_starts_the_window_over():
    clock = Clock()

    class Restarting(Container):
        def state(self, container_id: str) -> ContainerState:
            if 3 <= self.clock.now - self.t0 < 5:
                raise DockerUnavailable("engine restarting")
            return RUNNING

    def answer(t: float) -> ProbeResult:
        return ProbeResult(not 3 <= t < 6, "connection refused" if 3 <= t < 6 else "http 200")

    g = HealthGate(Restarting(clock, lambda t: RUNNING), probe=probe_from(clock, answer),
                   clock=AsClock(clock))
    v = g.verify("c1", URL, timeout=4, interval=0.5, soak=5)
    assert v.ok and v.detail["passed_after_s"] >= 6.0 and v.after_s >= 11.0


def test_exit_noticed_after_a_failed_soak_probe_is_named():
    died: list[bool] = []

    def answer(t: float) -> ProbeResult:
        if t >= 2:  # the app dies while this probe is in flight
            died.append(True)
            return ProbeResult(False, "connection reset")
        return ProbeResult(True, "http 200")

    g, _, _ = gate(lambda t: ContainerState("exited", False, exit_code=1) if died else RUNNING,
                   answer=answer)
    v = verify(g, interval=1, soak=5)
    assert not v.ok and v.reason == "exited with code 1 during soak"


# ----------------------------------------------------------------- 5xx in a row: a verdict
def http(status: int) -> ProbeResult:
    return ProbeResult(200 <= status < 300, f"http {status}", status)


def test_five_5xx_answers_in_a_row_fail_within_failures_times_interval() -> None:
    g, _, probe = gate(answer=lambda t: http(500))
    v = verify(g, failures=5)
    assert not v.ok and v.reason == "5 http 500 answers in a row (the app is up and failing)"
    assert len(probe.calls) == 5 and v.after_s <= 5 * 2.0 + 1


def test_without_failures_a_500_waits_out_the_timeout() -> None:
    g, _, _ = gate(answer=lambda t: http(500))
    v = verify(g, failures=0)
    assert not v.ok and v.reason.startswith("timeout after 60s") and v.after_s >= 60


def test_a_slow_boot_that_refuses_connections_keeps_the_whole_window() -> None:
    g, _, _ = gate(answer=lambda t: ProbeResult(False, "connection refused") if t < 40
                   else http(200))
    v = verify(g, failures=5)
    assert v.ok and v.detail["passed_after_s"] >= 40


def test_5xx_broken_by_other_answers_are_not_in_a_row() -> None:
    answers = [http(503), ProbeResult(False, "connection refused")] * 20
    g, _, probe = gate(answer=lambda t: answers[min(len(probe.calls) - 1, len(answers) - 1)])
    v = verify(g, failures=2, timeout=30)
    assert not v.ok and v.reason.startswith("timeout after 30s")


def test_a_boot_answering_502_then_200_passes_when_under_the_limit() -> None:
    g, _, _ = gate(answer=lambda t: http(502) if t < 5 else http(200))
    assert verify(g, failures=5).ok
