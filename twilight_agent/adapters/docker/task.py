"""The one-off pre-deploy task (a migration) as a container of the new image.

Built from the first unit's create plan, like the new container itself, then made a
task: the argv replaces the image's command (its entrypoint stays, as with ``docker
compose run``), no published ports, no restart policy, no network aliases (a proxy that
resolves the service's alias must never route to it), no compose labels (``docker
compose ps`` never lists it as the service). Its name is ``<unit>.twilight-pre-deploy``,
so start-up recovery finds and removes one an interrupted run left behind.
"""

from __future__ import annotations

import contextlib
import copy
from typing import Any, Protocol

import docker
import docker.errors

from twilight_agent.adapters.docker.create_config import COMPOSE_LABEL_PREFIX, CreatePlan
from twilight_agent.adapters.docker.errors import UNREACHABLE, engine_errors
from twilight_agent.core.clock import Clock
from twilight_agent.core.ports import Snapshot, TaskResult

TASK_SUFFIX = ".twilight-pre-deploy"
TASK_LABEL = "io.twilight-agent.task"
OUTPUT_LINES = 200


class Engine(Protocol):
    """What the task needs of ``DockerRuntime`` (which calls in here)."""

    @property
    def api(self) -> docker.APIClient: ...

    def create_plan(self, snap: Snapshot, image: str) -> CreatePlan: ...

    def create_planned(self, plan: CreatePlan) -> str: ...

    def logs_tail(self, container_id: str, lines: int = 50) -> str: ...

    def remove(self, container_id: str) -> None: ...

    def find_by_name(self, name: str) -> str | None: ...


def task_plan(plan: CreatePlan, argv: tuple[str, ...]) -> CreatePlan:
    """``plan`` turned into the one-off task's create request."""
    body: dict[str, Any] = copy.deepcopy(plan.body)
    body["Cmd"] = list(argv)
    body.pop("Healthcheck", None)
    body.pop("ExposedPorts", None)
    labels = {k: v for k, v in (body.get("Labels") or {}).items()
              if not k.startswith(COMPOSE_LABEL_PREFIX)}
    body["Labels"] = {**labels, TASK_LABEL: "pre-deploy"}
    host = body.setdefault("HostConfig", {})
    host.update(PortBindings={}, PublishAllPorts=False, RestartPolicy={"Name": "no"},
                AutoRemove=False)
    endpoints = (body.get("NetworkingConfig") or {}).get("EndpointsConfig") or {}
    for endpoint in endpoints.values():
        endpoint.pop("Aliases", None)
    after = [(net, {k: v for k, v in ep.items() if k != "Aliases"})
             for net, ep in plan.connect_after]
    return CreatePlan(name=plan.name + TASK_SUFFIX, body=body, connect_after=after)


def run_task(rt: Engine, unit: Snapshot, image: str, argv: tuple[str, ...],
             timeout: float, clock: Clock) -> TaskResult:
    """Create, start and wait for the task; always remove it. Exit code None: killed at
    ``timeout``."""
    remove_task(rt, unit)  # one an interrupted run left behind
    t0 = clock.now()
    cid = rt.create_planned(task_plan(rt.create_plan(unit, image), argv))
    try:
        with engine_errors(f"starting the pre-deploy task {unit.name}{TASK_SUFFIX}"):
            rt.api.start(cid)
        code = _wait(rt, cid, timeout)
        output = rt.logs_tail(cid, OUTPUT_LINES)
    finally:
        rt.remove(cid)
    return TaskResult(code, output, clock.now() - t0)


def _wait(rt: Engine, cid: str, timeout: float) -> int | None:
    try:
        result = rt.api.wait(cid, timeout=max(timeout, 1.0))
    except UNREACHABLE:  # the read timed out: the task is still running
        with engine_errors("killing the pre-deploy task"), \
                contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):
            rt.api.kill(cid)
        return None
    return int(result.get("StatusCode", -1))


def remove_task(rt: Engine, unit: Snapshot) -> bool:
    """Remove a task container of ``unit`` if one is there; True when there was one."""
    cid = rt.find_by_name(unit.name + TASK_SUFFIX)
    if cid is None:
        return False
    rt.remove(cid)
    return True
