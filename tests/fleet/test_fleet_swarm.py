"""A three-node swarm on three engines: the manager (node n1) runs the agent in its own
netns, two workers; a private image through the token registry, the credentials passed
with each update; a service of four replicas on an attachable overlay (``dnsrr``: a node
here has no IPVS, so no routing mesh) behind nginx on the manager, which reaches tasks on
every node over VXLAN.

What a user checks: the digest every node's own engine runs for the service, the agent's
exit code and history, ``docker service ps``, a 50 ms prober through the proxy.
"""

from __future__ import annotations

import contextlib
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bench.probe import Prober
from testbed import fleet
from testbed.images import APP_PORT
from testbed.proxy import Proxy
from testbed.util import wait_until
from tests.fleet.fleetbed import NodeBed, NodeSwarmSite, node_digests, swarm_of
from tests.integration.deploybed import push
from tests.integration.proxybed import failed, summary

pytestmark = [pytest.mark.integration]

LOST_WAIT_S = 150


def nodes_line(site: NodeSwarmSite) -> str:
    return ", ".join(f"{n['Description']['Hostname']}: {n['Status']['State']}"
                     for n in site.bed.docker.api.nodes())


@pytest.fixture(scope="module")
def swarm3(nodes: list[fleet.Node]) -> Iterator[list[fleet.Node]]:
    with swarm_of(nodes[:1], nodes[1:3]):
        yield nodes[:3]


@pytest.fixture
def site(bed: Any, swarm3: list[fleet.Node], private_repo: str, cleanup: str,
         tmp_path: Path) -> Iterator[NodeSwarmSite]:
    token = tmp_path / "registry-token"
    token.write_text(bed.password + "\n")
    token.chmod(0o600)
    manager = swarm3[0]
    s = NodeSwarmSite(bed=NodeBed(docker=manager.client(), builder=bed.docker, raw=bed.raw),
                      uid=cleanup, repo=private_repo, tmp=tmp_path, node=manager, replicas=4,
                      config={"REGISTRY_USERNAME": bed.username,
                              "REGISTRY_PASSWORD_FILE": str(token)})
    yield s
    s.teardown()
    s.remove_service()
    s.bed.docker.close()


def behind_proxy(site: NodeSwarmSite, v1: Any) -> tuple[Proxy, dict[str, str]]:
    """The service made by the operator (private image, credentials with it), nginx on the
    manager in front of it; the agent's settings for it (health through the proxy)."""
    assert site.node is not None
    site.create_service(v1, host_port=False)
    proxy = Proxy(site.bed.docker, name=f"{site.uid}-proxy", network=site.network,
                  upstream=site.name, upstream_port=APP_PORT, host_ip="0.0.0.0",
                  reach=site.node.ip)
    proxy.start()
    site.url_override = proxy.url
    site.wait_serving("v1")
    return proxy, {"health_url": f"http://127.0.0.1:{proxy.port}/healthz",
                   "swarm_parallelism": "1"}


def on_every_node(swarm: list[fleet.Node], site: NodeSwarmSite, digest: str,
                  timeout: float = 30) -> None:
    """Each node's own engine runs tasks of the service, all of ``digest``."""
    def check() -> bool:
        got = [node_digests(n, site.name) for n in swarm]
        return all(g and set(g) == {digest} for g in got)
    try:
        wait_until(check, timeout=timeout, interval=0.3, what="every node on one digest")
    except TimeoutError:
        raise AssertionError(f"{ {n.name: node_digests(n, site.name) for n in swarm} }\n"
                             f"{site.ps()}") from None


def test_four_replicas_on_three_engines_roll_forward_and_back_on_every_node(
        site: NodeSwarmSite, swarm3: list[fleet.Node]) -> None:
    v1 = push(site, "v1", healthcheck=True)
    _, cfg = behind_proxy(site, v1)
    on_every_node(swarm3, site, v1.digest)
    v2 = push(site, "v2", healthcheck=True)
    p = site.cli("deploy", **cfg, swarm_order="stop-first")
    assert p.returncode == 0, (p.stdout, p.stderr, site.ps())
    assert site.running_digests() == [v2.digest] * 4, site.ps()
    on_every_node(swarm3, site, v2.digest)  # the workers pulled it with what the agent sent
    site.wait_serving("v2")

    bad = push(site, "v3", mode="exit", healthcheck=True)
    p = site.cli("deploy", **cfg, swarm_order="stop-first")
    assert p.returncode == 1, (p.stdout, p.stderr, site.ps())
    site.wait_tasks(v2.digest)
    on_every_node(swarm3, site, v2.digest)
    assert site.spec_digest() == v2.digest
    assert site.update_status()["State"] == "rollback_completed", site.update_status()
    row = site.history()[0]
    assert (row["outcome"], row["to_digest"]) == ("rolled_back", bad.digest), row
    assert "exit code 3" in row["log_tail"], row
    assert [q["digest"] for q in site.status()["quarantined"]] == [bad.digest]


