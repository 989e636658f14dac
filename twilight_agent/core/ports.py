"""Ports: the Protocols the agent talks to. Adapters implement them; unit tests use fakes.

Who implements: RegistryPort -> adapters/registry/client.py; TargetPort -> adapters/
container_target.py (one container, or a compose service group; swarm_target.py: a swarm
service) over adapters/docker/runtime.py, which is also the ImagePort; HealthPort ->
adapters/docker/health.py; StorePort (core/store_port.py) -> adapters/state/store.py; EventSink ->
adapters/notify/sinks.py (the audit log), metrics, webhook. docs/architecture.md says where to add
a target kind, a sink or a registry.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from twilight_agent.core.events import Event
from twilight_agent.core.models import Digest, Release, Tag
from twilight_agent.core.progress import Progress
from twilight_agent.core.store_port import Halt as Halt  # the store's port, re-exported
from twilight_agent.core.store_port import JournalEntry as JournalEntry
from twilight_agent.core.store_port import LastResult as LastResult
from twilight_agent.core.store_port import Meta as Meta
from twilight_agent.core.store_port import QuarantineEntry as QuarantineEntry
from twilight_agent.core.store_port import StorePort as StorePort

PARKED_SUFFIX = ".twilight-prev"
NEXT_SUFFIX = ".twilight-next"  # start-first: the new container until its cutover


# --------------------------------------------------------------------------- registry
class RegistryPort(Protocol):
    """What the agent needs from the registry."""

    def track_digest(self, track: str) -> Digest:
        """One HEAD on ``track`` (full Accept list): the digest it points at now."""
        ...

    def resolve_track(self, track: str, known: Release | None = None,
                      digest: Digest | None = None) -> Release:
        """Newest build on ``track`` as ``Release(sha-tag, digest, revision, created)``, its
        tag a ``Tag``.

        ``known`` is the last result; when the track digest equals ``known.digest`` the
        implementation returns it after that single HEAD. ``digest``: the caller's
        ``track_digest`` answer, so a new build costs one HEAD of the track, not two.
        """
        ...

    def resolve_tag(self, tag: Tag) -> Release:
        """A pinned or operator-given tag (parsed at its edge) resolved to its digest."""
        ...

    def created(self, digest: Digest) -> str | None:
        """The build's ``org.opencontainers.image.created`` label, if it has one."""
        ...


# --------------------------------------------------------------------------- runtime
@dataclass(frozen=True)
class ContainerState:
    """What the engine says about one container right now."""

    status: str  # created | running | restarting | exited | dead | missing
    running: bool
    exit_code: int | None = None
    oom_killed: bool = False
    restart_count: int = 0
    health: str | None = None  # starting | healthy | unhealthy | None (no HEALTHCHECK)
    started_at: str | None = None


@dataclass(frozen=True)
class Snapshot:
    """The target as it was before a deploy: enough to restore it, and small enough for the
    journal (``to_dict``/``from_dict``). The engine's full inspect stays in the adapter.

    One container is one unit. A group (a compose service group, scaled replicas) is a
    snapshot whose ``members`` are its units in swap order; its own fields describe the
    first unit (``digest`` and ``tag`` are what the group runs)."""

    container_id: str
    name: str
    image_id: str
    digest: str | None  # repo digest of the running image, when the engine knows it
    tag: str | None
    restart_policy: Mapping[str, Any] = field(default_factory=dict)
    service: str = ""  # compose service of this unit, when there is one
    members: tuple[Snapshot, ...] = ()

    @property
    def parked_name(self) -> str:
        return self.name + PARKED_SUFFIX

    @property
    def next_name(self) -> str:
        return self.name + NEXT_SUFFIX

    def units(self) -> tuple[Snapshot, ...]:
        """What a deploy swaps one at a time, in order."""
        return self.members or (self,)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"container_id": self.container_id, "name": self.name,
                             "image_id": self.image_id, "digest": self.digest,
                             "tag": self.tag, "restart_policy": dict(self.restart_policy),
                             "service": self.service}
        if self.members:
            d["members"] = [m.to_dict() for m in self.members]
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Snapshot:
        """Also reads journals of older versions (which held the full inspect too)."""
        return cls(container_id=str(d["container_id"]), name=str(d["name"]),
                   image_id=str(d["image_id"]), digest=d.get("digest"), tag=d.get("tag"),
                   restart_policy=d.get("restart_policy") or {},
                   service=str(d.get("service") or ""),
                   members=tuple(cls.from_dict(m) for m in d.get("members") or ()))


class ImagePort(Protocol):
    """Images on the host: the engine-wide part of a deploy, whatever the target kind."""

    def pull(self, repository: str, digest: Digest, auth: Mapping[str, str] | None,
             progress: Callable[[str], None] | None = None,
             moved: Callable[[str], None] | None = None) -> str: ...

    def tag_image(self, image: str, repository: str, tag: str) -> None: ...

    def prune_images(self, repository: str, keep: set[str], older_than_s: float) -> list[str]:
        ...


@dataclass(frozen=True)
class TaskResult:
    """How a one-off task ended: its exit code (None: killed at the timeout) and output."""

    exit_code: int | None
    output: str
    after_s: float

    @property
    def ok(self) -> bool:
        return self.exit_code == 0


