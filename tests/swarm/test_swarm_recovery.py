"""The swarm target when the agent is killed mid-update, and under the daemon: ``kill -9``
while swarm is still rolling the service out, then a start-up that waits for that same
update and records it (no second update); SIGTERM mid-update, which undoes the deploy
without blaming the build; pin and unpin through SIGHUP; and the watch after commit, which
rolls back a build that dies after swarm's monitor window."""

from __future__ import annotations

import signal
import time

from testbed.util import wait_until
from tests.integration.deploybed import push
from tests.swarm.swarmbed import SwarmSite, elapsed


def test_kill_9_mid_update_is_recovered_then_pin_and_unpin_through_sighup(
        swarm_site: SwarmSite) -> None:
    site, t0 = swarm_site, time.monotonic()
    v1 = push(site, "v1")
    site.create_service(v1)
    v2 = push(site, "v2")

    agent = site.popen("deploy")
    site.wait_journal("Verify", proc=agent)  # swarm is rolling out, the agent waits on it
    agent.send_signal(signal.SIGKILL)
    agent.communicate(timeout=10)
    assert site.update_status().get("State") == "updating", site.update_status()
    started = site.update_status()["StartedAt"]

    p = site.cli("deploy")
    assert p.returncode == 0, (p.stdout, p.stderr, site.ps())
    assert site.running_digests() == [v2.digest], site.ps()
    assert site.update_status()["StartedAt"] == started, "the service was updated again"
    rows = site.history()
    assert [(r["outcome"], r["to_digest"]) for r in rows] == [("deployed", v2.digest)], rows
    assert "recovered" in (rows[0].get("note") or rows[0]["reason"] or ""), rows[0]

    run_dir = site.tmp / "run"
    daemon = site.popen("run", POLL_INTERVAL="1s", RUNTIME_DIRECTORY=str(run_dir))
    try:
        wait_until(lambda: (run_dir / "twilight-agent.pid").exists() or None, timeout=15,
                   what="the daemon's pidfile")
        pin = site.cli("pin", v1.sha_tag, RUNTIME_DIRECTORY=str(run_dir))
        assert pin.returncode == 0, pin.stderr
        site.wait_tasks(v1.digest, timeout=60)
        unpin = site.cli("unpin", RUNTIME_DIRECTORY=str(run_dir))
        assert unpin.returncode == 0, unpin.stderr
        site.wait_tasks(v2.digest, timeout=60)
        # the gate's soak ends the run: a SIGTERM before that would undo it
        wait_until(lambda: site.history()[0]["to_digest"] == v2.digest or None, timeout=30,
                   what="the unpinned deploy's history row")
        assert daemon.poll() is None
    finally:
        daemon.send_signal(signal.SIGTERM)
        _out, err = daemon.communicate(timeout=60)
    outcomes = [(r["outcome"], r["to_digest"]) for r in site.history()]
    assert outcomes[:2] == [("deployed", v2.digest), ("deployed", v1.digest)], (outcomes, err)
    print(f"swarm kill -9 + pin/unpin: {elapsed(t0)}s")


def test_sigterm_mid_update_undoes_it_and_blames_nobody(swarm_site: SwarmSite) -> None:
    """``systemctl stop`` while swarm rolls a good build out: the finish-or-undo rule for a
    run stopped before its gate passed: the service goes back to the exact previous image on
    every task, the row says rolled back, the build is not quarantined, exit 1 (the deploy
    did not happen, the previous version serves), all well within TimeoutStopSec=120s."""
    site, t0 = swarm_site, time.monotonic()
    v1 = push(site, "v1")
    site.create_service(v1)
    v2 = push(site, "v2")

    agent = site.popen("deploy")
    site.wait_journal("Verify", proc=agent)
    asked = time.monotonic()
    agent.send_signal(signal.SIGTERM)
    out, err = agent.communicate(timeout=110)
    took = time.monotonic() - asked
    assert agent.returncode == 1, (out, err)
    assert "stop requested during verify" in err, err
    assert took < 100, took
    assert site.running_digests() == [v1.digest], site.ps()
    assert site.spec_digest() == v1.digest
    row = site.history()[0]
    assert (row["outcome"], row["to_digest"]) == ("rolled_back", v2.digest), row
    assert v2.digest not in {q["digest"] for q in site.status()["quarantined"]}
    print(f"swarm SIGTERM mid-update: undone {took:.1f}s after the signal, {elapsed(t0)}s")


def test_a_build_that_dies_after_the_gate_is_rolled_back_by_the_watch(
        swarm_site: SwarmSite) -> None:
    site, t0 = swarm_site, time.monotonic()
    v1 = push(site, "v1")
    site.create_service(v1)
    late = push(site, "v2", mode="die-later", die_after=10)  # after swarm's 5 s monitor
    p = site.cli("deploy", WATCH="20s")
    assert p.returncode == 1, (p.stdout, p.stderr, site.ps())
    assert site.running_digests() == [v1.digest], site.ps()
    row = site.history()[0]
    assert (row["outcome"], row["phase"], row["to_digest"]) == (
        "rolled_back", "WATCH", late.digest), row
    assert [q["digest"] for q in site.status()["quarantined"]] == [late.digest]
    site.wait_serving("v1")
    print(f"swarm watch: {elapsed(t0)}s")
