"""Domain events: what happened, as types. Sinks (the audit log, the metrics file, the
webhook) turn them into journal fields, Prometheus samples or JSON at their own edge.

Each event has a ``name`` (``TWILIGHT_EVENT`` in the journal) and ``fields()``, the flat
mapping the audit log writes. Nothing here knows how an event is delivered.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from twilight_agent.core.models import Release
from twilight_agent.core.outcomes import Outcome, release_dict


def _label(r: Release | None) -> str | None:
    return r.label if r else None


@dataclass(frozen=True)
class Totals:
    """What the state store says: finished deploys by outcome, the last success, what
    serves now, whether the agent is halted, the phase of an unfinished deploy (its
    journal) and the build held back (the meta ``hold``, ``Trust.tell``'s)."""

    deploys: dict[str, int] = field(default_factory=dict)
    last_success: str | None = None  # ISO 8601 UTC
    current: Release | None = None
    halted: bool = False
    phase: str = "IDLE"  # the journal's phase, else HALTED or IDLE
    phase_since: str | None = None  # ISO 8601 UTC: the journal's last row
    hold: str | None = None  # HELD_DOWNGRADE | HELD_SIGNATURE, None: nothing held
    hold_since: str | None = None  # ISO 8601 UTC: when the hold was first told

    def as_dict(self) -> dict[str, object]:
        return {"deploys": dict(self.deploys), "last_success": self.last_success,
                "current": release_dict(self.current), "halted": self.halted,
                "phase": self.phase, "phase_since": self.phase_since,
                "hold": self.hold, "hold_since": self.hold_since}


@dataclass(frozen=True)
class DeployRef:
    """Which deploy an event is about: its id, what it replaces and what it brings."""

    deploy_id: str
    from_: Release | None
    to: Release | None
    trigger: str

    def fields(self) -> dict[str, object]:
        return {"deploy_id": self.deploy_id, "from": _label(self.from_),
                "to": _label(self.to), "digest": str(self.to.digest) if self.to else None,
                "trigger": self.trigger}


@dataclass(frozen=True)
class PhaseChanged:
    """The deploy machine entered ``phase`` (one per transition)."""

    name: ClassVar[str] = "phase"
    ref: DeployRef
    phase: str
    previous_phase: str
    cause: str
    duration_s: float
    outcome: Outcome | None = None

    def fields(self) -> dict[str, object]:
        return {**self.ref.fields(), "outcome": self.outcome, "phase": self.phase,
                "previous_phase": self.previous_phase, "cause": self.cause,
                "duration_s": self.duration_s}


@dataclass(frozen=True)
class DeployFinished:
    """A deploy ended and its history row is written: the canonical summary line."""

    name: ClassVar[str] = "deploy_finished"
    ref: DeployRef
    outcome: Outcome
    phase: str
    reason: str
    duration_s: float
    log_tail: str = ""

    def fields(self) -> dict[str, object]:
        f, t = self.ref.from_, self.ref.to
        # ``from``/``to`` are the tags here (TWILIGHT_TO=sha-xxxxxxx in the journal).
        return {**self.ref.fields(), "from": f.tag if f else None, "to": t.tag if t else None,
                "outcome": self.outcome, "phase": self.phase,
                "from_tag": f.tag if f else None, "from_digest": str(f.digest) if f else None,
                "to_tag": t.tag if t else None, "to_digest": str(t.digest) if t else None,
                "revision": t.revision if t else None, "reason": self.reason,
                "duration_s": self.duration_s}


@dataclass(frozen=True)
class Quarantined:
    """A digest failed and will not be deployed automatically again."""

    name: ClassVar[str] = "quarantined"
    ref: DeployRef
    reason: str

    def fields(self) -> dict[str, object]:
        return {**self.ref.fields(), "reason": self.reason}


@dataclass(frozen=True)
class HaltedAlert:
    """The rollback failed too: everything is kept, an operator is needed."""

    name: ClassVar[str] = "halted"
    ref: DeployRef
    reason: str

    def fields(self) -> dict[str, object]:
        return {**self.ref.fields(), "reason": self.reason, "phase": "HALTED"}


@dataclass(frozen=True)
class TaskFinished:
    """The pre-deploy task ended: its exit code (None: killed at the timeout) and output."""

    name: ClassVar[str] = "pre_deploy_finished"
    ref: DeployRef
    exit_code: int | None
    output: str

    def fields(self) -> dict[str, object]:
        return {**self.ref.fields(), "phase": "PRE_DEPLOY", "exit_code": self.exit_code,
                "output": self.output}


@dataclass(frozen=True)
class Recovering:
    """Start-up found an interrupted deploy in the journal and finishes or undoes it."""

    name: ClassVar[str] = "recovering"
    deploy_id: str
    phase: str
    step: str

    def fields(self) -> dict[str, object]:
        return {"deploy_id": self.deploy_id, "phase": self.phase, "step": self.step}


@dataclass(frozen=True)
class Polled:
    """One daemon poll ended. Not logged (one line per poll would flood the journal)."""

    name: ClassVar[str] = "poll"
    outcome: Outcome
    totals: Totals
    duration_s: float | None = None  # the registry part; None when it was not reached

    def fields(self) -> dict[str, object]:
        return {"outcome": self.outcome, "duration_s": self.duration_s,
                "totals": self.totals.as_dict()}


@dataclass(frozen=True)
class RegistryFailed:
    """A poll could not get an answer from the registry."""

    name: ClassVar[str] = "registry_error"
    error: str

    def fields(self) -> dict[str, object]:
        return {"error": self.error}


@dataclass(frozen=True)
class Started:
    """The daemon or a CLI deploy starts: sinks learn where things stand."""

    name: ClassVar[str] = "started"
    totals: Totals

    def fields(self) -> dict[str, object]:
        return {"totals": self.totals.as_dict()}


@dataclass(frozen=True)
class Promoted:
    """A promotion ended: the promote tag now points at ``digest`` (``step`` promoted), or
    the build was not promoted (``step`` dropped, ``reason`` says why)."""

    name: ClassVar[str] = "promotion"
    promotion_id: str
    to_tag: str
    build: Release
    step: str
    previous: str | None  # the digest the promote tag pointed at before
    trigger: str
    reason: str = ""

    def fields(self) -> dict[str, object]:
        return {"deploy_id": self.promotion_id, "phase": "PROMOTE", "outcome": self.step,
                "to": self.build.label, "digest": str(self.build.digest),
                "tag": self.to_tag, "previous_digest": self.previous,
                "trigger": self.trigger, "reason": self.reason}


HELD_DOWNGRADE, HELD_SIGNATURE = "downgrade", "signature"


@dataclass(frozen=True)
class Held:
    """The track's build is held back, nothing touched: it is older than what runs
    (``downgrade``), or it has no signature yet (``signature``). Once per build."""

    name: ClassVar[str] = "held"
    build: Release
    running: Release | None
    kind: str  # HELD_DOWNGRADE | HELD_SIGNATURE
    reason: str

    def fields(self) -> dict[str, object]:
        return {"kind": self.kind, "to": self.build.label, "digest": str(self.build.digest),
                "from": _label(self.running), "reason": self.reason}


Event = (PhaseChanged | DeployFinished | Quarantined | HaltedAlert | TaskFinished
         | Recovering | Polled | RegistryFailed | Started | Promoted | Held)
# Events the audit log writes; the others only reach the sinks (counted, not logged).
LOGGED: tuple[type, ...] = (PhaseChanged, DeployFinished, Quarantined, HaltedAlert,
                            TaskFinished, Recovering, RegistryFailed, Promoted, Held)
