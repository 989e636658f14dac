"""A swarm service as the engine describes it, read without I/O: which digest its spec
and its tasks run, how far its update is, the update body the agent posts, and what a
failed update left behind. ``swarm_target.SwarmTarget`` does the I/O around these.

One "instance" of a swarm target is ``<service id>@<digest>``: the service running that
digest. Its state, for the health gate, is read from the service's ``UpdateStatus`` and
its tasks:

- the spec runs the digest, and the update is `updating` or `rollback_started` (back
  to it), or fewer of its tasks run than wanted: running, health `starting` (not passed
  yet);
- the spec runs it, the update `completed`, `rollback_completed` or none, every wanted
  task running: running;
- the spec runs it, the update `paused` or `rollback_paused`: exited (it failed there);
- the spec runs another digest and swarm rolled back from this one (it has tasks of it):
  exited;
- the spec runs another digest, no rollback from this one: missing.

A node that goes down in the middle of an update strands its tasks: swarm can neither start
nor stop them until the node is back, and an update waiting on one of them waits for as
long. ``stranded`` names them; the target ends its wait on such a stall (``NodeLost``).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

from twilight_agent.core.ports import ContainerState

NS = 1_000_000_000
DEFAULT_MONITOR_S = 5.0  # swarm's own default for UpdateConfig.Monitor
MOVING = ("updating", "rollback_started")
STOPPED = ("paused", "rollback_paused")
# How a task of a build that failed ends: exited non-zero, refused by a node, or (turned
# unhealthy and killed) complete while swarm wanted it running.
FAILED_TASK = ("failed", "rejected", "complete")
# a task whose last report is one of these has not finished: on a node that is down, it
# stays so until the node is back
UNFINISHED_TASK = ("new", "pending", "assigned", "accepted", "preparing", "ready",
                   "starting", "running")


def digest_of(image: str) -> str:
    """``repo[:tag]@sha256:...`` -> ``sha256:...``; "" when the reference has no digest."""
    return image.rsplit("@", 1)[1] if "@" in image else ""


def instance_id(service_id: str, digest: str) -> str:
    return f"{service_id}@{digest}"


def split_instance(instance: str) -> tuple[str, str]:
    service_id, _, digest = instance.partition("@")
    return service_id, digest


def spec_image(spec: Mapping[str, Any] | None) -> str:
    return str(((spec or {}).get("TaskTemplate") or {}).get("ContainerSpec", {}).get("Image")
               or "")


def update_state(service: Mapping[str, Any]) -> str:
    return str((service.get("UpdateStatus") or {}).get("State") or "")


def task_digest(task: Mapping[str, Any]) -> str:
    return digest_of(str(((task.get("Spec") or {}).get("ContainerSpec") or {}).get("Image")
                         or ""))


def wanted_tasks(service: Mapping[str, Any], tasks: Sequence[Mapping[str, Any]]) -> int:
    """Replicas of a replicated service; for a global one, the tasks meant to run."""
    mode = (service.get("Spec") or {}).get("Mode") or {}
    if "Replicated" in mode:
        return int((mode["Replicated"] or {}).get("Replicas") or 0)
    return sum(1 for t in tasks if t.get("DesiredState") == "running")


def failed_tasks(tasks: Sequence[Mapping[str, Any]], digest: str) -> list[Mapping[str, Any]]:
    """Tasks of ``digest`` that failed or were rejected, newest first."""
    found = [t for t in tasks if task_digest(t) == digest
             and (t.get("Status") or {}).get("State") in FAILED_TASK]
    return sorted(found, key=lambda t: str(t.get("UpdatedAt") or ""), reverse=True)


def exit_code(task: Mapping[str, Any] | None) -> int | None:
    if task is None:
        return None
    code = ((task.get("Status") or {}).get("ContainerStatus") or {}).get("ExitCode")
    return int(code) if isinstance(code, int) else None


def classify(service: Mapping[str, Any] | None, tasks: Sequence[Mapping[str, Any]],
             digest: str) -> ContainerState:
    """The state of ``<service>@digest`` (the table in the module docstring)."""
    if service is None:
        return ContainerState("missing", False)
    failed = failed_tasks(tasks, digest)
    upd = update_state(service)
    if digest_of(spec_image(service.get("Spec"))) != digest:
        # swarm's rollback clears PreviousSpec: the digest's tasks say it was rolled out
        rolled_from = any(task_digest(t) == digest for t in tasks)
        if rolled_from and upd.startswith("rollback"):
            return ContainerState("exited", False, exit_code=exit_code(failed[0] if failed
                                                                       else None))
        return ContainerState("missing", False)
    if upd in STOPPED:
        return ContainerState("exited", False, exit_code=exit_code(failed[0] if failed
                                                                   else None))
    running = sum(1 for t in tasks if task_digest(t) == digest
                  and t.get("DesiredState") == "running"
                  and (t.get("Status") or {}).get("State") == "running")
    settled = upd not in MOVING and running >= max(wanted_tasks(service, tasks), 1)
    return ContainerState("running", True, restart_count=len(failed),
                          health=None if settled else "starting")


def settled(st: ContainerState) -> bool:
    """The update (or rollback) of this instance has ended, one way or the other."""
    return not (st.running and st.health == "starting")


def update_body(spec: Mapping[str, Any], image: str, *, order: str = "",
                parallelism: int | None = None, monitor_s: float = 0.0, gate_s: float = 0.0,
                failure_action: str = "rollback") -> dict[str, Any]:
    """The service's own spec with ``image``, and its update config kept except for what
    the agent's settings say: the failure action, the order, the parallelism, the monitor
    window (``monitor_s``; 0 keeps the service's own), never shorter than ``gate_s`` (the
    health gate: swarm ignores a task that fails after its monitor window)."""
    body = copy.deepcopy(dict(spec))
    body.setdefault("TaskTemplate", {}).setdefault("ContainerSpec", {})["Image"] = image
    uc = dict(body.get("UpdateConfig") or {})
    uc["FailureAction"] = failure_action
    if order:
        uc["Order"] = order
    if parallelism is not None:
        uc["Parallelism"] = parallelism
    own = (uc.get("Monitor") or DEFAULT_MONITOR_S * NS) / NS
    uc["Monitor"] = int(max(monitor_s or own, gate_s) * NS)
    body["UpdateConfig"] = uc
    return body


def published_port(service: Mapping[str, Any]) -> int | None:
    """The first tcp port the service publishes (host mode or ingress), if any."""
    ports = ((service.get("Endpoint") or {}).get("Spec") or {}).get("Ports") or []
    for p in ports:
        if p.get("Protocol", "tcp") == "tcp" and p.get("PublishedPort"):
            return int(p["PublishedPort"])
    return None


def task_line(task: Mapping[str, Any]) -> str:
    """One failed task as the history shows it: id, slot, state, error, exit code."""
    status = task.get("Status") or {}
    code = exit_code(task)
    parts = [f"task {str(task.get('ID', ''))[:12]}", f"slot {task.get('Slot', '-')}",
             str(status.get("State", "")), str(status.get("Err") or status.get("Message")
                                                or "")]
    if code is not None:
        parts.append(f"exit code {code}")
    return " ".join(p for p in parts if p)


def rollout_mark(service: Mapping[str, Any] | None,
                 tasks: Sequence[Mapping[str, Any]]) -> tuple[str, ...]:
    """What changes while a rollout moves: the update's state and message, and each task's
    state. Two looks with the same mark: nothing moved in between."""
    upd = (service or {}).get("UpdateStatus") or {}
    states = sorted(f"{t.get('ID')}={(t.get('Status') or {}).get('State')}" for t in tasks)
    return (str(upd.get("State") or ""), str(upd.get("Message") or ""), *states)


def rollout_line(service: Mapping[str, Any] | None,
                 tasks: Sequence[Mapping[str, Any]]) -> str:
    """``swarm updating: 2 running, 1 starting``: a rollout's progress in one line."""
    counts: dict[str, int] = {}
    for t in tasks:
        state = str((t.get("Status") or {}).get("State") or "?")
        counts[state] = counts.get(state, 0) + 1
    tail = ", ".join(f"{n} {state}" for state, n in sorted(counts.items()))
    return f"swarm {update_state(service or {}) or 'idle'}: {tail or 'no tasks'}"


