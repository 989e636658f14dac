"""Progress as the watchdog judges it: the heartbeat's rule, what a pull stream and a swarm
rollout count as moving, and what a deploy reports on its way."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from tests.unit.fakes import Digest
from tests.unit.test_agent import NEW, World
from twilight_agent.adapters.docker import swarm_spec as ss
from twilight_agent.adapters.docker.refs import PullMeter
from twilight_agent.adapters.docker.swarm_target import SwarmTarget
from twilight_agent.core.progress import Heartbeat, Stall

REPO = "ghcr.io/lacatfly/twilight-drive"
OLD, NEW_D = "sha256:" + "a" * 64, "sha256:" + "b" * 64


class Clock:
    """Fake monotonic time; ``sleep`` moves it and runs ``on_sleep`` (the world moves)."""

    def __init__(self) -> None:
        self.t = 0.0
        self.on_sleep: Callable[[], None] = lambda: None

    def now(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.t += seconds
        self.on_sleep()


# --------------------------------------------------------------------------- the rule
def test_heartbeat_stalls_only_after_the_bound_plus_the_steps_own_quiet() -> None:
    clock = Clock()
    hb = Heartbeat(clock.now)
    hb.beat("pull: 1 layers, 0.1 MB so far")
    clock.t = 30.0
    assert hb.stalled(30) is None
    clock.t = 30.5
    assert hb.stalled(30) == Stall("pull: 1 layers, 0.1 MB so far", 30.5, 30)
    hb.beat("pre-deploy task", quiet_s=600)
    clock.t += 629
    assert hb.stalled(30) is None
    clock.t += 2
    assert hb.stalled(30) == Stall("pre-deploy task", 631.0, 630)


# --------------------------------------------------------------------------- a pull
def _layer(status: str, current: int | None = None, ident: str = "0123456789ab",
           total: int = 2_000_000) -> dict[str, Any]:
    line: dict[str, Any] = {"status": status, "id": ident}
    if current is not None:
        line["progressDetail"] = {"current": current, "total": total}
    return line


def test_a_pull_moves_when_bytes_grow_or_a_layer_changes_status() -> None:
    meter = PullMeter()
    stream = [
        ({"status": "Pulling from bed/app", "id": "sha-1234567"}, True),
        (_layer("Pulling fs layer"), True),
        (_layer("Waiting"), True),
        (_layer("Downloading", 65_536), True),
        (_layer("Downloading", 65_536), False),  # the same count again: not moved
        (_layer("Downloading", 131_072), True),
        (_layer("Verifying Checksum"), True),
        (_layer("Download complete"), True),
        (_layer("Extracting", 32_768), True),
        (_layer("Extracting", 32_768), False),
        (_layer("Pull complete"), True),
        ({"error": "unexpected EOF", "errorDetail": {"message": "unexpected EOF"}}, False),
    ]
    assert [meter.moved(line) for line, _ in stream] == [moved for _, moved in stream]
    assert meter.summary() == "pull: 2 layers, 0.1 MB so far"


# --------------------------------------------------------------------------- a swarm rollout
class FakeSwarmApi:
    """A service at parallelism 1 over ``replicas`` tasks: each ``step_s`` of fake time one
    task moves one state on (new -> preparing -> starting -> running); ``freeze_at``: from
    then on nothing changes (a node that never answers)."""

    STATES = ("new", "preparing", "starting", "running")

    def __init__(self, clock: Clock, replicas: int, step_s: float,
                 freeze_at: float | None = None) -> None:
        self.clock, self.replicas, self.step_s = clock, replicas, step_s
        self.freeze_at = freeze_at

    def _steps(self) -> int:
        t = self.clock.t if self.freeze_at is None else min(self.clock.t, self.freeze_at)
        return int(t // self.step_s)

    def inspect_service(self, service: str) -> Mapping[str, Any]:
        done = self._steps() >= self.replicas * (len(self.STATES) - 1)
        image = f"{REPO}:sha-2@{NEW_D}"
        return {"ID": "svc1", "Version": {"Index": 1},
                "Spec": {"TaskTemplate": {"ContainerSpec": {"Image": image}},
                         "Mode": {"Replicated": {"Replicas": self.replicas}},
                         "UpdateConfig": {"Parallelism": 1}},
                "UpdateStatus": {"State": "completed" if done else "updating",
                                 "Message": "update completed" if done else "updating"}}

    def tasks(self, filters: Mapping[str, str]) -> list[Mapping[str, Any]]:
        steps, per = self._steps(), len(self.STATES) - 1
        out = []
        for slot in range(self.replicas):
            moved = min(max(steps - slot * per, 0), per)
            out.append({"ID": f"task{slot}", "Slot": slot, "DesiredState": "running",
                        "NodeID": f"node{slot % 3}",
                        "Status": {"State": self.STATES[moved]},
                        "Spec": {"ContainerSpec": {"Image": f"{REPO}@{NEW_D}"}}})
        return out

    def nodes(self) -> list[Mapping[str, Any]]:
        return [{"ID": f"node{i}", "Description": {"Hostname": f"n{i}"},
                 "Status": {"State": "ready", "Addr": f"10.0.0.{i}"}} for i in range(3)]


class FakeRuntime:
    def __init__(self, api: FakeSwarmApi) -> None:
        self.api = api


def _rollout(replicas: int, step_s: float, stall_s: float,
             freeze_at: float | None = None) -> tuple[Clock, list[str], Stall | None]:
    """Settle a rollout with the heartbeat watching; return the clock, what was reported,
    and the first stall the watchdog would have seen."""
    clock = Clock()
    api = FakeSwarmApi(clock, replicas, step_s, freeze_at)
    hb = Heartbeat(clock.now)
    seen: list[Stall] = []
    reported: list[str] = []

    def moved(what: str, quiet_s: float = 0.0) -> None:
        reported.append(what)
        hb.beat(what, quiet_s)

    def look() -> None:
        stall = hb.stalled(stall_s)
        if stall is not None and not seen:
            seen.append(stall)
    clock.on_sleep = look
    target = SwarmTarget(FakeRuntime(api), service="web", clock=clock)  # type: ignore[arg-type]
    target.settle(ss.instance_id("svc1", NEW_D), None, moved)
    return clock, reported, seen[0] if seen else None


def test_a_slow_swarm_rollout_that_keeps_changing_task_states_is_never_stalled() -> None:
    # 6 replicas one at a time, a task state every 20 s: 6 minutes, 12x the 30 s bound
    clock, reported, stall = _rollout(replicas=6, step_s=20, stall_s=30)
    assert stall is None
    assert clock.t >= 6 * 3 * 20
    assert len(reported) == 6 * 3 + 1  # the first look, then each change once
    assert reported[0] == "swarm updating: 6 new"
    assert reported[-1] == "swarm completed: 6 running"


def test_a_swarm_rollout_that_stops_changing_stalls_after_the_bound() -> None:
    _, reported, stall = _rollout(replicas=6, step_s=20, stall_s=30, freeze_at=130)
    assert stall is not None and stall.limit_s == 30 + ss.DEFAULT_MONITOR_S  # swarm's pace
    assert stall.what == reported[-1] == "swarm updating: 4 new, 2 running"
    assert stall.quiet_s > 30


class RollingBack(FakeSwarmApi):
    """Swarm's own rollback: ``rollback_started`` while the tasks move, then completed."""

    def inspect_service(self, service: str) -> Mapping[str, Any]:
        svc = dict(super().inspect_service(service))
        done = svc["UpdateStatus"]["State"] == "completed"
        svc["UpdateStatus"] = {"State": "rollback_completed" if done else "rollback_started"}
        return svc


