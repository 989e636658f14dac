"""A ring of hosts on four engines: a canary promoting to ``stable`` and three followers,
each an agent in its own node's network namespace, under that node's own dockerd, with its
own state.

What a user checks: the digest ``stable`` points at (asked of the registry), the digest each
node's engine runs, each agent's history; which node asked the registry for what (the
registry's access log, by the node's own source address); which images each engine holds.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from testbed import fleet
from testbed.accesslog import AccessLog
from testbed.faultproxy import FaultProxy
from testbed.util import wait_until
from tests.fleet.fleetbed import NodeSite, asked_by, node_site
from tests.integration.deploybed import push
from tests.integration.test_promotion import FAST, canary_config, daemons, promotion_step, stable

pytestmark = [pytest.mark.integration]


@pytest.fixture
def ring(bed: Any, nodes: list[fleet.Node], repo: str, cleanup: str,
         tmp_path: Path) -> Iterator[list[NodeSite]]:
    """The canary on n1, followers on n2..n4; every node's containers of it removed after."""
    sites = [node_site(bed, n, f"{cleanup}-{n.name}", repo, tmp_path / n.name)
             for n in nodes]
    yield sites
    for s in sites:
        s.teardown()
        with contextlib.closing(s.bed.docker) as c:
            for v in c.volumes.list(filters={"name": cleanup}):
                v.remove(force=True)
            for net in c.networks.list(names=[cleanup]):
                net.remove()


def all_on_v1(ring: list[NodeSite]) -> Any:
    """v1 pushed with ``stable`` on it, run by the operator on every host."""
    v1 = push(ring[0], "v1", extra_tags=("stable",))
    for s in ring:
        s.run_app(v1)
    return v1


def follow(f: NodeSite, **over: str) -> Any:
    return f.popen("run", **{**FAST, "TRACK": "stable", "RUNTIME_DIRECTORY": str(f.tmp / "run"),
                             **over})


def holds(site: NodeSite, image_id: str) -> bool:
    """The node's engine holds the image (any tag or none): its layers are there."""
    return any(i.id == image_id for i in site.bed.docker.images.list(all=True))


def converged(sites: list[NodeSite], digest: str, t0: float, timeout: float = 60) -> float:
    """Seconds from ``t0`` until every site serves ``digest`` (from its own engine)."""
    for s in sites:
        wait_until(lambda s=s: s.running_digest() == digest and s.history(), timeout=timeout,
                   interval=0.2, what=f"{s.name} on {s.node.name if s.node else '?'} runs it")
    return round(time.monotonic() - t0, 1)


def test_a_good_build_reaches_all_four_engines_a_bad_one_never_leaves_the_canary(
        ring: list[NodeSite]) -> None:
    canary, followers = ring[0], ring[1:]
    all_on_v1(ring)
    procs = [canary.popen("run", **canary_config(canary, "2s"))]
    procs += [follow(f) for f in followers]
    with daemons(*procs):
        t0 = time.monotonic()
        v2 = push(canary, "v2")
        took = converged(ring, v2.digest, t0)
        print(f"fleet ring: push -> 4 engines serving v2 in {took}s "
              f"(poll 1 s, PROMOTE_AFTER 2 s, soak 0.5 s)")
        assert stable(canary) == v2.digest
        for s in ring:
            s.wait_serving("v2")
        mark = AccessLog()
        v3 = push(canary, "v3", mode="exit")
        wait_until(lambda: any(r["outcome"] == "rolled_back" and r["to_digest"] == v3.digest
                               for r in canary.history()), timeout=60,
                   what="the canary rolls v3 back")
        time.sleep(4)  # past PROMOTE_AFTER, several follower polls
        assert stable(canary) == v2.digest and canary.running_digest() == v2.digest
        assert holds(canary, v3.image_id)  # the check below can see an image
        for f in followers:
            assert f.running_digest() == v2.digest
            assert [r["to_digest"] for r in f.history()] == [v2.digest]
            assert not holds(f, v3.image_id), f.node
            asked = asked_by(mark, canary.repo, f.node)  # type: ignore[arg-type]
            assert asked and not [r for r in asked if v3.digest in r[1]], asked
            assert {m for m, _, _ in asked} == {"HEAD"}, asked  # idle polls only
        assert [m for m, u, _ in asked_by(mark, canary.repo, canary.node)  # type: ignore[arg-type]
                if v3.digest in u and m == "GET"]  # the canary did fetch it


def test_kill_9_of_the_canary_mid_promotion_then_a_follower_engine_restart(
        ring: list[NodeSite]) -> None:
    canary, followers = ring[0], ring[1:]
    v1 = all_on_v1(ring)
    v2 = push(canary, "v2")
    canary.config.update(canary_config(canary, "1s"))
    procs = [follow(f) for f in followers]
    with daemons(*procs), FaultProxy() as proxy:
        proxy.set("slow", only="/manifests/stable", delay=120)  # the promotion hangs there
        # the canary asks the registry through a proxy on the host: it runs in the host's
        # namespace, its engine still n1's
        agent = canary.popen_on_host("run", REGISTRY_URL=proxy.url)
        wait_until(lambda: promotion_step(canary) == "promoting" or agent.poll() is not None,
                   timeout=60, interval=0.02, what="the canary to begin the promotion")
        assert agent.poll() is None, agent.communicate()
        time.sleep(0.3)
        agent.kill()
        agent.wait(timeout=10)
        proxy.clear()
        time.sleep(2.5)  # the followers poll stable meanwhile: it never moved
        assert stable(canary) == v1.digest
        assert [f.running_digest() for f in followers] == [v1.digest] * 3
        away = followers[1].node
        assert away is not None
        fleet.stop_node(away)  # this follower's engine goes away while it follows
        t0 = time.monotonic()
        again = canary.popen("run")
        procs.append(again)
        wait_until(lambda: stable(canary) == v2.digest, timeout=30, what="the restart promotes")
        converged([followers[0], followers[2]], v2.digest, t0)
        time.sleep(2)  # the follower on the stopped engine fails its polls meanwhile
        fleet.start_node(away)
        converged([followers[1]], v2.digest, t0, timeout=90)
        followers[1].wait_serving("v2")
    for f in followers:
        rows = f.history()
        assert rows[0]["outcome"] == "deployed" and rows[0]["to_digest"] == v2.digest, rows
    promoted = [r for r in canary.history() if r["outcome"] == "promoted"]
    assert [(r["to_digest"], r["from_digest"]) for r in promoted] == [(v2.digest, v1.digest)]
