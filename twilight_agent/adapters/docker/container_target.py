"""TargetPort for containers: one by name (``TWILIGHT_CONTAINER``) or the single container
of a compose service (``ContainerTarget``), or a compose service group with its replicas
(``ComposeGroupTarget``, ``TWILIGHT_SERVICES``).

Built on the engine primitives of ``DockerRuntime``. The old container of a unit is parked
as ``<name>.twilight-prev`` (restart policy ``no``, then stopped), the new one is created
under the original name with the compose labels, so ``docker compose ps`` lists it as the
service; the parked one comes back on an undo, or is removed after the watch. Start-first,
the new one runs as ``<name>.twilight-next`` beside the old one until its gate passed,
then takes the name.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

from twilight_agent.adapters.docker import compose_labels
from twilight_agent.adapters.docker import task as docker_task
from twilight_agent.adapters.docker.refs import repository_of
from twilight_agent.adapters.docker.runtime import (
    COMPOSE_PROJECT,
    COMPOSE_SERVICE,
    DockerRuntime,
    Listed,
)
from twilight_agent.core.ports import (
    NEXT_SUFFIX,
    PARKED_SUFFIX,
    ContainerState,
    Snapshot,
    TaskResult,
)
from twilight_agent.core.progress import Progress
from twilight_agent.errors import TargetNotFound

COMPOSE_NUMBER = "com.docker.compose.container-number"
COMPOSE_ONEOFF = "com.docker.compose.oneoff"


class ContainerTarget:
    """The deploy target as one container on the engine."""

    def __init__(self, runtime: DockerRuntime, *, name: str = "", health_url: str = "",
                 env_file: Path | None = None, docker_host: str = "") -> None:
        self.runtime = runtime
        self._name = name  # the configured container name, when the target is named
        self._health_url = health_url
        self._env_file, self._docker_host = env_file, docker_host  # for the compose labels

    def snapshot(self) -> Snapshot:
        return self.runtime.snapshot(self.runtime.find_target())

    def park(self, snap: Snapshot) -> None:
        self.runtime.park(snap)

    def stop_parked(self, snap: Snapshot) -> None:
        cid = self.runtime.find_by_name(snap.parked_name) or snap.container_id
        self.runtime.stop(cid)

    def publishes_ports(self, snap: Snapshot) -> bool:
        return any(self.runtime.publishes_ports(u.container_id) for u in snap.units())

    def create(self, snap: Snapshot, image: str, beside: bool = False, tag: str = "") -> str:
        """Beside the old one: no network aliases yet, so a proxy that resolves them never
        sends a request to a build that has not passed its gate. A compose service's new
        container gets the labels compose would give it once ``.env`` names ``tag`` and
        the digest of ``image`` (``compose_labels.py``)."""
        _, _, digest = image.partition("@")
        relabel = compose_labels.relabeller(self._env_file, tag, digest, self._docker_host) \
            if tag and digest and self._env_file is not None else None
        if beside:
            return self.runtime.create_from(snap, image, snap.next_name, hidden=True,
                                            relabel=relabel)
        return self.runtime.create_from(snap, image, snap.name, relabel=relabel)

    def expose(self, snap: Snapshot, instance: str) -> None:
        """The gate passed: the old one's aliases, so the proxy sends it requests too."""
        self.runtime.expose(instance, snap)

    def promote(self, snap: Snapshot, instance: str) -> None:
        self.runtime.rename(instance, snap.name)

    def start(self, instance: str) -> None:
        self.runtime.start(instance)

    def new_instance(self, snap: Snapshot, hint: str | None) -> str | None:
        """The container under the original name that is not the old one, or the one
        beside it (start-first); else ``hint`` (the id the run created) while it exists."""
        cid = self.runtime.find_by_name(snap.name)
        if cid is not None and cid != snap.container_id:
            return cid
        beside = self.runtime.find_by_name(snap.next_name)
        if beside is not None:
            return beside
        if hint and self.runtime.state(hint).status != "missing":
            return hint
        return None

    def serving(self, snap: Snapshot) -> str:
        return self.runtime.find_by_name(snap.name) or snap.container_id

    def state(self, instance: str) -> ContainerState:
        return self.runtime.state(instance)

    def logs_tail(self, instance: str, lines: int) -> str:
        return self.runtime.logs_tail(instance, lines)

    def health_url(self, unit: Snapshot, instance: str) -> str | None:
        return self._configured_url(instance) or self.runtime.published_url(instance)

    def _configured_url(self, instance: str) -> str | None:
        """``TWILIGHT_HEALTH_URL``, with ``{address}`` as the instance's own IP address."""
        if "{address}" not in self._health_url:
            return self._health_url or None
        return self._health_url.replace("{address}", self.runtime.address(instance))

    def remove(self, instance: str, moved: Progress | None = None) -> None:
        self.runtime.remove(instance)

    def unpark(self, snap: Snapshot, moved: Progress | None = None) -> str:
        return self.runtime.unpark(snap)

    def remove_parked(self, snap: Snapshot) -> None:
        for unit in snap.units():
            cid = self.runtime.find_by_name(unit.parked_name)
            if cid is not None:
                self.runtime.remove(cid)

    def run_task(self, unit: Snapshot, image: str, argv: tuple[str, ...],
                 timeout: float) -> TaskResult:
        return self.runtime.run_task(unit, image, argv, timeout)

    def remove_task(self, unit: Snapshot) -> bool:
        return self.runtime.remove_task(unit)

    def orphan(self) -> str | None:
        if not self._name:
            return None
        parked = self._name + PARKED_SUFFIX
        return parked if self.runtime.find_by_name(parked) is not None else None


