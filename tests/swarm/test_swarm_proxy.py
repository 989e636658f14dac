"""Two replicas behind a proxy: the service has no published port, its tasks sit on an
attachable overlay network with ``endpoint_mode dnsrr`` (the virtual IP needs IPVS, which
the bed's kernel lacks), nginx on the same network resolves the service name to every
task. ``TWILIGHT_SWARM_ORDER=start-first`` rolls it out with the 50 ms prober through the
proxy seeing no failed request; a build whose health answers 500 turns its first task
unhealthy and ends in swarm's rollback, the previous digest on every task, quarantined."""

from __future__ import annotations

import time

from bench.probe import Prober
from testbed.images import APP_PORT
from testbed.proxy import Proxy
from tests.integration.deploybed import push
from tests.integration.proxybed import failed, summary
from tests.swarm.swarmbed import SwarmSite, elapsed


def test_two_replicas_start_first_behind_a_proxy_then_a_500_build(
        swarm_site: SwarmSite) -> None:
    site, t0 = swarm_site, time.monotonic()
    site.replicas = 2
    v1 = push(site, "v1", healthcheck=True)
    site.create_service(v1, host_port=False)
    proxy = Proxy(site.bed.docker, name=f"{site.uid}-proxy", network=site.network,
                  upstream=site.name, upstream_port=APP_PORT)
    proxy.start()
    site.url_override = proxy.url
    site.wait_serving("v1")
    v2 = push(site, "v2", healthcheck=True)
    cfg = {"health_url": proxy.url, "swarm_order": "start-first", "swarm_parallelism": "1"}

    with Prober(proxy.port) as probe:
        since = time.time()
        p = site.cli("deploy", **cfg)
        until = time.time()
    assert p.returncode == 0, (p.stdout, p.stderr, site.ps())
    assert site.running_digests() == [v2.digest, v2.digest], site.ps()
    assert site.service()["Spec"]["UpdateConfig"]["Order"] == "start-first"
    assert failed(probe.samples, since, until) == [], summary(probe.samples, since)
    assert summary(probe.samples, since)["requests"] > 50

    bad = push(site, "v3", mode="500", healthcheck=True)
    p = site.cli("deploy", **cfg)
    assert p.returncode == 1, (p.stdout, p.stderr, site.ps())
    site.wait_tasks(v2.digest)
    assert site.spec_digest() == v2.digest
    assert site.update_status()["State"] == "rollback_completed", site.update_status()
    row = site.history()[0]
    assert (row["outcome"], row["to_digest"]) == ("rolled_back", bad.digest), row
    assert [q["digest"] for q in site.status()["quarantined"]] == [bad.digest]
    site.wait_serving("v2")
    print(f"swarm start-first behind proxy + 500: {elapsed(t0)}s, "
          f"{summary(probe.samples, since)}")
