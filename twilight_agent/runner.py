"""Runs one deploy: feeds events to the pure machine and performs its commands via the ports.

Every command with a side effect is journaled first (phase, step, the run's payload with
the old container's snapshot), so a restart can finish or undo it (``recovery.py``). One
``phase`` event per transition goes to every sink and to the log.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from twilight_agent.adapters.envfile import write_image_tag
from twilight_agent.adapters.store import utcnow
from twilight_agent.core import machine as m
from twilight_agent.core.models import Digest, Release
from twilight_agent.core.policy import quarantine_reason
from twilight_agent.core.ports import Snapshot
from twilight_agent.errors import DockerUnavailable, TwilightError
from twilight_agent.logs import get_logger

if TYPE_CHECKING:
    from twilight_agent.agent import Agent

log = get_logger("twilight.deploy")
State = m.State
UNJOURNALED = (m.Resolve, m.Record, m.Alert)
LOG_LINES = 50
ENGINE_WAIT_S = 60.0  # how long an undo or commit step waits for an engine that went away
ENGINE_RETRY_S = 1.0
sleep = time.sleep  # module level, so tests can make the wait instant
T = TypeVar("T")


# Start failures the host causes, not the build: quarantining a good build for them would
# keep it out until an operator runs `unquarantine`.
HOST_CAUSES = ("port is already allocated", "address already in use",
               "no space left on device")


def host_caused(exc: TwilightError) -> bool:
    """True when starting failed because of the host (engine down, port taken, disk full)."""
    text = str(exc).lower()
    return isinstance(exc, DockerUnavailable) or any(c in text for c in HOST_CAUSES)


def new_deploy_id() -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + secrets.token_hex(3)


def release_dict(r: Release | None) -> dict[str, Any] | None:
    return None if r is None else {"tag": r.tag, "digest": str(r.digest)}


def release_from(d: Mapping[str, Any] | None) -> Release | None:
    if not d or not d.get("digest"):
        return None
    return Release(tag=str(d.get("tag") or ""), digest=Digest(str(d["digest"])))


@dataclass
class DeployRun:
    """Everything one deploy knows; its ``payload()`` is what the journal holds."""

    deploy_id: str
    trigger: str
    started: str = field(default_factory=utcnow)
    to: Release | None = None
    snapshot: Snapshot | None = None
    image_id: str | None = None
    new_cid: str | None = None
    reason: str = ""
    log_tail: str = ""
    timings: dict[str, float] = field(default_factory=dict)
    phase: str = "IDLE"  # furthest phase reached
    outcome: str | None = None
    error: TwilightError | None = None
    warnings: list[str] = field(default_factory=list)
    note: str = ""  # prefix of the history reason, e.g. "recovered at start-up"

    @property
    def from_(self) -> Release | None:
        s = self.snapshot
        return None if s is None or not s.digest else Release(s.tag or "", Digest(s.digest))

    def payload(self, step: str) -> dict[str, Any]:
        return {"step": step, "trigger": self.trigger, "started": self.started,
                "to": release_dict(self.to), "image_id": self.image_id,
                "new_cid": self.new_cid, "reason": self.reason, "timings": self.timings,
                "snapshot": self.snapshot.to_dict() if self.snapshot else None}

    @classmethod
    def from_journal(cls, entry: Mapping[str, Any]) -> DeployRun:
        p = entry["payload"]
        snap = Snapshot.from_dict(p["snapshot"]) if p.get("snapshot") else None
        return cls(deploy_id=entry["deploy_id"], trigger=p.get("trigger") or "",
                   started=p.get("started") or utcnow(), to=release_from(p.get("to")),
                   snapshot=snap, image_id=p.get("image_id"), new_cid=p.get("new_cid"),
                   reason=p.get("reason") or "", timings=dict(p.get("timings") or {}),
                   phase=entry["phase"])


class Runner:
    """Interprets the machine's commands for one ``DeployRun``."""

    def __init__(self, agent: Agent, run: DeployRun,
                 resolve: Callable[[DeployRun], m.Event] | None = None) -> None:
        self.a = agent
        self.run = run
        self._resolve = resolve
        self._entered = agent.clock()

    # -- the loop ---------------------------------------------------------------------
    def start(self, state: State) -> State:
        return self.feed(state, m.Begin())

    def feed(self, state: State, event: m.Event) -> State:
        """Apply ``event`` in ``state`` and run until the machine rests."""
        new, commands = m.transition(state, event)
        self._entered_state(state, new, event)
        return self.resume(new, commands)

    def resume(self, state: State, commands: list[m.Command]) -> State:
        """Run ``commands`` in ``state`` and follow the events they produce."""
        while True:
            event = self._execute(state, commands)
            if event is None:
                return state
            new, commands = m.transition(state, event)
            self._entered_state(state, new, event)
            state = new

    def _execute(self, state: State, commands: list[m.Command]) -> m.Event | None:
        for cmd in commands:
            if not isinstance(cmd, UNJOURNALED):
                self.a.store.journal(self.run.deploy_id, state.value, type(cmd).__name__,
                                     self.run.payload(type(cmd).__name__))
            handler = getattr(self, "_do_" + type(cmd).__name__)
            event: m.Event | None = handler(cmd)
            if event is not None:
                return event
        return None

    def _entered_state(self, old: State, new: State, event: m.Event) -> None:
        now = self.a.clock()
        spent = round(now - self._entered, 3)
        self._entered = now
        self.run.timings[old.value] = round(self.run.timings.get(old.value, 0.0) + spent, 3)
        if new is not State.IDLE:
            self.run.phase = new.value
        reason = getattr(event, "reason", "")
        if reason and not self.run.reason and new is not State.IDLE:
            self.run.reason = reason
        self.a.emit("phase", self._fields(phase=new.value, previous_phase=old.value,
                                          cause=type(event).__name__, duration_s=spent))

    def _fields(self, **extra: Any) -> dict[str, Any]:
        r = self.run
        to = r.to
        return {"deploy_id": r.deploy_id, "from": r.from_.label if r.from_ else None,
                "to": to.label if to else None, "digest": str(to.digest) if to else None,
                "outcome": r.outcome, "trigger": r.trigger, **extra}

    # -- helpers ----------------------------------------------------------------------
    @property
    def snap(self) -> Snapshot:
        assert self.run.snapshot is not None, "snapshot is taken before any swap step"
        return self.run.snapshot

    def _new_container(self) -> str | None:
        """The new container: the one under the original name that is not the old one."""
        cid = self.a.runtime.find_by_name(self.snap.name)
        if cid is not None and cid != self.snap.container_id:
            return cid
        if self.run.new_cid and self.a.runtime.state(self.run.new_cid).status != "missing":
            return self.run.new_cid
        return None

    def _url(self, cid: str) -> str | None:
        return self.a.settings.health_url or self.a.runtime.published_url(cid)

    def _engine(self, step: str, call: Callable[[], T]) -> T:
        """An engine call of a step that must not be left half-done (commit, undo). While
        the engine does not answer (dockerd restarting), wait for it up to ``ENGINE_WAIT_S``;
        if it stays away, ``DockerUnavailable`` leaves the run with its journal open, and
        start-up recovery finishes the step once the engine is back: never a HALT for it."""
        deadline = self.a.clock() + ENGINE_WAIT_S
        waited = False
        while True:
            try:
                return call()
            except DockerUnavailable as exc:
                if self.a.clock() >= deadline:
                    raise
                if not waited:
                    log.warning("engine_unavailable", deploy_id=self.run.deploy_id, step=step,
                                error=str(exc), waiting_s=ENGINE_WAIT_S)
                    waited = True
                sleep(ENGINE_RETRY_S)

    def _warn(self, step: str, exc: Exception) -> None:
        self.run.warnings.append(f"{step}: {exc}")
        log.warning("commit_step_failed", deploy_id=self.run.deploy_id, step=step, error=str(exc))

    # -- before the swap --------------------------------------------------------------
    def _do_Resolve(self, _: m.Resolve) -> m.Event:
        assert self._resolve is not None
        return self._resolve(self.run)

    def _do_Pull(self, _: m.Pull) -> m.Event:
        if self.a.stop_requested():
            return m.Aborted("stop requested before the pull", "aborted")
        assert self.run.to is not None
        try:
            self.run.image_id = self.a.runtime.pull(
                str(self.a.settings.image_ref), self.run.to.digest, self.a.pull_auth(),
                progress=self.a.pull_progress)
        except TwilightError as exc:
            self.run.error = exc
            return m.Aborted(str(exc), "failed")
        return m.Pulled()

    def _do_TakeSnapshot(self, _: m.TakeSnapshot) -> m.Event:
        try:
            self.run.snapshot = self.a.snapshot_target()
        except TwilightError as exc:
            self.run.error = exc
            return m.Aborted(str(exc), "failed")
        if self.a.stop_requested():
            return m.Aborted("stop requested before the swap", "aborted")
        return m.Prepared()

    # -- swap -------------------------------------------------------------------------
    def _do_Park(self, _: m.Park) -> m.Event | None:
        try:
            self.a.runtime.park(self.snap)
        except TwilightError as exc:
            return m.SwapFailed(f"parking the old container failed: {exc}")
        return None

    def _do_CreateNew(self, _: m.CreateNew) -> m.Event | None:
        assert self.run.to is not None
        image = self.a.settings.image_ref.with_digest(self.run.to.digest)
        try:
            self.run.new_cid = self.a.runtime.create_from(self.snap, image)
        except TwilightError as exc:
            return m.SwapFailed(f"creating the new container failed: {exc}")
        return None

    def _do_StartNew(self, _: m.StartNew) -> m.Event:
        assert self.run.new_cid is not None
        try:
            self.a.runtime.start(self.run.new_cid)
        except TwilightError as exc:
            return m.SwapFailed(f"starting the new container failed: {exc}",
                                blame_image=not host_caused(exc))
        return m.Started()

    def _do_Verify(self, _: m.Verify) -> m.Event:
        cid = self.run.new_cid or self._new_container()
        if cid is None:
            return m.Interrupted("the new container is gone")
        s = self.a.settings
        try:
            url = self._engine("verify", lambda: self._url(cid))  # dockerd restarting: wait
            verdict = self.a.health.verify(cid, url, timeout=s.health_timeout,
                                           interval=s.health_interval, soak=s.health_soak,
                                           should_stop=self.a.stop_requested)
        except TwilightError as exc:
            return m.Interrupted(f"health check could not run: {exc}")
        self.run.timings["verify_s"] = round(verdict.after_s, 3)
        if verdict.ok:
            return m.Healthy()
        if self.a.stop_requested():
            return m.Interrupted(f"stop requested during verify ({verdict.reason})")
        return m.Unhealthy(f"health gate failed: {verdict.reason}")

    # -- commit -----------------------------------------------------------------------
    def _do_WriteEnv(self, _: m.WriteEnv) -> None:
        s = self.a.settings
        if s.env_file is None or self.run.to is None:
            return
        try:
            write_image_tag(s.env_file, self.run.to.tag, s.tag_pattern)
        except TwilightError as exc:
            self._warn("env_file", exc)

    def _do_TagImage(self, _: m.TagImage) -> None:
        to = self.run.to
        assert to is not None
        image = self.run.image_id or self.a.settings.image_ref.with_digest(to.digest)
        try:
            self._engine("tag_image", lambda: self.a.runtime.tag_image(
                image, str(self.a.settings.image_ref), to.tag))
        except DockerUnavailable:
            raise
        except TwilightError as exc:
            self._warn("tag_image", exc)

    def _do_RemoveParked(self, _: m.RemoveParked) -> None:
        try:
            self._engine("remove_parked", self._remove_parked)
        except DockerUnavailable:
            raise
        except TwilightError as exc:
            self._warn("remove_parked", exc)

    def _remove_parked(self) -> None:
        cid = self.a.runtime.find_by_name(self.snap.parked_name)
        if cid is not None:
            self.a.runtime.remove(cid)

    def _do_Prune(self, _: m.Prune) -> m.Event:
        keep = {self.snap.image_id, *(x for x in (self.run.image_id,) if x)}
        keep |= {str(r.digest) for r in (self.run.to, self.run.from_) if r}
        try:
            self._engine("prune", lambda: self.a.runtime.prune_images(
                str(self.a.settings.image_ref), keep, self.a.settings.prune_after))
        except DockerUnavailable:
            raise
        except TwilightError as exc:
            self._warn("prune", exc)
        return m.Committed()

    # -- rollback ---------------------------------------------------------------------
    def _do_Quarantine(self, cmd: m.Quarantine) -> None:
        to = self.run.to
        assert to is not None
        self.a.store.quarantine(str(to.digest), to.tag, quarantine_reason(cmd.reason))
        self.a.emit("quarantined", self._fields(reason=cmd.reason))

    def _do_SaveLogs(self, _: m.SaveLogs) -> None:
        try:
            cid = self._new_container()
            if cid is not None:
                self.run.log_tail = self.a.runtime.logs_tail(cid, LOG_LINES)[-8000:]
        except TwilightError as exc:
            self.run.warnings.append(f"logs: {exc}")

    def _do_RemoveNew(self, _: m.RemoveNew) -> m.Event | None:
        try:
            self._engine("remove_new", self._remove_new)
        except DockerUnavailable:
            raise
        except TwilightError as exc:
            return m.RollbackFailed(f"removing the new container failed: {exc}")
        return None

    def _remove_new(self) -> None:
        cid = self._new_container()
        if cid is not None:
            self.a.runtime.remove(cid)

    def _do_Unpark(self, _: m.Unpark) -> m.Event:
        try:
            self._engine("unpark", lambda: self.a.runtime.unpark(self.snap))
        except DockerUnavailable:
            raise
        except TwilightError as exc:
            return m.RollbackFailed(f"restoring the previous container failed: {exc}")
        return m.Unparked()

    def _do_VerifyPrevious(self, _: m.VerifyPrevious) -> m.Event:
        s = self.a.settings
        try:
            cid = self._engine("verify_previous", lambda: self.a.runtime.find_by_name(
                self.snap.name)) or self.snap.container_id
            url = self._engine("verify_previous", lambda: self._url(cid))
            verdict = self.a.health.verify(cid, url, timeout=s.health_timeout,
                                           interval=s.health_interval, soak=s.health_soak)
        except DockerUnavailable:
            raise
        except TwilightError as exc:
            return m.RollbackFailed(f"verifying the previous container failed: {exc}")
        if verdict.ok:
            return m.PreviousHealthy()
        return m.RollbackFailed(f"previous version unhealthy too: {verdict.reason}")

    def _do_Alert(self, cmd: m.Alert) -> None:
        self.a.emit("halted", self._fields(reason=cmd.reason, phase="HALTED"))

    def _do_Record(self, cmd: m.Record) -> None:
        self.run.outcome = cmd.outcome
        self.a.record(self.run, cmd.reason or self.run.reason)