class ComposeGroupTarget(ContainerTarget):
    """Every container of the listed services of one compose project (or, with no list,
    of every service running ``image``), replicas included: one unit each, in the order
    the services are listed, replicas by their number. The health URL belongs to the
    first listed service; the others are gated on their state and HEALTHCHECK."""

    def __init__(self, runtime: DockerRuntime, *, project: str, services: Sequence[str],
                 image: str, health_url: str = "", env_file: Path | None = None,
                 docker_host: str = "") -> None:
        super().__init__(runtime, health_url=health_url, env_file=env_file,
                         docker_host=docker_host)
        self.project, self.services, self.image = project, tuple(services), image
        self._order = self.services  # the services found, in swap order

    def snapshot(self) -> Snapshot:
        units = tuple(self.runtime.snapshot(c.id) for c in self._members())
        return dataclasses.replace(units[0], members=units)

    def _members(self) -> list[Listed]:
        found = self.runtime.find_by_labels({COMPOSE_PROJECT: self.project})
        live = [c for c in found if not c.name.endswith((PARKED_SUFFIX, NEXT_SUFFIX,
                                                         docker_task.TASK_SUFFIX))
                and c.labels.get(COMPOSE_ONEOFF, "False") != "True"]
        order = self.services or tuple(sorted({
            c.labels.get(COMPOSE_SERVICE, "") for c in live
            if repository_of(c.image) == self.image} - {""}))
        members = sorted((c for c in live if c.labels.get(COMPOSE_SERVICE) in order),
                         key=lambda c: (order.index(c.labels[COMPOSE_SERVICE]),
                                        int(c.labels.get(COMPOSE_NUMBER) or 0), c.name))
        missing = [s for s in order if s not in {c.labels.get(COMPOSE_SERVICE) for c in members}]
        if not members or missing:
            what = ", ".join(missing) if missing else f"running {self.image}"
            raise TargetNotFound(f"compose project {self.project}: no container for {what}")
        self._order = order
        return members

    def health_url(self, unit: Snapshot, instance: str) -> str | None:
        """The health URL probes the first service's units; the others are probed on a
        port they publish, if any, else judged on their state and HEALTHCHECK."""
        if self._health_url and self._order and unit.service == self._order[0]:
            return self._configured_url(instance)
        return self.runtime.published_url(instance)

    def orphan(self) -> str | None:
        parked = [c.name for c in self.runtime.find_by_labels({COMPOSE_PROJECT: self.project})
                  if c.name.endswith(PARKED_SUFFIX)]
        return ", ".join(sorted(parked)) or None