def test_the_undo_waiting_for_swarms_rollback_reports_it_too() -> None:
    clock = Clock()
    reported: list[str] = []
    target = SwarmTarget(FakeRuntime(RollingBack(clock, 4, 20)),  # type: ignore[arg-type]
                         service="web", clock=clock)
    target.remove(ss.instance_id("svc1", NEW_D), lambda what, quiet_s=0.0: reported.append(what))
    assert len(reported) == 4 * 3 + 1
    assert reported[-1] == "swarm rollback_completed: 4 running"


# --------------------------------------------------------------------------- a deploy
def test_a_deploy_reports_each_step_the_pull_the_gate_and_the_watch(tmp_path: Path) -> None:
    w = World(tmp_path, watch=5)
    pulled = w.runtime.pull

    def pull(repository: str, digest: Digest, auth: Any, progress: Any = None,
             moved: Callable[[str], None] | None = None) -> str:
        assert moved is not None
        moved("pull: 1 layers, 1.0 MB so far")
        return pulled(repository, digest, auth, progress)
    w.runtime.pull = pull  # type: ignore[method-assign]
    beats: list[tuple[str, float]] = []
    w.agent.set_heartbeat(lambda what, quiet_s=0.0: beats.append((what, quiet_s)))
    assert w.agent.deploy().outcome == "deployed" and w.running == NEW.digest
    said = [what for what, _ in beats]
    for expected in ("PULL Pull", "pull: 1 layers, 1.0 MB so far", "SWAP CreateNew",
                     "VERIFY Verify", "health gate", "WATCH Watch", "watch"):
        assert expected in said, (expected, said)
    assert said.index("PULL Pull") < said.index("pull: 1 layers, 1.0 MB so far")
