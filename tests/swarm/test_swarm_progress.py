"""The watchdog's rule on the one-node swarm: a rolling update at parallelism 1 over several
replicas lasts longer than the no-progress bound, and still never goes that long without
reporting progress (each change of swarm's ``UpdateStatus`` or of a task's state), so a
daemon's watchdog stays fed through it. The daemon side of the rule (the heartbeat, the
pings, systemd's restart) is shown under the real unit in tests/e2e/test_watchdog.py; here
the agent's heartbeat is a recorder."""

from __future__ import annotations

import itertools
import time

from tests.integration.deploybed import push
from tests.swarm.swarmbed import SwarmSite
from twilight_agent import app

NS = 1_000_000_000
STALL_S = 5.0  # the bound this rollout is judged by (TWILIGHT_STALL)


def test_a_slow_rollout_that_keeps_changing_task_states_keeps_the_heartbeat(
        swarm_site: SwarmSite) -> None:
    site = swarm_site
    site.replicas = 3
    v1 = push(site, "v1")
    site.create_service(v1, host_port=False, update={"Parallelism": 1, "Delay": 2 * NS})
    v2 = push(site, "v2")
    beats: list[tuple[float, str, float]] = []  # (when, what moved, the quiet it allows)
    agent = app.build_agent(site.settings(SWARM_PARALLELISM=1, HEALTH_URL=""))
    agent.set_heartbeat(lambda what, quiet_s=0.0: beats.append((time.monotonic(), what,
                                                                 quiet_s)))
    try:
        report = agent.deploy()
    finally:
        agent.close()
    assert report.outcome == "deployed", (report.reason, site.ps())
    site.wait_tasks(v2.digest)
    rollout = [b for b in beats if b[1].startswith("swarm ")]
    took = rollout[-1][0] - rollout[0][0]
    # the daemon's rule (core/progress.Heartbeat): stalled when quiet > bound + allowed
    stalls = [(b[0] - a[0], a) for a, b in itertools.pairwise(beats)
              if b[0] - a[0] > STALL_S + a[2]]
    assert not stalls, (stalls, beats)
    assert took > 3 * STALL_S, (took, rollout)  # far longer than a quiet step may be
    assert len(rollout) >= 3 * 2, rollout  # each replica's tasks changed state
    assert rollout[-1][1].startswith("swarm completed"), rollout
    longest = max(b[0] - a[0] for a, b in itertools.pairwise(rollout))
    print(f"swarm rollout: {took:.1f}s over 3 replicas at parallelism 1, "
          f"{len(rollout)} changes reported, longest quiet {longest:.1f}s "
          f"(bound {STALL_S:g}s + swarm's delay and monitor {rollout[-2][2]:g}s)")
