"""Engine faults that need no engine restart: the parked container removed by hand, the
target container missing, its port taken by another container at swap time, and a pull
that fails in-band (a layer the registry no longer has: what a full disk looks like to
the agent: the engine answers 200, then reports the error inside the stream).

Restarting dockerd itself is in ``test_zz_engine_restart.py`` (runs last).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.faults.conftest import Figures
from tests.integration.deploybed import Site, one_line, push
from twilight_agent import app
from twilight_agent.agent import Agent
from twilight_agent.core.tunables import DEFAULT, Tunables
from twilight_agent.errors import DockerUnavailable
from twilight_agent.settings import Settings

pytestmark = pytest.mark.faults

FAST = {"HEALTH_INTERVAL": "0.2", "HEALTH_SOAK": "0.5", "HEALTH_TIMEOUT": "5"}
OPEN: list[Any] = []


@pytest.fixture(autouse=True)
def _close_clients() -> Iterator[None]:
    yield
    while OPEN:
        OPEN.pop().close()


def make_agent(settings: Settings, runtime: Any = None, health: Any = None,
               tunables: Tunables = DEFAULT) -> Agent:
    real = app.build_runtime(settings)
    registry = app.build_registry(settings)
    OPEN.extend([real, registry])
    return app.build_agent(settings, registry=registry, runtime=runtime or real,
                           health=health or app.build_health(settings, real),
                           tunables=tunables)


def test_parked_container_removed_by_hand_during_verify(site: Site, figures: Figures) -> None:
    site.run_app(push(site, "v1"))
    v2 = push(site, "v2", boot_delay=1)
    settings = site.settings(**FAST)
    real = app.build_runtime(settings)
    OPEN.append(real)
    gate = app.build_health(settings, real)

    class RemoveParked:
        def verify(self, cid: str, *a: Any, **k: Any) -> Any:
            site.bed.docker.containers.get(f"{site.name}.twilight-prev").remove(force=True)
            return gate.verify(cid, *a, **k)

    report = make_agent(settings, health=RemoveParked()).poll_once()
    figures.fault()
    figures.deploys()
    assert report.outcome == "deployed", report
    assert site.running_digest() == v2.digest
    figures.service_ok(site, "v2")
    figures.nothing_lost(site)


def test_target_container_missing_then_back(site: Site, figures: Figures) -> None:
    v1 = push(site, "v1")
    site.run_app(v1)
    v2 = push(site, "v2")
    agent = make_agent(site.settings(**FAST))
    moved = f"{site.uid}-moved"
    site.bed.docker.api.rename(site.name, moved)  # the operator renamed it away
    report = agent.poll_once()
    figures.fault()
    figures.deploys()
    assert report.outcome == "docker_error" and site.name in report.reason, report
    assert site.containers() == [moved]  # nothing created, nothing touched
    assert site.history() == []
    site.bed.docker.api.rename(moved, site.name)
    report = agent.poll_once()
    figures.deploys()
    assert report.outcome == "deployed", report
    assert site.running_digest() == v2.digest
    figures.service_ok(site, "v2")
    figures.nothing_lost(site)


def test_port_taken_at_swap_time_rolls_back_to_the_old_container(
        site: Site, figures: Figures) -> None:
    v1 = push(site, "v1")
    old_id = site.run_app(v1)
    v2 = push(site, "v2")
    settings = site.settings(**FAST)
    real = app.build_runtime(settings)
    OPEN.append(real)
    api = site.bed.docker.api
    squatter: list[str] = []

    class PortSquatter:
        """Another container grabs the port the moment the old one is parked, and is gone
        again by the time the agent removes the new one."""

        def __getattr__(self, name: str) -> Any:
            return getattr(real, name)

        def park(self, snap: Any) -> None:
            real.park(snap)
            cid = api.create_container(
                f"{v1.ref}@{v1.digest}", name=f"{site.uid}-squatter", ports=[8080],
                host_config=api.create_host_config(
                    port_bindings={8080: ("127.0.0.1", site.port)}))["Id"]
            api.start(cid)
            squatter.append(cid)

        def remove(self, cid: str) -> None:
            if squatter:
                api.remove_container(squatter.pop(), force=True)
            real.remove(cid)

    report = make_agent(settings, runtime=PortSquatter()).poll_once()
    figures.fault()
    figures.deploys()
    assert report.outcome == "rolled_back", report
    assert "port" in report.reason or "address" in report.reason, report.reason
    assert site.inspect()["Id"] == old_id and site.running_digest() == v1.digest
    figures.service_ok(site, "v1")
    figures.nothing_lost(site)
    # The port was the host's problem, not the build's: it is not quarantined, and the
    # next poll deploys it once the port is free.
    assert make_agent(settings).status()["quarantined"] == []
    assert make_agent(settings).poll_once().outcome == "deployed"
    figures.deploys()
    assert site.running_digest() == v2.digest
    figures.service_ok(site, "v2")


def test_pull_failing_in_band_leaves_the_service_untouched(site: Site, figures: Figures) -> None:
    v1 = push(site, "v1")
    old_id = site.run_app(v1)
    v2 = push(site, f"v2-{site.uid}")  # a layer no other image shares
    raw = site.bed.raw
    manifest = json.loads(raw.get_manifest(site.repo, v2.sha_tag)[0])
    layer = manifest["layers"][-1]["digest"]
    r = raw._req("DELETE", site.repo, f"blobs/{layer}")
    assert r.status_code == 202, r.text
    figures.fault()
    p = site.cli("deploy", **FAST)
    figures.deploys()
    assert p.returncode == 5, p.stderr
    assert "pull" in one_line(p.stderr)
    assert site.inspect()["Id"] == old_id
    figures.service_ok(site, "v1")
    figures.nothing_lost(site)
    (row,) = site.history()
    assert (row["outcome"], row["phase"]) == ("failed", "PULL")
    assert site.status()["quarantined"] == []  # a failed pull does not blame the build
    v3 = push(site, "v3")
    assert site.cli("deploy", **FAST).returncode == 0
    figures.deploys()
    assert site.running_digest() == v3.digest
    figures.service_ok(site, "v3")


class Outage:
    """The real runtime, except that from the first call of ``start_at`` on, every call
    fails for ``seconds`` as it does while dockerd restarts (the engine itself keeps
    running, so other tests on it are not disturbed)."""

    def __init__(self, real: Any, start_at: str, seconds: float) -> None:
        self.real, self.start_at, self.seconds = real, start_at, seconds
        self.until: float | None = None
        self.refused = 0

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.real, name)
        if not callable(attr):
            return attr

        def call(*a: Any, **k: Any) -> Any:
            now = time.monotonic()
            if self.until is None and name == self.start_at:
                self.until = now + self.seconds
            if self.until is not None and now < self.until:
                self.refused += 1
                raise DockerUnavailable(f"{name}: the Docker engine does not answer")
            return attr(*a, **k)

        return call


@pytest.mark.parametrize(("start_at", "mode", "expect"), [
    ("park", "good", "rolled_back"),      # swap: undone once the engine is back
    ("remove", "exit", "rolled_back"),    # rollback: finished, not halted
    ("tag_image", "good", "deployed"),    # commit: finished, nothing left parked
])
def test_engine_away_for_seconds_mid_deploy_is_waited_for(
        site: Site, figures: Figures, start_at: str, mode: str, expect: str) -> None:
    v1 = push(site, "v1")
    site.run_app(v1)
    v2 = push(site, "v2", mode=mode)
    settings = site.settings(**FAST)
    real = app.build_runtime(settings)
    OPEN.append(real)
    down = Outage(real, start_at, 3)
    agent = make_agent(settings, runtime=down, health=app.build_health(settings, down))
    report = agent.poll_once()
    figures.fault()
    figures.deploys()
    assert down.refused > 0
    assert report.outcome == expect, report
    version = figures.service_ok(site, "v2" if expect == "deployed" else "v1")
    figures.nothing_lost(site)
    assert site.running_digest() == (v2 if version == "v2" else v1).digest
    quarantined = {q["digest"] for q in agent.status()["quarantined"]}
    assert (v2.digest in quarantined) == (mode == "exit")  # the outage blames no build


def test_engine_away_longer_than_the_wait_leaves_it_to_recovery(
        site: Site, figures: Figures, monkeypatch: pytest.MonkeyPatch) -> None:
    v1 = push(site, "v1")
    site.run_app(v1)
    push(site, "v2", mode="exit")
    settings = site.settings(**FAST)
    real = app.build_runtime(settings)
    OPEN.append(real)
    down = Outage(real, "unpark", 4)
    agent = make_agent(settings, runtime=down, health=app.build_health(settings, down),
                       tunables=Tunables(engine_wait_s=1.0))
    report = agent.poll_once()
    figures.fault()
    figures.deploys()
    assert (report.outcome, report.exit_code) == ("docker_error", 5), report
    assert agent.status()["phase"] == "ROLLBACK" and not agent.status()["halted"]
    time.sleep(max(0.0, (down.until or 0) - time.monotonic()))
    make_agent(settings).recover()  # the daemon's next poll, the engine back
    figures.service_ok(site, "v1")
    figures.nothing_lost(site)
    row = site.history()[0]
    assert row["outcome"] == "rolled_back" and row["reason"].startswith("recovered"), row
