"""Engine faults that need no engine restart: the parked container removed by hand, the
target container missing, its port taken by another container at swap time, and a pull
that fails in-band (a layer the registry no longer has: what a full disk looks like to
the agent: the engine answers 200, then reports the error inside the stream).

Stopping and restarting dockerd itself (during the pull, the swap, verify, and the tag,
remove and unpark steps) is in ``test_zz_engine_restart.py`` (runs last).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from tests.faults.conftest import Figures
from tests.integration.deploybed import Site, one_line, push
from twilight_agent import app
from twilight_agent.agent import Agent
from twilight_agent.settings import Settings

pytestmark = pytest.mark.faults

FAST = {"HEALTH_INTERVAL": "0.2", "HEALTH_SOAK": "0.5", "HEALTH_TIMEOUT": "5"}
OPEN: list[Any] = []


@pytest.fixture(autouse=True)
def _close_clients() -> Iterator[None]:
    yield
    while OPEN:
        OPEN.pop().close()


def make_agent(settings: Settings, runtime: Any = None, health: Any = None) -> Agent:
    real = app.build_runtime(settings)
    registry = app.build_registry(settings)
    OPEN.extend([real, registry])
    return app.build_agent(settings, registry=registry, runtime=runtime or real,
                           health=health or app.build_health(settings, real))


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
        """Another container grabs the port the moment the old one is stopped, and is gone
        again by the time the agent removes the new one."""

        def __getattr__(self, name: str) -> Any:
            return getattr(real, name)

        def stop(self, container_id: str) -> None:
            real.stop(container_id)
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
