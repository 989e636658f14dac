"""The watch after commit: the agent over fakes of its ports (rollback from the watch,
.env put back, the parked container kept until the end, a resumed watch), and the watcher's
own decisions on a fake clock, a fake container and a fake probe."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.unit.test_agent import NEW, OLD, Crash, World
from tests.unit.test_health_gate import RUNNING, URL, AsClock, Clock, Container, probe_from
from twilight_agent.adapters.docker.health import ProbeResult
from twilight_agent.adapters.docker.watch import Watcher
from twilight_agent.adapters.state.envfile import read_image_digest, read_image_tag
from twilight_agent.core.ports import ContainerState
from twilight_agent.errors import DockerUnavailable

EXITED = ContainerState("exited", False, exit_code=3)


@pytest.fixture
def w(tmp_path: Path) -> World:
    return World(tmp_path, watch=300)


# ----------------------------------------------------------------------------- the agent
def test_the_parked_container_is_kept_during_the_watch_and_removed_after(w: World) -> None:
    seen: list[bool] = []
    w.health.watch_hook = lambda: seen.append(
        w.runtime.by_name("app.twilight-prev") is not None)
    report = w.agent.deploy()
    assert (report.outcome, report.exit_code) == ("deployed", 0)
    assert seen == [True] and w.runtime.by_name("app.twilight-prev") is None
    (cids, seconds), = w.health.watches
    assert cids == [w.runtime.find_by_name("app")] and 299 < seconds <= 300
    assert w.store.history()[0].phase == "WATCH"


def test_status_during_the_watch_shows_it_and_the_time_left(w: World) -> None:
    during: list[dict] = []
    w.health.watch_hook = lambda: during.append(w.agent.status())
    w.agent.deploy()
    st, = during
    assert st["phase"] == "WATCH" and st["current"]["digest"] == NEW.digest
    assert st["previous"]["digest"] == OLD.digest
    assert st["watch"]["to"]["digest"] == NEW.digest and 290 < st["watch"]["left_s"] <= 300
    assert w.agent.status()["watch"] is None


def test_a_death_during_the_watch_rolls_back_quarantines_and_restores_env(w: World) -> None:
    w.health.dies_later.add(NEW.digest)
    before = w.env.read_bytes()
    report = w.agent.deploy()
    assert (report.outcome, report.exit_code) == ("rolled_back", 1)
    assert w.running == OLD.digest and w.store.is_quarantined(NEW.digest)
    # as compose last saw it, byte for byte: the commit added IMAGE_DIGEST, the rollback
    # takes it out again, so the restored container's config hash still matches
    assert w.env.read_bytes() == before and read_image_tag(w.env) == OLD.tag
    assert read_image_digest(w.env) is None
    row = w.store.history()[0]
    assert (row.outcome, row.phase) == ("rolled_back", "WATCH")
    assert "exited with code 3" in row.reason and "watch" in row.reason
    assert [c.name for c in w.runtime.containers.values()] == ["app"]
    assert w.agent.poll_once().outcome == "quarantined"  # the same build is not retried


def test_watch_zero_removes_the_parked_container_at_once(tmp_path: Path) -> None:
    w = World(tmp_path, watch=0)
    assert w.agent.deploy().outcome == "deployed"
    assert w.health.watches == [] and w.runtime.by_name("app.twilight-prev") is None


def test_a_stop_suspends_the_watch_and_the_next_lock_holder_resumes_it(w: World) -> None:
    w.health.watch_hook = w.agent.request_stop
    report = w.agent.deploy()
    assert (report.outcome, report.exit_code) == ("deployed", 0)
    assert "watch interrupted" in report.reason
    journal = w.store.open_journal()
    assert journal is not None and (journal.phase, journal.step) == ("WATCH", "Watch")
    assert w.runtime.by_name("app.twilight-prev") is not None and w.store.history() == []
    w.health.watch_hook = None
    fresh = w.make()
    assert fresh.poll_once().outcome in ("up_to_date", "nothing_to_do")
    assert w.store.open_journal() is None and w.runtime.by_name("app.twilight-prev") is None
    row = w.store.history()[0]
    assert row.outcome == "deployed" and "stopped in WATCH/Watch" in row.reason
    _, seconds = w.health.watches[-1]
    assert seconds < 300  # resumed with the time that was left, not a new window


def test_a_crash_during_the_watch_resumes_it_then_rolls_back_a_death(w: World) -> None:
    def boom() -> None:
        raise Crash("watch")

    w.health.watch_hook = boom
    with pytest.raises(Crash):
        w.agent.deploy()
    w.health.watch_hook = None
    w.health.dies_later.add(NEW.digest)  # it dies while the agent is away
    w.make().recover()
    assert w.running == OLD.digest and w.store.is_quarantined(NEW.digest)
    row = w.store.history()[0]
    assert (row.outcome, row.phase) == ("rolled_back", "WATCH")
    assert read_image_tag(w.env) == OLD.tag


def test_a_watch_past_its_deadline_takes_one_look_then_ends(w: World) -> None:
    def boom() -> None:
        raise Crash("watch")

    w.health.watch_hook = boom
    with pytest.raises(Crash):
        w.agent.deploy()
    w.health.watch_hook = None
    journal = w.store.open_journal()
    assert journal is not None
    payload = dict(journal.payload, watch_until=time.time() - 5)
    w.store.journal(journal.deploy_id, "WATCH", "Watch", payload)
    w.make().recover()
    assert w.health.watches[-1][1] == 0 and w.running == NEW.digest
    assert w.store.history()[0].outcome == "deployed"


# ----------------------------------------------------------------------------- the watcher
def watcher(timeline=lambda t: RUNNING, answer=lambda t: ProbeResult(True, "http 200"),
            **kw):
    clock = Clock()
    container = Container(clock, timeline)
    probe = probe_from(clock, answer)
    opts = {"timeout": 10.0, "interval": 1.0} | kw
    return Watcher(container, probe, AsClock(clock), 0.25, **opts), clock


def test_a_healthy_unit_passes_at_the_deadline() -> None:
    wt, clock = watcher()
    v = wt.run([("c1", URL)], clock.now + 60, None)
    assert v.ok and 60 <= v.after_s < 61


def test_an_exit_fails_within_a_tick() -> None:
    wt, clock = watcher(lambda t: RUNNING if t < 20 else EXITED)
    v = wt.run([("c1", URL)], clock.now + 60, None)
    assert not v.ok and v.reason == "exited with code 3" and 20 <= v.after_s <= 20.3
    assert v.detail["unit"] == 0


def test_a_restart_fails_it() -> None:
    wt, clock = watcher(lambda t: RUNNING if t < 5 else ContainerState(
        "running", True, restart_count=1))
    v = wt.run([("c1", None)], clock.now + 60, None)
    assert not v.ok and "restart" in v.reason


def test_a_url_blip_shorter_than_the_timeout_passes_a_longer_one_fails() -> None:
    blip, clock = watcher(answer=lambda t: ProbeResult(not 10 < t < 15, "http 503"))
    assert blip.run([("c1", URL)], clock.now + 60, None).ok
    down, clock = watcher(answer=lambda t: ProbeResult(t < 10, "http 503"))
    v = down.run([("c1", URL)], clock.now + 60, None)
    assert not v.ok and v.reason == "health URL failing for 10s: http 503"
    assert 19.9 <= v.after_s <= 21.5


def test_the_second_unit_is_named() -> None:
    clock = Clock()
    states = {"c1": RUNNING, "c2": EXITED}

    class Two:
        def state(self, cid: str) -> ContainerState:
            return states[cid]

    wt = Watcher(Two(), probe_from(clock, lambda t: ProbeResult(True, "ok")), AsClock(clock),
                 0.25, timeout=10, interval=1)
    v = wt.run([("c1", None), ("c2", None)], clock.now + 60, None)
    assert not v.ok and v.detail == {"unit": 1, "container_id": "c2"}


def test_an_engine_away_is_not_a_failure_and_the_deadline_waits_for_it() -> None:
    def timeline(t: float) -> ContainerState:
        if 50 < t < 70:
            raise DockerUnavailable("the Docker engine does not answer")
        return EXITED if 70 <= t < 72 else RUNNING  # stopped by the engine, then back

    wt, clock = watcher(timeline)
    v = wt.run([("c1", None)], clock.now + 60, None)
    assert v.ok and v.after_s >= 70


def test_a_stop_request_ends_the_watch_as_interrupted() -> None:
    wt, clock = watcher()
    v = wt.run([("c1", URL)], clock.now + 60, lambda: clock.now > 1005)
    assert not v.ok and v.detail["interrupted"] and v.after_s < 6


def test_an_operator_at_a_terminal_is_told_the_deploy_is_being_watched(w: World) -> None:
    notices: list[str] = []
    w.agent.set_progress(lambda line: None, notices.append)
    w.agent.deploy()
    assert len(notices) == 1 and f"watching {NEW.tag} for 300s" in notices[0]
