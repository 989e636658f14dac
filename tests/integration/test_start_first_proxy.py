"""Start-first behind a real reverse proxy (Debian's nginx on the app's network, resolving
the alias through the engine's DNS) with a 50 ms prober through it: a healthy swap and a
failing build both cost zero requests. Runs on both engine lanes."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.deploybed import push
from tests.integration.proxybed import ProxySite, failed, summary

pytestmark = pytest.mark.integration

GATE = {"HEALTH_URL": "http://{address}:8080/healthz", "HEALTH_INTERVAL": "0.3",
        "HEALTH_SOAK": "1", "HEALTH_TIMEOUT": "8"}


@pytest.fixture
def proxied(bed: Any, repo: str, cleanup: str, tmp_path: Path) -> Iterator[ProxySite]:
    s = ProxySite(bed=bed, uid=cleanup, repo=repo, tmp=tmp_path)
    s.config.update(GATE)
    yield s
    s.teardown()


def started_at(site: ProxySite, cid: str) -> str:
    return str(site.bed.docker.api.inspect_container(cid)["State"]["StartedAt"])


def test_a_healthy_start_first_swap_fails_no_request(proxied: ProxySite) -> None:
    v1 = push(proxied, "v1")
    proxied.run_app(v1)
    v2 = push(proxied, "v2", boot_delay=1)
    with proxied.prober() as probe:
        time.sleep(0.5)
        t0 = time.time()
        p = proxied.cli("deploy")
        proxied.wait_serving("v2")
        time.sleep(1)
    print(f"\nhealthy start-first swap behind nginx: {summary(probe.samples, t0)}")
    assert p.returncode == 0, p.stderr
    assert failed(probe.samples, t0) == []
    assert len([s for s in probe.samples if s.t >= t0]) > 20  # it really probed meanwhile
    assert proxied.containers() == [proxied.name] and proxied.data_intact()
    assert proxied.running_digest() == v2.digest


def test_a_failing_build_behind_the_proxy_fails_no_request(proxied: ProxySite) -> None:
    v1 = push(proxied, "v1")
    old_id = proxied.run_app(v1)
    before = started_at(proxied, old_id)
    bad = push(proxied, "v2", mode="500")
    with proxied.prober() as probe:
        time.sleep(0.5)
        t0 = time.time()
        p = proxied.cli("deploy")
        time.sleep(0.5)
    print(f"\nfailing build behind nginx: {summary(probe.samples, t0)}")
    assert p.returncode == 1, p.stderr
    assert failed(probe.samples, t0) == []  # the 500 build never got a request
    assert proxied.inspect()["Id"] == old_id and started_at(proxied, old_id) == before
    assert proxied.containers() == [proxied.name] and proxied.data_intact()
    assert [q["digest"] for q in proxied.status()["quarantined"]] == [bad.digest]