def test_start_first_through_a_proxy_that_reaches_every_node_fails_no_request(
        site: NodeSwarmSite, swarm3: list[fleet.Node]) -> None:
    v1 = push(site, "v1", healthcheck=True)
    proxy, cfg = behind_proxy(site, v1)
    v2 = push(site, "v2", healthcheck=True)
    with Prober(proxy.port, host=proxy.reach) as probe:
        since = time.time()
        p = site.cli("deploy", **cfg, swarm_order="start-first")
        until = time.time()
    assert p.returncode == 0, (p.stdout, p.stderr, site.ps())
    assert site.running_digests() == [v2.digest] * 4, site.ps()
    # start-first places each new task beside the old ones: swarm may leave a node without
    # one; no node runs the old build, and the tasks span nodes
    wait_until(lambda: all(set(node_digests(n, site.name)) <= {v2.digest} for n in swarm3),
               timeout=30, what="no node running v1")
    assert sum(1 for n in swarm3 if node_digests(n, site.name)) >= 2, site.ps()
    assert failed(probe.samples, since, until) == [], summary(probe.samples, since)
    assert summary(probe.samples, since)["requests"] > 50
    print(f"fleet swarm start-first: {summary(probe.samples, since)}")


def test_a_worker_killed_mid_rollout_leaves_nothing_half_updated(
        site: NodeSwarmSite, swarm3: list[fleet.Node]) -> None:
    v1 = push(site, "v1", healthcheck=True)
    _, cfg = behind_proxy(site, v1)
    v2 = push(site, "v2", healthcheck=True, boot_delay=1)
    lost = swarm3[2]
    deploy = site.popen("deploy", **cfg, swarm_order="stop-first")
    try:
        wait_until(lambda: v2.digest in site.running_digests() or deploy.poll() is not None,
                   timeout=60, interval=0.1, what="the rollout to begin")
        assert deploy.poll() is None, deploy.communicate()
        fleet.kill_node(lost)
        t_lost = time.monotonic()
        try:
            out, err = deploy.communicate(timeout=LOST_WAIT_S)
        except subprocess.TimeoutExpired:
            deploy.kill()
            out, err = deploy.communicate(timeout=30)
            raise AssertionError(f"deploy still running {LOST_WAIT_S}s after the worker was "
                                 f"lost\n{site.ps()}\n{site.update_status()}\n{nodes_line(site)}"
                                 f"\n{err[-3000:]}") from None
    finally:
        with contextlib.suppress(Exception):
            fleet.start_node(lost)  # the worker comes back; swarm reconciles it
    assert deploy.returncode in (0, 1), (deploy.returncode, out, err, site.ps())
    row = site.history()[0]
    want = v2.digest if deploy.returncode == 0 else v1.digest
    assert row["outcome"] == ("deployed" if deploy.returncode == 0 else "rolled_back"), row
    assert site.spec_digest() == want, site.ps()
    site.wait_tasks(want, timeout=90)  # four tasks of one digest: nothing half-updated
    no_other_digest(swarm3, site, want)  # the worker back: its stranded tasks gone too
    print(f"fleet swarm worker killed mid-rollout: exit {deploy.returncode} "
          f"{time.monotonic() - t_lost:.0f}s after, {row['outcome']}: {row['reason'][:160]}")
    if deploy.returncode == 1:  # the lost node is not the build's fault
        assert "down" in row["reason"] and "not the build's fault" in row["reason"], row
        assert site.status()["quarantined"] == []
        p = site.cli("deploy", **cfg, swarm_order="stop-first")  # it is taken again
        assert p.returncode == 0, (p.stdout, p.stderr, site.ps())
        site.wait_tasks(v2.digest)
        no_other_digest(swarm3, site, v2.digest)


def no_other_digest(swarm: list[fleet.Node], site: NodeSwarmSite, digest: str) -> None:
    """No node's engine runs a task of the service of another digest (one may run none)."""
    wait_until(lambda: all(set(node_digests(n, site.name)) <= {digest} for n in swarm),
               timeout=90, interval=0.5, what=f"every node on {digest[:19]} or none")
