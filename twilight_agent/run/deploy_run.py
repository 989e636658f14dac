"""One deploy run's data (``DeployRun``), what it is given (``DeployContext``), and the
small services every step uses (``Step``). A run never calls back into the Agent: all it
needs is in its context, and it reports by what it leaves in ``DeployRun``.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

from twilight_agent.core.clock import Clock, stamp, utcnow
from twilight_agent.core.events import DeployRef, Event
from twilight_agent.core.models import Digest, ImageRef, Release
from twilight_agent.core.outcomes import Outcome, release_dict
from twilight_agent.core.ports import HealthPort, ImagePort, Snapshot, StorePort, TargetPort
from twilight_agent.core.progress import Progress, no_progress
from twilight_agent.core.tunables import Tunables
from twilight_agent.core.windows import Window
from twilight_agent.errors import DockerUnavailable, TwilightError
from twilight_agent.logs import get_logger

log = get_logger("twilight.deploy")
T = TypeVar("T")


class EventBus(Protocol):
    """Where a run's events go (``adapters/notify/sinks.py``: the audit log and every sink)."""

    def emit(self, event: Event) -> None: ...


@dataclass(frozen=True)
class RunConfig:
    """The settings a run needs, and nothing else."""

    image_ref: ImageRef
    env_file: Path | None
    tag_pattern: str
    health_timeout: float
    health_interval: float
    health_soak: float
    prune_after: float
    pre_deploy: tuple[str, ...] = ()  # argv of the one-off task before the swap; () = none
    pre_deploy_timeout: float = 600.0
    watch: float = 0.0  # seconds the committed version is watched; 0 = no watch
    health_failures: int = 0  # 5xx answers in a row that fail the gate at once; 0 = never
    swap: str = "auto"  # auto | start-first | stop-first (TWILIGHT_SWAP)
    drain: float = 0.0  # start-first: seconds between the new unit's gate and the old's stop


@dataclass(frozen=True)
class AgentConfig:
    """What the Agent needs of the settings, and nothing else (built by ``app.py``)."""

    run: RunConfig
    track: str = "main"
    pin: str = ""  # the tag the daemon follows instead of the track; "" = the track
    windows: tuple[Window, ...] = ()  # the deploy windows; () = anytime
    min_age: float = 0.0  # how long a new track build waits (TWILIGHT_MIN_AGE)
    verify_grace: float = 900.0  # how long a build may wait for its signature
    allow_downgrade: bool = False


@dataclass(frozen=True)
class DeployContext:
    """Everything a run uses: ports, store, events, clock, stop flag, its settings."""

    target: TargetPort
    images: ImagePort
    health: HealthPort
    store: StorePort
    events: EventBus
    clock: Clock
    tunables: Tunables
    config: RunConfig
    should_stop: Callable[[], bool]
    pull_auth: Callable[[], Mapping[str, str] | None]
    pull_progress: Callable[[str], None] | None = None
    notice: Callable[[str], None] | None = None  # a line for an operator at a terminal
    watcher: str = "cli"  # who runs this agent's watches: "cli" or "daemon" (for status)
    hand_off_watch: bool = False  # deploy --detach: the watch is left to the daemon
    progress: Progress = no_progress  # the work moved (core/progress.py: the watchdog's)


def new_deploy_id() -> str:
    return stamp() + "-" + secrets.token_hex(3)