class TargetPort(Protocol):
    """One kind of deploy target (container, compose group, swarm service): every step of a
    stop-first swap, its undo and its commit, implemented in full by every kind. The runner
    never asks which kind; it asks for a capability by type (``StartsBeside``, ``RunsTasks``,
    ``RollsOutItself``) where a step needs one. "instance": a new unit."""

    def snapshot(self) -> Snapshot:
        """Find the running target and describe it (raises TargetNotFound)."""
        ...

    def park(self, snap: Snapshot) -> None:
        """Set the old version aside (renamed, never restarted), still running."""
        ...

    def stop_parked(self, snap: Snapshot) -> None:
        """Stop the parked old version: out of service, ready to come back."""
        ...

    def create(self, snap: Snapshot, image: str, beside: bool = False, tag: str = "") -> str:
        """Create (not start) the new version from the old one's config; its id. ``beside``:
        next to the running old one (start-first); ``tag``: the one ``.env`` will name."""
        ...

    def start(self, instance: str) -> None: ...

    def new_instance(self, snap: Snapshot, hint: str | None) -> str | None:
        """The new version under the target's name, if there is one (recovery, undo)."""
        ...

    def serving(self, snap: Snapshot) -> str:
        """The id that serves under the target's name now (after an unpark)."""
        ...

    def state(self, instance: str) -> ContainerState: ...

    def logs_tail(self, instance: str, lines: int) -> str: ...

    def health_url(self, unit: Snapshot, instance: str) -> str | None:
        """The URL the health gate probes for ``instance`` of ``unit`` (None: state checks
        only, plus the image's HEALTHCHECK)."""
        ...

    def remove(self, instance: str, moved: Progress | None = None) -> None:
        """Remove a new version that failed (undo), keeping volumes. ``moved``: as for
        ``settle`` (a swarm rollback)."""
        ...

    def unpark(self, snap: Snapshot, moved: Progress | None = None) -> str:
        """Bring the parked old version back into service; its id."""
        ...

    def remove_parked(self, snap: Snapshot) -> None:
        """Commit: the parked old version is no longer needed (its image is kept)."""
        ...

    def orphan(self) -> str | None:
        """Name of a parked old version that no journal row explains, if any."""
        ...


@runtime_checkable
class StartsBeside(Protocol):
    """Capability: the new version can start next to the running old one (start-first)."""

    def publishes_ports(self, snap: Snapshot) -> bool:
        """Whether any unit publishes a host port (then two cannot run side by side)."""
        ...

    def expose(self, snap: Snapshot, instance: str) -> None:
        """Start-first, gate passed: the new version becomes reachable as the old one is."""
        ...

    def promote(self, snap: Snapshot, instance: str) -> None:
        """Start-first cutover: the new version takes the target's name."""
        ...


@runtime_checkable
class RunsTasks(Protocol):
    """Capability: one-off task containers (``TWILIGHT_PRE_DEPLOY``)."""

    def run_task(self, unit: Snapshot, image: str, argv: tuple[str, ...],
                 timeout: float) -> TaskResult:
        """Run a one-off container of ``image`` with ``unit``'s env, networks and volumes
        (no published ports, no aliases, no restart), wait up to ``timeout``, remove it."""
        ...

    def remove_task(self, unit: Snapshot) -> bool:
        """Remove a one-off task container left behind; True when there was one."""
        ...


@runtime_checkable
class RollsOutItself(Protocol):
    """Capability: the engine replaces the units itself (a swarm update); the gate waits
    for that rollout first."""

    def settle(self, instance: str, should_stop: Callable[[], bool] | None = None,
               moved: Progress | None = None) -> None:
        """Wait until the target's own rollout of ``instance`` ended; ``moved`` is called
        each time the rollout changes (its state, a task's state), with the quiet the
        rollout's own pace allows before its next change."""


# --------------------------------------------------------------------------- health
@dataclass(frozen=True)
class HealthVerdict:
    ok: bool
    reason: str  # e.g. "healthy", "exited with code 3", "http 500", "timeout after 60s"
    after_s: float
    detail: Mapping[str, Any] = field(default_factory=dict)


class HealthPort(Protocol):
    def verify(self, container_id: str, url: str | None, *, timeout: float, interval: float,
               soak: float, should_stop: Callable[[], bool] | None = None,
               watch: Sequence[str] = (), failures: int = 0) -> HealthVerdict:
        """Fail at once on exit/restart/OOM, or on ``failures`` 5xx answers in a row (0:
        never); pass on HTTP 2xx (+ HEALTHCHECK healthy when the image has one), then hold
        ``soak`` seconds with the same checks. The containers in ``watch`` (units swapped
        before) must keep running meanwhile."""
        ...

    def watch_over(self, units: Sequence[tuple[str, str | None]], *, seconds: float,
                   timeout: float, interval: float,
                   should_stop: Callable[[], bool] | None = None) -> HealthVerdict:
        """The watch after commit: every ``(container, url)`` keeps running (no exit,
        restart, OOM, unhealthy) and no URL fails for ``timeout`` seconds, for ``seconds``.
        A failure names the unit (``detail["unit"]``); a stop request ends the watch with
        ``detail["interrupted"]``."""
        ...


# --------------------------------------------------------------------------- events
class EventSink(Protocol):
    """Receives every domain event (``core/events.py``). A sink must never raise into the
    agent: failures are its own to log."""

    def emit(self, event: Event) -> None: ...
