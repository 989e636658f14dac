"""The agent over fakes of the ports: decisions, the deploy flow, rollback, recovery."""

from __future__ import annotations

import re
import threading
from pathlib import Path

import pytest

from tests.unit.fakes import REPO, FakeHealth, FakeRegistry, FakeRuntime, Sink, release
from twilight_agent.adapters.state.envfile import read_image_digest, read_image_tag
from twilight_agent.adapters.state.lock import DeployLock
from twilight_agent.adapters.state.store import Store
from twilight_agent.agent import Agent
from twilight_agent.app import build_agent
from twilight_agent.errors import (
    InvalidInput,
    InvalidTag,
    LockBusy,
    ManifestNotFound,
    PullFailed,
    TargetNotFound,
)
from twilight_agent.settings import Settings

OLD, NEW, NEWER = release(1), release(2), release(3)


class World:
    def __init__(self, tmp_path: Path, **settings: object) -> None:
        self.env = tmp_path / ".env"
        self.env.write_text(f"A=1\nIMAGE_TAG={OLD.tag}\n")
        self.settings = Settings(image=REPO, container="app", state_dir=tmp_path / "state",
                                 env_file=self.env, **settings)
        self.registry = FakeRegistry(NEW)
        self.runtime = FakeRuntime("app", OLD)
        self.health = FakeHealth(self.runtime)
        self.store = Store(self.settings.state_dir)
        self.sink = Sink()
        self.agent = self.make()

    def make(self) -> Agent:
        return build_agent(self.settings, [self.sink], registry=self.registry,
                           runtime=self.runtime, health=self.health, store=self.store)

    @property
    def running(self) -> str | None:
        return self.runtime.running_digest()


@pytest.fixture
def w(tmp_path: Path) -> World:
    return World(tmp_path)


def test_good_image_is_deployed_and_committed(w: World) -> None:
    report = w.agent.deploy()
    assert (report.outcome, report.exit_code) == ("deployed", 0)
    assert w.running == NEW.digest
    assert w.runtime.by_name("app.twilight-prev") is None  # parked one removed
    assert read_image_tag(w.env) == NEW.tag and w.env.read_text().startswith("A=1\n")
    assert read_image_digest(w.env) == NEW.digest
    assert w.runtime.tags[f"img-{NEW.digest[-6:]}"] == NEW.tag
    (row,) = w.store.history()
    assert (row.outcome, row.from_digest, row.to_digest) == (
        "deployed", OLD.digest, NEW.digest)
    st = w.agent.status()
    assert st["current"]["digest"] == NEW.digest and st["previous"]["digest"] == OLD.digest
    assert st["phase"] == "IDLE" and st["last_result"]["outcome"] == "deployed"
    assert report.status_line == f"following main at {NEW.tag}"


def test_one_phase_event_per_transition_and_one_summary(w: World) -> None:
    w.agent.deploy()
    phases = [f["phase"] for f in w.sink.named("phase")]
    assert phases == ["PULL", "PREPARE", "SWAP", "VERIFY", "COMMIT", "WATCH", "IDLE"]
    for f in w.sink.named("phase"):
        assert {"deploy_id", "from", "to", "digest", "phase", "outcome", "duration_s"} <= set(f)
    (done,) = w.sink.named("deploy_finished")
    assert done["outcome"] == "deployed" and done["digest"] == NEW.digest


def test_bad_image_rolls_back_quarantines_and_is_not_retried(w: World) -> None:
    w.health.bad.add(NEW.digest)
    report = w.agent.deploy()
    assert (report.outcome, report.exit_code) == ("rolled_back", 1)
    assert w.running == OLD.digest
    assert w.runtime.by_name("app").policy == {"Name": "unless-stopped"}
    assert w.store.is_quarantined(NEW.digest)
    assert read_image_tag(w.env) == OLD.tag
    (row,) = w.store.history()
    assert row.outcome == "rolled_back" and "exited with code 3" in row.reason
    assert "cannot open database" in row.log_tail
    # quarantine happened before the new container was removed
    assert w.runtime.calls.index("remove") > w.runtime.calls.index("start")
    again = w.agent.deploy()
    assert (again.outcome, again.exit_code) == ("quarantined", 0)
    assert len(w.store.history()) == 1 and w.running == OLD.digest


def test_operator_deploy_of_a_quarantined_tag_is_refused_until_unquarantined(w: World) -> None:
    w.health.bad.add(NEW.digest)
    w.agent.deploy()
    with pytest.raises(InvalidInput, match="unquarantine"):
        w.agent.deploy(NEW.tag)
    w.store.unquarantine(NEW.tag)
    w.health.bad.clear()
    assert w.agent.deploy(NEW.tag).outcome == "deployed"


