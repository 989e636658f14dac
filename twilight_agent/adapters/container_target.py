"""TargetPort for one container: by name (``TWILIGHT_CONTAINER``) or as the single
container of a compose service (``TWILIGHT_COMPOSE_PROJECT`` + ``TWILIGHT_SERVICE``).

Built on the engine primitives of ``RuntimePort`` (``docker_runtime.py``). The old
container is parked as ``<name>.twilight-prev`` (restart policy ``no``, stopped), the new one
is created under the original name; the parked one comes back on an undo, or is removed
on commit. A compose service group or a Swarm service is another TargetPort beside this.
"""

from __future__ import annotations

from twilight_agent.core.ports import PARKED_SUFFIX, ContainerState, RuntimePort, Snapshot


class ContainerTarget:
    """The deploy target as one container on the engine."""

    def __init__(self, runtime: RuntimePort, *, name: str = "", health_url: str = "") -> None:
        self.runtime = runtime
        self._name = name  # the configured container name, when the target is named
        self._health_url = health_url

    def snapshot(self) -> Snapshot:
        return self.runtime.snapshot(self.runtime.find_target())

    def park(self, snap: Snapshot) -> None:
        self.runtime.park(snap)

    def create(self, snap: Snapshot, image: str) -> str:
        return self.runtime.create_from(snap, image)

    def start(self, instance: str) -> None:
        self.runtime.start(instance)

    def new_instance(self, snap: Snapshot, hint: str | None) -> str | None:
        """The container under the original name that is not the old one; else ``hint``
        (the id the run created) while it still exists."""
        cid = self.runtime.find_by_name(snap.name)
        if cid is not None and cid != snap.container_id:
            return cid
        if hint and self.runtime.state(hint).status != "missing":
            return hint
        return None

    def serving(self, snap: Snapshot) -> str:
        return self.runtime.find_by_name(snap.name) or snap.container_id

    def state(self, instance: str) -> ContainerState:
        return self.runtime.state(instance)

    def logs_tail(self, instance: str, lines: int) -> str:
        return self.runtime.logs_tail(instance, lines)

    def health_url(self, instance: str) -> str | None:
        return self._health_url or self.runtime.published_url(instance)

    def remove(self, instance: str) -> None:
        self.runtime.remove(instance)

    def unpark(self, snap: Snapshot) -> str:
        return self.runtime.unpark(snap)

    def remove_parked(self, snap: Snapshot) -> None:
        cid = self.runtime.find_by_name(snap.parked_name)
        if cid is not None:
            self.runtime.remove(cid)

    def orphan(self) -> str | None:
        if not self._name:
            return None
        parked = self._name + PARKED_SUFFIX
        return parked if self.runtime.find_by_name(parked) is not None else None
