"""The swarm target on a real one-node swarm (the bed's engine, ``docker swarm init`` on
loopback) and the bed's token-auth registry: a service published in host mode follows
``main`` by digest through swarm's rolling update, a build that exits at boot ends in
swarm's rollback with the build quarantined, one whose health answers 500 (no
HEALTHCHECK: swarm completes) in the agent's update back, and ``status``/``history``/``check``/
``rollback`` read and act on the service as they do on a container; a global service the
same way."""

from __future__ import annotations

import time

from tests.integration.deploybed import SECRET_FORMS, push
from tests.swarm.swarmbed import SwarmSite, elapsed


def test_good_build_rolls_out_and_bad_builds_are_rolled_back(
        swarm_site: SwarmSite) -> None:
    site, t0 = swarm_site, time.monotonic()
    v1 = push(site, "v1")
    site.create_service(v1)
    site.wait_serving("v1")
    v2 = push(site, "v2")

    p = site.cli("deploy")
    assert p.returncode == 0, (p.stdout, p.stderr, site.ps())
    assert site.running_digests() == [v2.digest], site.ps()
    assert site.spec_digest() == v2.digest
    site.wait_serving("v2")
    uc = site.service()["Spec"]["UpdateConfig"]
    assert uc["FailureAction"] == "rollback" and uc["Monitor"] >= 5 * 10**9, uc
    row = site.history()[0]
    assert (row["outcome"], row["to_digest"]) == ("deployed", v2.digest), row
    status = site.status()
    assert status["current"]["digest"] == v2.digest, status
    assert status["previous"]["digest"] == v1.digest, status

    bad = push(site, "v3", mode="exit")
    p = site.cli("deploy")
    assert p.returncode == 1, (p.stdout, p.stderr, site.ps())
    assert site.spec_digest() == v2.digest, site.ps()
    assert site.running_digests() == [v2.digest], site.ps()
    assert site.update_status()["State"] == "rollback_completed", site.update_status()
    site.wait_serving("v2")
    row = site.history()[0]
    assert (row["outcome"], row["to_digest"]) == ("rolled_back", bad.digest), row
    assert "swarm: rollback" in row["log_tail"] and "exit code 3" in row["log_tail"], row
    assert "fatal: cannot open database" in row["log_tail"], row  # the failed task's log
    assert [q["digest"] for q in site.status()["quarantined"]] == [bad.digest]

    # no HEALTHCHECK: swarm completes the update, the agent's probe gets 500 and the agent
    # updates the service back to the image it ran before (failure action pause)
    broken = push(site, "v4", mode="500")
    p = site.cli("deploy")
    assert p.returncode == 1, (p.stdout, p.stderr, site.ps())
    assert "http 500" in p.stdout + p.stderr, (p.stdout, p.stderr)
    assert site.running_digests() == [v2.digest], site.ps()
    assert site.service()["Spec"]["UpdateConfig"]["FailureAction"] == "pause"
    site.wait_serving("v2")
    assert {q["digest"] for q in site.status()["quarantined"]} == {bad.digest, broken.digest}

    version = site.version()
    p = site.cli("deploy")  # the next poll: one HEAD, the build is quarantined
    assert p.returncode == 0 and "quarantined" in p.stdout + p.stderr, (p.stdout, p.stderr)
    assert site.version() == version, "the service was updated again"
    check = site.cli("check")
    assert f"(service {site.name})" in check.stdout, check.stdout
    assert check.returncode == 0 and "quarantined" in check.stdout, check.stdout

    p = site.cli("rollback")  # to the previous good digest from the agent's history
    assert p.returncode == 0, (p.stdout, p.stderr, site.ps())
    assert site.running_digests() == [v1.digest], site.ps()
    assert site.history()[0]["to_digest"] == v1.digest
    for text in (p.stdout, p.stderr, site.ps()):
        assert not any(s in text for s in SECRET_FORMS)
    print(f"swarm good/exit/rollback: {elapsed(t0)}s")


def test_a_global_service_follows_main_and_rolls_a_bad_build_back(
        swarm_site: SwarmSite) -> None:
    """Mode global (one task per node, no replica count): the same update, gate and
    rollback as a replicated service."""
    site, t0 = swarm_site, time.monotonic()
    v1 = push(site, "v1")
    site.create_service(v1, global_mode=True)
    assert "Global" in site.service()["Spec"]["Mode"]
    v2 = push(site, "v2")
    p = site.cli("deploy")
    assert p.returncode == 0, (p.stdout, p.stderr, site.ps())
    assert site.running_digests() == [v2.digest] and site.spec_digest() == v2.digest, site.ps()
    site.wait_serving("v2")

    bad = push(site, "v3", mode="exit")
    p = site.cli("deploy")
    assert p.returncode == 1, (p.stdout, p.stderr, site.ps())
    assert site.running_digests() == [v2.digest] and site.spec_digest() == v2.digest, site.ps()
    assert "Global" in site.service()["Spec"]["Mode"]  # the mode is the service's own
    site.wait_serving("v2")
    row = site.history()[0]
    assert (row["outcome"], row["to_digest"]) == ("rolled_back", bad.digest), row
    assert [q["digest"] for q in site.status()["quarantined"]] == [bad.digest]
    print(f"swarm global service: {elapsed(t0)}s")