def test_newer_build_after_a_quarantine_is_tried(w: World) -> None:
    w.health.bad.add(NEW.digest)
    w.agent.deploy()
    w.registry.track = NEWER
    assert w.agent.poll_once().outcome == "deployed"
    assert w.running == NEWER.digest


def test_failed_rollback_halts_and_keeps_everything(w: World) -> None:
    w.health.bad |= {NEW.digest, OLD.digest}
    report = w.agent.deploy()
    assert (report.outcome, report.exit_code) == ("halted", 4)
    st = w.agent.status()
    assert st["halted"] and st["phase"] == "HALTED"
    assert w.sink.named("halted")
    assert report.status_line.startswith("HALTED")
    # nothing automatic while halted on a quarantined digest
    assert w.agent.poll_once().outcome == "quarantined"
    # a newer candidate is allowed and clears the halt
    w.registry.track = NEWER
    assert w.agent.poll_once().outcome == "deployed"
    assert not w.agent.status()["halted"]


def test_up_to_date_poll_is_one_registry_request(w: World) -> None:
    w.agent.deploy()
    w.registry.calls.clear()
    report = w.agent.poll_once()
    assert report.outcome == "up_to_date" and w.registry.calls == ["head"]


def test_input_errors_touch_nothing(w: World) -> None:
    with pytest.raises(InvalidTag):
        w.agent.deploy("sha-NOPE")
    with pytest.raises(ManifestNotFound):
        w.agent.deploy("sha-0000009")
    w.registry.down = True
    report = w.agent.poll_once()
    assert (report.outcome, report.exit_code) == ("registry_error", 5)
    assert w.runtime.calls == ["find_target", "find_target"]
    assert w.running == OLD.digest and w.store.history() == []


def test_missing_target_is_exit_2(w: World) -> None:
    w.runtime.containers.clear()
    with pytest.raises(TargetNotFound) as info:
        w.agent.deploy()
    assert info.value.exit_code == 2


def test_pull_failure_records_and_leaves_the_service(w: World) -> None:
    w.runtime.fail["pull"] = PullFailed("pull of x failed: unauthorized")
    with pytest.raises(PullFailed):
        w.agent.deploy()
    assert w.running == OLD.digest and "park" not in w.runtime.calls
    (row,) = w.store.history()
    assert (row.outcome, row.phase) == ("failed", "PULL")


def test_second_deploy_is_refused_while_another_thread_holds_the_lock(w: World) -> None:
    held, done = threading.Event(), threading.Event()

    def hold() -> None:
        with DeployLock(w.settings.state_dir):
            held.set()
            done.wait(5)

    holder = threading.Thread(target=hold)
    holder.start()
    held.wait(5)
    try:
        with pytest.raises(LockBusy) as info:
            w.agent.deploy()
        assert info.value.exit_code == 3
        assert w.agent.poll_once().outcome == "busy"
    finally:
        done.set()
        holder.join()
    assert w.running == OLD.digest
    assert w.agent.poll_once().outcome == "deployed"  # released afterwards


def test_rollback_goes_to_the_previous_good_digest(w: World) -> None:
    w.agent.deploy()
    w.registry.tags[OLD.tag] = OLD
    report = w.agent.rollback()
    assert report.outcome == "deployed" and w.running == OLD.digest
    assert w.store.history()[0].trigger == "rollback"
    assert (read_image_tag(w.env), read_image_digest(w.env)) == (OLD.tag, OLD.digest)


def test_rollback_without_history_is_exit_2(w: World) -> None:
    with pytest.raises(InvalidInput, match="no previous"):
        w.agent.rollback()


def test_stop_during_verify_undoes_without_quarantine(w: World) -> None:
    w.health.hook = w.agent.request_stop
    report = w.agent.deploy()
    assert report.outcome == "rolled_back" and w.running == OLD.digest
    assert not w.store.is_quarantined(NEW.digest)


class Crash(BaseException):
    """Stands in for SIGKILL: escapes every except clause of the agent."""


def crash_at(w: World, step: str) -> None:
    def boom() -> None:
        raise Crash(step)

    w.runtime.on[step] = boom


@pytest.mark.parametrize(("step", "expect_digest", "outcome"), [
    ("pull", OLD.digest, "aborted"),
    ("park", OLD.digest, "rolled_back"),
    ("create", OLD.digest, "rolled_back"),
    ("start", OLD.digest, "rolled_back"),
    ("tag", NEW.digest, "deployed"),
])
def test_recovery_after_a_crash_in_each_step(w: World, step: str, expect_digest: str,
                                              outcome: str) -> None:
    crash_at(w, step)
    with pytest.raises(Crash):
        w.agent.deploy()
    w.runtime.on.clear()
    fresh = w.make()
    fresh.recover()
    assert w.running == expect_digest
    assert w.runtime.by_name("app.twilight-prev") is None or outcome == "aborted"
    (row,) = w.store.history()
    assert row.outcome == outcome and "recovered at start-up" in row.reason
    assert w.store.open_journal() is None
    assert len([c for c in w.runtime.containers.values() if c.name.startswith("app")]) == 1


