"""A swarm update that stalls on a node that went down: swarm would wait for the node; the
target stops waiting once the update has been still for longer than a batch may pause,
and names the node (``NodeLost``: not the build's fault)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from tests.unit.test_progress import NEW_D, Clock, FakeRuntime, FakeSwarmApi
from twilight_agent.adapters.docker import swarm_spec as ss
from twilight_agent.adapters.docker.swarm_target import SwarmTarget
from twilight_agent.core.tunables import DEFAULT
from twilight_agent.errors import NodeLost


class NodeGoesDown(FakeSwarmApi):
    """The rollout freezes at ``freeze_at``; from then on node1 is down (slot 1's task on
    it never gets further than it was)."""

    def nodes(self) -> list[Mapping[str, Any]]:
        nodes = [dict(n) for n in super().nodes()]
        if self.freeze_at is not None and self.clock.t >= self.freeze_at:
            nodes[1]["Status"] = {"State": "down", "Addr": "10.0.0.1"}
        return nodes


def settle(api: FakeSwarmApi) -> SwarmTarget:
    target = SwarmTarget(FakeRuntime(api), service="web", clock=api.clock)  # type: ignore[arg-type]
    target.settle(ss.instance_id("svc1", NEW_D), None, None)
    return target


def test_an_update_still_with_a_task_on_a_down_node_ends_the_wait_naming_the_node() -> None:
    clock = Clock()
    api = NodeGoesDown(clock, replicas=4, step_s=2, freeze_at=7)  # slot 0 running, slot 1 "new"
    with pytest.raises(NodeLost) as got:
        settle(api)
    last_change = 6.0  # the step before the freeze
    waited = clock.t - last_change
    assert ss.DEFAULT_MONITOR_S + DEFAULT.swarm_stall_grace_s <= waited <= (
        ss.DEFAULT_MONITOR_S + DEFAULT.swarm_stall_grace_s + 2 * DEFAULT.swarm_settle_tick_s)
    assert "n1 (10.0.0.1): task 1 new" in str(got.value), got.value
    assert "not the build's fault" in str(got.value)


def test_an_update_still_with_every_node_ready_is_waited_for_to_its_bound() -> None:
    clock = Clock()
    api = FakeSwarmApi(clock, replicas=2, step_s=2, freeze_at=3)  # no node down
    settle(api)  # returns at the settle bound, raising nothing
    assert clock.t > 100


def test_the_undo_does_not_wait_for_an_update_stalled_on_a_lost_node() -> None:
    clock = Clock()
    api = NodeGoesDown(clock, replicas=4, step_s=2, freeze_at=7)
    target = SwarmTarget(FakeRuntime(api), service="web", clock=clock)  # type: ignore[arg-type]
    target.remove(ss.instance_id("svc1", NEW_D), None)
    assert clock.t < 7 + ss.DEFAULT_MONITOR_S + DEFAULT.swarm_stall_grace_s + 2


def test_only_unfinished_tasks_on_down_nodes_are_stranded() -> None:
    down = ss.down_nodes([{"ID": "a", "Description": {"Hostname": "n1"},
                           "Status": {"State": "down", "Addr": "10.0.0.1"}},
                          {"ID": "b", "Status": {"State": "ready"}}])
    tasks = [{"NodeID": "a", "Slot": 1, "Status": {"State": "assigned"}},
             {"NodeID": "a", "Slot": 2, "Status": {"State": "shutdown"}},
             {"NodeID": "b", "Slot": 3, "Status": {"State": "starting"}}]
    assert ss.stranded(tasks, down) == ["n1 (10.0.0.1): task 1 assigned"]
