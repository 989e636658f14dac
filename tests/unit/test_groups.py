"""A compose service group (web + worker, replicas) and the pre-deploy task, over fakes."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.unit.fakes import REPO, C, FakeHealth, FakeRegistry, FakeRuntime, Sink, release
from twilight_agent import app
from twilight_agent.adapters.state.store import Store
from twilight_agent.agent import Agent
from twilight_agent.settings import Settings

OLD, NEW = release(1), release(2)
PROJECT = "shop"


def labels(service: str, number: int = 1) -> dict[str, str]:
    return {"com.docker.compose.project": PROJECT, "com.docker.compose.service": service,
            "com.docker.compose.container-number": str(number)}


class Group:
    """web (2 replicas) + worker of one compose project, all on OLD."""

    def __init__(self, tmp_path: Path, **settings: object) -> None:
        self.settings = Settings(image=REPO, compose_project=PROJECT, services="web,worker",
                                 state_dir=tmp_path / "state", **settings)
        self.registry = FakeRegistry(NEW)
        self.runtime = FakeRuntime("unused", OLD)
        self.runtime.containers.clear()
        for name, service, n in [("shop-worker-1", "worker", 1), ("shop-web-2", "web", 2),
                                 ("shop-web-1", "web", 1)]:
            self.runtime.add(C(name, str(OLD.digest), labels=labels(service, n)))
        self.health = FakeHealth(self.runtime)
        self.health.good_images.add(str(OLD.digest))
        self.store = Store(self.settings.state_dir)
        self.sink = Sink()

    def agent(self) -> Agent:
        return app.build_agent(self.settings, [self.sink], registry=self.registry,
                               runtime=self.runtime, health=self.health, store=self.store)

    def running(self) -> dict[str, str]:
        return {c.name: c.image[-1] for c in self.runtime.containers.values()}


@pytest.fixture
def g(tmp_path: Path) -> Group:
    return Group(tmp_path)


def test_every_unit_is_swapped_in_order_and_gated_watching_the_earlier_ones(g: Group) -> None:
    report = g.agent().deploy()
    assert report.outcome == "deployed", report
    assert g.running() == {"shop-web-1": "2", "shop-web-2": "2", "shop-worker-1": "2"}
    assert g.runtime.calls.count("park") == 3 and g.runtime.calls.count("remove") == 3
    assert [len(w) for w in g.health.watched] == [0, 1, 2]  # each gate watches the earlier
    (row,) = g.store.history()
    assert row.outcome == "deployed" and row.to_digest == NEW.digest


def test_a_failing_worker_rolls_every_unit_back_last_first_and_quarantines_once(
        g: Group) -> None:
    g.health.bad_names.add("shop-worker-1")
    report = g.agent().deploy()
    assert (report.outcome, report.exit_code) == ("rolled_back", 1)
    assert g.running() == {"shop-web-1": "1", "shop-web-2": "1", "shop-worker-1": "1"}
    unparks = [c for c in g.runtime.calls if c == "unpark"]
    assert len(unparks) == 3
    assert g.store.is_quarantined(NEW.digest)
    assert len(g.sink.named("quarantined")) == 1
    (row,) = g.store.history()
    assert "shop-worker-1" in row.reason and row.outcome == "rolled_back"
    assert {c.policy["Name"] for c in g.runtime.containers.values()} == {"unless-stopped"}


def test_a_missing_service_is_target_not_found(tmp_path: Path) -> None:
    g = Group(tmp_path)
    g.settings = Settings(image=REPO, compose_project=PROJECT, services="web,jobs",
                          state_dir=tmp_path / "state")
    with pytest.raises(Exception, match="no container for jobs"):
        g.agent().deploy()


def test_without_a_list_every_service_running_the_image_is_the_group(tmp_path: Path) -> None:
    g = Group(tmp_path)
    g.runtime.add(C("shop-db-1", "sha256:" + "f" * 64, labels=labels("db"), repo="postgres"))
    g.settings = Settings(image=REPO, compose_project=PROJECT, state_dir=tmp_path / "state")
    assert g.agent().deploy().outcome == "deployed"
    assert g.running()["shop-db-1"] == "f" and g.running()["shop-worker-1"] == "2"


class Crash(BaseException):
    """Stands in for SIGKILL."""


def test_killed_during_the_second_units_swap_recovery_undoes_every_unit(g: Group) -> None:
    parks = []

    def second_park() -> None:
        parks.append(1)
        if len(parks) == 2:
            raise Crash()

    g.runtime.on["park"] = second_park
    with pytest.raises(Crash):
        g.agent().deploy()
    g.runtime.on.clear()
    g.agent().recover()
    assert g.running() == {"shop-web-1": "1", "shop-web-2": "1", "shop-worker-1": "1"}
    (row,) = g.store.history()
    assert row.outcome == "rolled_back" and "recovered at start-up" in row.reason


def test_pre_deploy_runs_once_in_the_new_image_before_any_swap(tmp_path: Path) -> None:
    g = Group(tmp_path, pre_deploy="python manage.py migrate --noinput")
    assert g.agent().deploy().outcome == "deployed"
    ((unit, image, argv, timeout),) = g.runtime.tasks
    assert unit == "shop-web-1" and image.endswith(NEW.digest)
    assert argv == ("python", "manage.py", "migrate", "--noinput") and timeout == 600
    assert g.runtime.calls.index("run_task") < g.runtime.calls.index("park")
    assert g.sink.named("pre_deploy_finished")[0]["phase"] == "PRE_DEPLOY"


@pytest.mark.parametrize(("task", "why"), [((3, "relation exists\n"), "exited with code 3"),
                                           ((None, ""), "killed after the 5s timeout")])
def test_a_failed_pre_deploy_touches_nothing_and_quarantines(
        tmp_path: Path, task: tuple[int | None, str], why: str) -> None:
    g = Group(tmp_path, pre_deploy="migrate", pre_deploy_timeout="5s")
    g.runtime.task = task
    before = dict(g.running())
    report = g.agent().deploy()
    assert (report.outcome, report.exit_code) == ("rolled_back", 1)
    assert g.running() == before and "park" not in g.runtime.calls
    (q,) = g.store.quarantined()
    assert q.digest == NEW.digest and why in q.reason
    (row,) = g.store.history()
    assert row.phase == "PRE_DEPLOY" and row.log_tail == task[1]
    assert g.agent().deploy().outcome == "quarantined"  # not tried again


def test_killed_during_the_task_recovery_removes_it_and_touches_nothing(tmp_path: Path) -> None:
    g = Group(tmp_path, pre_deploy="migrate")

    def die() -> None:
        raise Crash()

    g.runtime.on["run_task"] = die
    with pytest.raises(Crash):
        g.agent().deploy()
    g.runtime.on.clear()
    g.agent().recover()
    assert "remove_task" in g.runtime.calls and "park" not in g.runtime.calls
    (row,) = g.store.history()
    assert row.outcome == "aborted" and row.phase == "PRE_DEPLOY"