def batch_pause(service: Mapping[str, Any] | None) -> float:
    """Seconds a rollout may show no change between batches: the update's delay and its
    monitor window (swarm's default monitor when the spec names none)."""
    uc = ((service or {}).get("Spec") or {}).get("UpdateConfig") or {}
    return float((uc.get("Delay") or 0) + (uc.get("Monitor") or DEFAULT_MONITOR_S * NS)) / NS


def down_nodes(nodes: Sequence[Mapping[str, Any]]) -> dict[str, str]:
    """``{node id: "hostname (address)"}`` of the swarm's nodes that are not ``ready``."""
    return {str(n.get("ID")): f"{(n.get('Description') or {}).get('Hostname', '?')} "
                              f"({(n.get('Status') or {}).get('Addr', '?')})"
            for n in nodes if (n.get("Status") or {}).get("State") != "ready"}


def stranded(tasks: Sequence[Mapping[str, Any]], down: Mapping[str, str]) -> list[str]:
    """``"<node>: <slot> <state>"`` for each unfinished task on a node that is down."""
    return sorted(f"{down[str(t.get('NodeID'))]}: task {t.get('Slot', '?')} "
                  f"{(t.get('Status') or {}).get('State')}" for t in tasks
                  if str(t.get("NodeID")) in down
                  and (t.get("Status") or {}).get("State") in UNFINISHED_TASK)


def stall_line(service: Mapping[str, Any] | None, stuck: Sequence[str], quiet_s: float) -> str:
    return (f"swarm's update ({update_state(service or {}) or '?'}) made no progress for "
            f"{quiet_s:.0f}s with tasks on a node that is down ({'; '.join(stuck[:5])}): "
            "not the build's fault")
