"""The reverse-proxy bed: nginx on the app's network reaching it by its alias, and the 50 ms
prober through it, which the start-first swap's tests and the bench rely on.

The handover test is the layout a start-first swap produces, done by hand: a second
container joins the alias, passes its gate, then the first one is stopped. Zero failed
requests is the proxy's share of zero downtime; the negative control shows the prober can
see an outage at all.
"""

from __future__ import annotations

import time

import pytest

from bench.probe import Prober
from tests.integration.deploybed import push
from tests.integration.proxybed import ProxySite, failed, summary

pytestmark = pytest.mark.integration


def _steady(probe: Prober, body: str, hold: float) -> float:
    """Wait until the prober has seen only ``body`` for ``hold`` seconds; return when."""
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        now = time.time()
        recent = [s for s in probe.samples if s.t >= now - hold]
        if len(recent) >= hold / probe.period * 0.8 and all(s.body == body for s in recent):
            return now
        time.sleep(0.1)
    raise AssertionError(f"never {hold}s of only {body!r} through the proxy: "
                         f"{summary(probe.samples, time.time() - hold)}")


def test_proxy_reaches_the_app_by_its_alias(proxy_site: ProxySite) -> None:
    v1 = push(proxy_site, "v1")
    proxy_site.run_app(v1)
    assert proxy_site.serving() == "ok v1"
    info = proxy_site.inspect()
    assert not info["HostConfig"]["PortBindings"]  # reachable only through the proxy
    assert proxy_site.backends() == [proxy_site.name]
    assert proxy_site.containers() == [proxy_site.name]
    address = proxy_site.app_address()
    assert f"upstream={address}:8080 upstream_status=200" in proxy_site.proxy.logs()


def test_start_first_handover_behind_the_proxy_fails_no_request(proxy_site: ProxySite) -> None:
    v1, v2 = push(proxy_site, "v1"), push(proxy_site, "v2")
    proxy_site.run_app(v1)
    with proxy_site.prober() as probe:
        t0 = _steady(probe, "ok v1", hold=0.5)
        new = f"{proxy_site.uid}-app-new"
        proxy_site.start_beside(v2, new)
        proxy_site.gate(new, "v2")  # on its own address, as the swap's gate will
        assert proxy_site.wait_backends(2) == sorted([proxy_site.name, new])
        time.sleep(1.5)  # past the resolver's valid=1s: nginx now knows both addresses
        both = summary(probe.samples, t0)
        stop_at = time.time()
        proxy_site.bed.docker.api.stop(proxy_site.name, timeout=2)
        stopped = time.time()
        assert proxy_site.wait_backends(1) == [new]
        t1 = _steady(probe, "ok v2", hold=2)  # past the cached resolution
    got = summary(probe.samples, t0)
    print(f"\nhandover behind the proxy: {got} (both up: {both}); docker stop took "
          f"{stopped - stop_at:.2f}s; requests nginx moved to the next address: "
          f"{proxy_site.proxy.retry_statuses()}")
    assert failed(probe.samples, t0, t1) == [], got
    assert got["requests"] >= (t1 - t0) / 0.05 * 0.8  # the prober kept its 50 ms schedule


def test_prober_through_the_proxy_sees_the_only_container_stop(proxy_site: ProxySite) -> None:
    v1 = push(proxy_site, "v1")
    proxy_site.run_app(v1)
    with proxy_site.prober() as probe:
        t0 = _steady(probe, "ok v1", hold=0.5)
        proxy_site.bed.docker.api.stop(proxy_site.name, timeout=2)
        time.sleep(2)
    got = summary(probe.samples, t0)
    print(f"\nonly container stopped behind the proxy: {got}")
    bad = failed(probe.samples, t0)
    assert len(bad) >= 10, got  # two seconds without an app: dozens of failures
    assert {s.status for s in bad} <= {0, 502, 504}, got
    assert probe.samples[-1].status in (0, 502, 504), got
