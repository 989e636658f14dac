"""Ports: the Protocols the agent talks to. Adapters implement them; unit tests use fakes.

Ownership (who implements): RegistryPort -> adapters/registry.py; RuntimePort ->
adapters/docker_runtime.py; HealthPort -> adapters/health.py; StorePort ->
adapters/store.py; EventSink -> adapters/notify.py, metrics, webhooks.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from twilight_agent.core.models import Digest, Release

PARKED_SUFFIX = ".twilight-prev"


# --------------------------------------------------------------------------- registry
class RegistryPort(Protocol):
    """What the agent needs from the registry."""

    def track_digest(self, track: str) -> Digest:
        """One HEAD on ``track`` (full Accept list): the digest it points at now."""
        ...

    def resolve_track(self, track: str, known: Release | None = None) -> Release:
        """Newest build on ``track`` as ``Release(sha-tag, digest, revision, created)``.

        ``known`` is the last result; when the track digest equals ``known.digest`` the
        implementation returns it after that single HEAD.
        """
        ...

    def resolve_tag(self, tag: str) -> Release:
        """A pinned or operator-given tag resolved to its digest (tag gate already passed)."""
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
    """The target container as it was before a deploy: enough to restore or recreate it.

    JSON-serialisable (``to_dict``/``from_dict``) so the journal can hold it.
    """

    container_id: str
    name: str
    image_id: str
    digest: str | None  # repo digest of the running image, when the engine knows it
    tag: str | None
    restart_policy: Mapping[str, Any] = field(default_factory=dict)
    inspect: Mapping[str, Any] = field(default_factory=dict)  # full container inspect
    image_inspect: Mapping[str, Any] = field(default_factory=dict)  # its image's inspect

    @property
    def parked_name(self) -> str:
        return self.name + PARKED_SUFFIX

    def to_dict(self) -> dict[str, Any]:
        return {"container_id": self.container_id, "name": self.name,
                "image_id": self.image_id, "digest": self.digest, "tag": self.tag,
                "restart_policy": dict(self.restart_policy), "inspect": dict(self.inspect),
                "image_inspect": dict(self.image_inspect)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Snapshot:
        return cls(**{k: d[k] for k in ("container_id", "name", "image_id", "digest", "tag",
                                         "restart_policy", "inspect", "image_inspect")})


class RuntimePort(Protocol):
    """What the agent needs from the Docker engine. Errors: errors.RuntimeError_ subclasses."""

    def find_target(self) -> str:
        """Id of the target container (by name, or compose project+service labels).
        Also finds it parked as ``<name>.twilight-prev``? No: raises TargetNotFound."""
        ...

    def find_by_name(self, name: str) -> str | None:
        """Id of the container with exactly this name, or None."""
        ...

    def snapshot(self, container_id: str) -> Snapshot: ...

    def pull(self, repository: str, digest: Digest, auth: Mapping[str, str] | None,
             progress: Callable[[str], None] | None = None) -> str:
        """Pull ``repository@digest``; return the local image id. In-band stream errors raise
        PullFailed. Never touches containers."""
        ...

    def park(self, snap: Snapshot) -> None:
        """Restart policy ``no``, stop (graceful), rename to ``snap.parked_name``."""
        ...

    def create_from(self, snap: Snapshot, image: str) -> str:
        """Create (not start) the new container under ``snap.name`` from the old one's
        config rebuilt for ``image`` (see design.md PREPARE). Returns its id."""
        ...

    def start(self, container_id: str) -> None: ...

    def state(self, container_id: str) -> ContainerState:
        """Current state; ``status == "missing"`` when it no longer exists."""
        ...

    def logs_tail(self, container_id: str, lines: int = 50) -> str: ...

    def remove(self, container_id: str) -> None:
        """Force-remove a container, keeping named and anonymous volumes."""
        ...

    def unpark(self, snap: Snapshot) -> str:
        """Rename the parked container back to ``snap.name``, restore its restart policy,
        start it. Returns its id."""
        ...

    def tag_image(self, image: str, repository: str, tag: str) -> None: ...

    def prune_images(self, repository: str, keep: set[str], older_than_s: float) -> list[str]:
        """Remove images of ``repository`` created before the cutoff, except ids in ``keep``
        and images used by any container. Returns removed ids."""
        ...

    def published_url(self, container_id: str, path: str = "/healthz") -> str | None:
        """``http://127.0.0.1:<first published tcp port><path>``, or None."""
        ...


# --------------------------------------------------------------------------- health
@dataclass(frozen=True)
class HealthVerdict:
    ok: bool
    reason: str  # e.g. "healthy", "exited with code 3", "http 500", "timeout after 60s"
    after_s: float
    detail: Mapping[str, Any] = field(default_factory=dict)


class HealthPort(Protocol):
    def verify(self, container_id: str, url: str | None, *, timeout: float, interval: float,
               soak: float, should_stop: Callable[[], bool] | None = None) -> HealthVerdict:
        """Fail at once on exit/restart/OOM; pass on HTTP 2xx (+ HEALTHCHECK healthy when
        the image has one), then hold ``soak`` seconds with the same checks."""
        ...


# --------------------------------------------------------------------------- store
@dataclass(frozen=True)
class QuarantineEntry:
    digest: str
    tag: str | None
    reason: str
    at: str  # ISO 8601 UTC


class StorePort(Protocol):
    """sqlite3 (WAL) in TWILIGHT_STATE_DIR: phase journal, history, quarantine (store.py)."""

    def quarantined(self) -> list[QuarantineEntry]: ...

    def is_quarantined(self, digest: str) -> bool: ...

    def quarantine(self, digest: str, tag: str | None, reason: str) -> None: ...

    def unquarantine(self, digest_or_tag: str) -> list[QuarantineEntry]: ...


# --------------------------------------------------------------------------- events
class EventSink(Protocol):
    """Receives one structured event per transition and per finished deploy.

    Implementations: the audit log (structlog/journald), metrics file, webhooks. A sink
    must never raise into the agent: failures are its own to log.
    Event names used: ``phase`` (every transition), ``deploy_finished`` (outcome
    ``deployed|rolled_back|halted|failed_pull|...``), ``rollback``, ``halted``,
    ``registry_error``, ``poll`` (after every daemon poll: outcome, ``duration_s`` of the
    registry check, ``totals`` from the state store), ``started`` (``totals``, at start-up).
    """

    def emit(self, event: str, fields: Mapping[str, Any]) -> None: ...
