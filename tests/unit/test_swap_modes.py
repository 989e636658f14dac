"""How a unit is swapped (TWILIGHT_SWAP), over fakes of the ports: stop-first creates the
new container before it stops the old one; start-first runs the new one beside the old
one and stops the old one only after the gate; a failed start-first gate never stops it."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.unit.test_agent import NEW, OLD, Crash, World
from twilight_agent.app import build_agent
from twilight_agent.errors import InvalidInput


def world(tmp_path: Path, ports: bool, **settings: object) -> World:
    w = World(tmp_path, watch=0, **settings)
    w.runtime.ports = ports
    return w


def test_stop_first_creates_the_new_one_before_stopping_the_old_one(tmp_path: Path) -> None:
    w = world(tmp_path, ports=True)
    assert w.agent.deploy().outcome == "deployed"
    calls = [c for c in w.runtime.calls if c in ("park", "create", "stop", "start")]
    assert calls == ["park", "create", "stop", "start"]
    assert w.running == NEW.digest and w.runtime.by_name("app.twilight-prev") is None


def test_auto_without_host_ports_starts_the_new_one_beside_the_old_one(tmp_path: Path) -> None:
    w = world(tmp_path, ports=False, health_url="http://{address}:8080/healthz")
    old_id = w.runtime.find_by_name("app")
    during: list[tuple[bool, str | None]] = []

    def gate() -> None:
        old = w.runtime.containers[old_id]
        during.append((old.running and old.name == "app",
                       w.runtime.find_by_name("app.twilight-next")))

    w.health.hook = gate
    assert w.agent.deploy().outcome == "deployed"
    (old_serving, beside), = during
    assert old_serving and beside is not None  # both ran while the new one was gated
    assert w.running == NEW.digest and w.runtime.find_by_name("app") == beside
    assert w.runtime.by_name("app.twilight-next") is None
    assert w.store.history()[0].outcome == "deployed"


def test_start_first_health_url_names_the_new_containers_address(tmp_path: Path) -> None:
    w = world(tmp_path, ports=False, health_url="http://{address}:8080/healthz")
    target = w.agent.target
    snap = target.snapshot()
    cid = w.runtime.find_by_name("app")
    assert target.health_url(snap, cid) == f"http://{w.runtime.address(cid)}:8080/healthz"


def test_a_failed_start_first_gate_never_stops_the_old_one(tmp_path: Path) -> None:
    w = world(tmp_path, ports=False)
    w.health.bad.add(NEW.digest)
    old_id = w.runtime.find_by_name("app")
    report = w.agent.deploy()
    assert (report.outcome, report.exit_code) == ("rolled_back", 1)
    assert "stop" not in w.runtime.calls and "park" not in w.runtime.calls
    assert w.runtime.find_by_name("app") == old_id and w.running == OLD.digest
    assert [c.name for c in w.runtime.containers.values()] == ["app"]
    assert w.store.is_quarantined(NEW.digest)


def test_start_first_on_a_published_port_is_refused_before_anything_runs(
        tmp_path: Path) -> None:
    w = world(tmp_path, ports=True, swap="start-first")
    with pytest.raises(InvalidInput, match="publishes a host port"):
        w.agent.deploy()
    assert "create" not in w.runtime.calls and w.running == OLD.digest


class RecordingClock:
    """Real monotonic time; sleeps are recorded, not slept."""

    def __init__(self) -> None:
        self.slept: list[float] = []

    def now(self) -> float:
        return time.monotonic()

    def wall(self) -> float:
        return time.time()

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)


def test_drain_waits_before_the_old_one_stops(tmp_path: Path) -> None:
    w = world(tmp_path, ports=False, drain=3)
    clock = RecordingClock()
    agent = build_agent(w.settings, [w.sink], registry=w.registry, runtime=w.runtime,
                        health=w.health, store=w.store, clock=clock)
    assert agent.deploy().outcome == "deployed"
    assert clock.slept == [2.0, 3]  # the aliases settle, then the drain


def test_a_crash_during_the_cutover_is_finished_at_start_up(tmp_path: Path) -> None:
    w = world(tmp_path, ports=False)

    def boom() -> None:
        raise Crash("stop")

    w.runtime.on["stop"] = boom
    with pytest.raises(Crash):
        w.agent.deploy()
    w.runtime.on.clear()
    w.make().recover()
    assert w.running == NEW.digest
    row = w.store.history()[0]
    assert row.outcome == "deployed" and "CUTOVER/StopParked" in row.reason
    assert sorted(c.name for c in w.runtime.containers.values()) == ["app"]


def test_start_first_gives_the_aliases_before_the_old_one_stops(tmp_path: Path) -> None:
    w = world(tmp_path, ports=False)
    assert w.agent.deploy().outcome == "deployed"
    calls = [c for c in w.runtime.calls
             if c in ("create", "start", "expose", "park", "stop", "rename")]
    assert calls[:2] == ["create", "start"]
    assert calls.index("expose") < calls.index("stop")  # never a moment with no backend
    assert calls[-1] == "rename"