def test_recovery_after_a_crash_during_verify_verifies_again(w: World) -> None:
    def boom() -> None:
        raise Crash("verify")

    w.health.hook = boom
    with pytest.raises(Crash):
        w.agent.deploy()
    w.health.hook = None
    w.make().recover()
    assert w.running == NEW.digest
    assert w.store.history()[0].outcome == "deployed"


def test_recovery_after_a_crash_during_rollback_finishes_it(w: World) -> None:
    w.health.bad.add(NEW.digest)
    crash_at(w, "unpark")
    with pytest.raises(Crash):
        w.agent.deploy()
    w.runtime.on.clear()
    w.make().recover()
    assert w.running == OLD.digest and w.store.is_quarantined(NEW.digest)
    assert w.store.history()[0].outcome == "rolled_back"


def test_recovery_waits_for_docker_instead_of_halting(w: World) -> None:
    from twilight_agent.errors import DockerUnavailable

    crash_at(w, "park")
    with pytest.raises(Crash):
        w.agent.deploy()
    w.runtime.on.clear()
    real = w.runtime.find_by_name

    def down(name: str) -> str | None:
        raise DockerUnavailable("the Docker engine does not answer")

    w.runtime.find_by_name = down  # type: ignore[method-assign]
    report = w.make().poll_once()
    assert (report.outcome, report.exit_code) == ("docker_error", 5)
    assert w.store.open_journal() is not None and w.store.history() == []
    w.runtime.find_by_name = real  # type: ignore[method-assign]
    w.make().recover()
    assert w.running == OLD.digest and w.store.history()[0].outcome == "rolled_back"


def test_pin_deploys_that_tag_then_reports_pinned_current(tmp_path: Path) -> None:
    w = World(tmp_path, pin=NEW.tag)
    w.registry.track = NEWER  # the track moved on; the pin wins
    w.registry.tags[NEW.tag] = NEW
    assert w.agent.poll_once().outcome == "deployed" and w.running == NEW.digest
    report = w.agent.poll_once()
    assert report.outcome == "pinned_current" and report.status_line.startswith("pinned to")


def test_stop_requested_before_the_swap_leaves_the_service_alone(w: World) -> None:
    w.agent.request_stop()
    report = w.agent.deploy()
    assert (report.outcome, report.exit_code) == ("nothing_to_do", 0)
    assert "park" not in w.runtime.calls and w.running == OLD.digest
    assert w.store.history()[0].outcome == "aborted"


@pytest.mark.parametrize("swap", ["stop-first", "start-first"])
def test_a_compose_service_s_new_container_gets_compose_s_labels_for_the_new_env(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, swap: str) -> None:
    from twilight_agent.adapters.docker import compose_labels as cl

    asked: list[tuple[str, str | None]] = []

    def config_hash(labels, env, docker_host, run=None):  # type: ignore[no-untyped-def]
        tag, digest = read_image_tag(w.env), read_image_digest(w.env)  # still the old ones
        assert (tag, digest) == (OLD.tag, None)
        found = re.search(rb"IMAGE_TAG=(.*)\n(?:IMAGE_DIGEST=@(.*)\n)?", env)
        assert found is not None
        seen = (found[1].decode(), found[2].decode() if found[2] else None)
        asked.append(seen)
        return f"hash-of-{seen[0]}"

    monkeypatch.setattr(cl, "config_hash", config_hash)
    w = World(tmp_path, swap=swap)
    w.runtime.ports = swap == "stop-first"  # start-first: no host port to fight over
    old = w.runtime.by_name("app")
    assert old is not None
    old.labels.update({cl.PROJECT: "shop", cl.SERVICE: "app", cl.VERSION: "2.26.1",
                       cl.CONFIG_HASH: f"hash-of-{OLD.tag}", cl.IMAGE: "sha256:old-image"})
    assert w.agent.deploy().outcome == "deployed"
    new = w.runtime.by_name("app")
    assert new is not None and new is not old
    assert (new.labels[cl.CONFIG_HASH], new.labels[cl.IMAGE]) == (
        f"hash-of-{NEW.tag}", "sha256:new-image")
    assert asked == [(OLD.tag, None), (NEW.tag, NEW.digest)]  # the .env as is, then new
    assert read_image_tag(w.env) == NEW.tag  # written at commit, not before