@dataclass
class DeployRun:
    """Everything one deploy knows; its ``payload()`` is what the journal holds."""

    deploy_id: str
    trigger: str
    started: str = field(default_factory=utcnow)
    to: Release | None = None
    snapshot: Snapshot | None = None
    image_id: str | None = None
    new_ids: dict[int, str] = field(default_factory=dict)  # unit -> its new container
    reason: str = ""
    log_tail: str = ""
    timings: dict[str, float] = field(default_factory=dict)
    phase: str = "IDLE"  # furthest phase reached
    outcome: Outcome | None = None
    error: TwilightError | None = None
    warnings: list[str] = field(default_factory=list)
    note: str = ""  # prefix of the history reason, e.g. "recovered at start-up"
    watch_until: float | None = None  # wall-clock end of the watch (epoch s), once begun
    start_first: bool = False  # each new unit starts beside the old one (decided at PREPARE)
    verified: bool | None = None  # its signature verified; None: verification is off
    watcher: str = ""  # who watches it now ("cli", "daemon"), once the watch began
    # .env's IMAGE_TAG / IMAGE_DIGEST values before the commit wrote them (None: no line)
    env_before: dict[str, str | None] | None = None

    @property
    def from_(self) -> Release | None:
        s = self.snapshot
        if s is None or not s.digest:
            return None
        return _release(s.tag or "", s.digest)

    def units(self) -> tuple[Snapshot, ...]:
        return self.snapshot.units() if self.snapshot else ()

    def ref(self) -> DeployRef:
        return DeployRef(self.deploy_id, self.from_, self.to, self.trigger)

    def payload(self, step: str, unit: int = 0) -> dict[str, Any]:
        return {"step": step, "unit": unit, "trigger": self.trigger, "started": self.started,
                "to": release_dict(self.to), "image_id": self.image_id,
                "new_ids": {str(u): c for u, c in self.new_ids.items()},
                "reason": self.reason, "timings": self.timings,
                "watch_until": self.watch_until, "start_first": self.start_first,
                "verified": self.verified, "watcher": self.watcher,
                "env_before": self.env_before,
                "snapshot": self.snapshot.to_dict() if self.snapshot else None}

    @classmethod
    def from_journal(cls, deploy_id: str, phase: str, p: Mapping[str, Any]) -> DeployRun:
        snap = Snapshot.from_dict(p["snapshot"]) if p.get("snapshot") else None
        to = p.get("to") or {}
        return cls(deploy_id=deploy_id, trigger=p.get("trigger") or "",
                   started=p.get("started") or utcnow(),
                   to=_release(to.get("tag") or "", to["digest"]) if to.get("digest") else None,
                   snapshot=snap, image_id=p.get("image_id"), new_ids=_new_ids(p),
                   reason=p.get("reason") or "", timings=dict(p.get("timings") or {}),
                   phase=phase, watch_until=_float(p.get("watch_until")),
                   start_first=p.get("start_first") is True,
                   verified=p.get("verified") if isinstance(p.get("verified"), bool) else None,
                   watcher=str(p.get("watcher") or ""), env_before=_env_before(p))


def _new_ids(p: Mapping[str, Any]) -> dict[int, str]:
    """``new_ids`` of the payload; journals of older versions had one ``new_cid``."""
    if p.get("new_cid"):
        return {0: str(p["new_cid"])}
    return {int(u): str(c) for u, c in dict(p.get("new_ids") or {}).items() if c}


def _env_before(p: Mapping[str, Any]) -> dict[str, str | None] | None:
    got = p.get("env_before")
    if not isinstance(got, dict):
        return None
    return {k: v if isinstance(v, str) else None for k, v in got.items()
            if k in ("tag", "digest")}


def _float(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) else None


def _release(tag: str, digest: str) -> Release | None:
    try:
        return Release(tag, Digest(digest))
    except ValueError:
        return None


@dataclass
class Step:
    """What a step handler gets: the context and the run, plus two shared habits."""

    ctx: DeployContext
    run: DeployRun

    @property
    def snap(self) -> Snapshot:
        assert self.run.snapshot is not None, "snapshot is taken before any swap step"
        return self.run.snapshot

    def unit(self, index: int) -> Snapshot:
        return self.snap.units()[index]

    def engine(self, step: str, call: Callable[[], T]) -> T:
        """An engine call of a step that must not be left half-done (commit, undo). While
        the engine does not answer (dockerd restarting), wait for it up to
        ``tunables.engine_wait_s``; if it stays away, ``DockerUnavailable`` leaves the run
        with its journal open, and start-up recovery finishes the step: never a HALT."""
        t = self.ctx.tunables
        deadline = self.ctx.clock.now() + t.engine_wait_s
        waited = False
        while True:
            try:
                return call()
            except DockerUnavailable as exc:
                if self.ctx.clock.now() >= deadline:
                    raise
                if not waited:
                    log.warning("engine_unavailable", deploy_id=self.run.deploy_id, step=step,
                                error=str(exc), waiting_s=t.engine_wait_s)
                    waited = True
                self.ctx.clock.sleep(t.engine_retry_s)

    def ticking(self, what: str) -> Callable[[], bool]:
        """``should_stop`` for a loop bounded by its own clock (the health gate, the watch):
        each look it takes is progress, reported as ``what``."""
        c = self.ctx

        def should_stop() -> bool:
            c.progress(what)
            return c.should_stop()
        return should_stop

    def warn(self, step: str, exc: Exception) -> None:
        self.run.warnings.append(f"{step}: {exc}")
        log.warning("commit_step_failed", deploy_id=self.run.deploy_id, step=step,
                    error=str(exc))
