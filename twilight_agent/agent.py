"""The agent: observe -> decide -> start one deploy run, under the deploy lock.

Data flows one way: the CLI or the daemon calls the Agent; the Agent decides (the pure
``policy.decide`` over facts from the registry, the engine and the store) and hands a
``DeployRun`` to a ``Runner`` with an explicit ``DeployContext``; the runner works the
ports and records the result; the Agent turns the finished run into a ``CycleReport``.

Public API (the daemon and the CLI build on these names): ``recover()``, ``poll_once()``,
``deploy(tag)``, ``rollback()``, ``decide(...)``, ``request_stop()``, ``status()``,
``announce()``, ``close()``, ``set_progress()``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import threading
from collections.abc import Callable, Mapping
from typing import Any

from twilight_agent import status as status_view
from twilight_agent.adapters.notify.sinks import EventBus
from twilight_agent.core import machine as m
from twilight_agent.core import policy
from twilight_agent.core.clock import SYSTEM, Clock, utc
from twilight_agent.core.events import Polled, RegistryFailed, Started
from twilight_agent.core.models import Digest, Release, Tag
from twilight_agent.core.outcomes import CycleReport, Outcome
from twilight_agent.core.policy import Decision, Facts, Verdict
from twilight_agent.core.ports import HealthPort, ImagePort, RegistryPort, Snapshot, TargetPort
from twilight_agent.core.progress import Progress
from twilight_agent.core.promotion import Promotion
from twilight_agent.core.signatures import SignaturePort
from twilight_agent.core.tunables import DEFAULT, Tunables
from twilight_agent.core.windows import age_left, is_open, next_opening
from twilight_agent.errors import (
    InvalidInput,
    InvalidTag,
    LockBusy,
    RegistryError,
    RuntimeError_,
    TwilightError,
)
from twilight_agent.logs import get_logger
from twilight_agent.promotion import Promoter
from twilight_agent.run.deploy_run import AgentConfig, DeployContext, DeployRun, new_deploy_id
from twilight_agent.run.observe import observe_target
from twilight_agent.run.recovery import recover
from twilight_agent.run.refusal import refuse_untrusted
from twilight_agent.run.runner import Runner
from twilight_agent.trust import Trust

log = get_logger("twilight.agent")
Lock = contextlib.AbstractContextManager[Any]


class Agent:
    """One deploy target, one registry repository. Built by ``app.build_agent``."""

    def __init__(self, config: AgentConfig, registry: RegistryPort, target: TargetPort,
                 images: ImagePort, health: HealthPort, store: Any, events: EventBus, *,
                 lock: Lock, clock: Clock = SYSTEM, tunables: Tunables = DEFAULT,
                 auth: Callable[[], Mapping[str, str] | None] | None = None,
                 closers: tuple[Callable[[], None], ...] = (),
                 signatures: SignaturePort | None = None,
                 promoter: Promoter | None = None) -> None:
        self.config = config
        self.registry = registry
        self.target = target
        self.store = store
        self.events = events
        self.signatures = signatures  # None: signatures are not checked
        self.promoter = promoter  # None: this host promotes nothing (TWILIGHT_PROMOTE_TO)
        self.clock = clock
        self._lock = lock
        self._stop = threading.Event()
        self._closers = closers
        self._ctx = DeployContext(
            target=target, images=images, health=health, store=store, events=events,
            clock=clock, tunables=tunables, config=config.run,
            should_stop=self._stop.is_set, pull_auth=auth or (lambda: None))
        self.trust = Trust(registry, store, events, signatures,
                           grace=config.verify_grace,
                           allow_downgrade=config.allow_downgrade,
                           clock=clock)
        self._track_release: Release | None = None  # the last build the track resolved to
        self._registry_s: float | None = None  # the registry part of the current poll
        self._registry_failing: str | None = None  # the error of the last poll, if any

    # -- lifecycle --------------------------------------------------------------------
    def set_watcher(self, who: str) -> None:
        """Who runs this agent's watches, as ``status`` shows it (the daemon says so)."""
        self._ctx = dataclasses.replace(self._ctx, watcher=who)

    def set_heartbeat(self, progress: Progress) -> None:
        """Where a run reports that it moved (the daemon's watchdog reads it)."""
        self._ctx = dataclasses.replace(self._ctx, progress=progress)

    def set_progress(self, pull: Callable[[str], None],
                     notice: Callable[[str], None]) -> None:
        """Show each pull status line, and a line where a run waits (the watch after
        commit); the CLI sets them when stdout is a terminal."""
        self._ctx = DeployContext(**{**self._ctx.__dict__, "pull_progress": pull,
                                     "notice": notice})

    def request_stop(self) -> None:
        """Thread-safe: the deploy in flight finishes or undoes its current phase."""
        self._stop.set()

    def close(self) -> None:
        """Flush the sinks, then close the registry and engine clients."""
        self.events.close()
        for close in self._closers:
            with contextlib.suppress(Exception):
                close()

    # -- public API -------------------------------------------------------------------
    def recover(self) -> None:
        """At start-up, under the lock: finish or undo an interrupted deploy."""
        with self._lock:
            self._recover_locked()

    def deploy(self, tag: str | None = None, trigger: str = "cli",
               now: bool = False, detach: bool = False) -> CycleReport:
        """Deploy ``tag`` (None: newest on the track); ``now``: outside the deploy windows
        too; ``detach``: return after the health gate and leave the watch to the daemon.
        Raises typed errors before the swap."""
        checked = None if tag is None else tag if isinstance(tag, Tag) else self._gate(tag)
        if detach:
            self._ctx = dataclasses.replace(self._ctx, hand_off_watch=True)
        with self._lock:
            self._recover_locked()
            return self._deploy_locked(checked, trigger, explicit=checked is not None,
                                       now=now)

    def rollback(self) -> CycleReport:
        """Go back to the previous good digest (from history), through the same gate."""
        with self._lock:
            self._recover_locked()
            snap = self.observe()
            meta = self.store.meta()
            current = snap.digest or (str(meta.current.digest) if meta.current else None)
            prev = self._previous_good(current)
            verified = self.trust.require_verified(prev, "rollback to")
            return self._run(prev, snap, "rollback", verified)

    def poll_once(self) -> CycleReport:
        """One daemon cycle: never raises for registry or Docker trouble. Afterwards the
        sinks get ``Polled`` (outcome, registry time, the store's totals)."""
        self._registry_s = None
        report = self._poll()
        self.events.notify(Polled(report.outcome, self.totals(), None if self._registry_s
                                  is None else round(self._registry_s, 4)))
        return report

    def announce(self) -> None:
        """Tell the sinks where things stand: the metrics file is written at once."""
        self.events.notify(Started(self.totals()))

    def totals(self) -> Any:
        return status_view.totals(self.store)

    def status(self) -> dict[str, Any]:
        """Current/previous release, pin, quarantine, phase, last result, halted flag."""
        return {**status_view.status(self.store, self.config, self._live_current,
                                      self.clock),
                "next_window": self.next_window(),
                "promotion": self.promoter.pending() if self.promoter else None}

    def promote(self, tag: str) -> Promotion:
        """``twilight-agent promote TAG``: point the promote tag at TAG's build now."""
        if self.promoter is None:
            raise InvalidInput("TWILIGHT_PROMOTE_TO is not set: this host promotes nothing")
        checked = self._gate(tag)
        with self._lock:
            release = self.registry.resolve_tag(checked)
            self.trust.require_verified(release, "promote")
            return self.promoter.force(release)

    def status_line(self) -> str:
        return status_view.status_line(self.store, self.config)

    # -- deciding ---------------------------------------------------------------------
    def observe(self) -> Snapshot:
        """The running target with the tag it runs as."""
        run = self.config.run
        return observe_target(self.target, self.store, run.env_file, run.tag_pattern)

    def decide(self, tag: Tag | None = None, *, explicit: bool = False,
               running: Snapshot | None = None, now: bool = False) -> Decision:
        """The one decision, for ``check`` (a dry run) and for every deploy: the candidate
        (``tag``, else the newest on the track) against what runs and what the store says,
        the deploy windows and the build's age."""
        meta = self.store.meta()
        current = (running.digest if running else None) or (
            str(meta.current.digest) if meta.current else None)
        candidate = self._candidate(tag, current, meta.current)
        wall = utc(self.clock)  # deploy windows, a build's age
        facts = Facts(
            candidate=candidate, running=current,
            quarantined=frozenset(q.digest for q in self.store.quarantined()),
            halted_on=meta.halted.digest if meta.halted else None,
            pin=self.config.pin or None, explicit=explicit,
            source=f"pin {tag}" if tag and not explicit else (tag or self.config.track),
            age_left_s=self._age_left(candidate, current, wall) if tag is None else 0.0,
            window=self.next_window(wall), now=now)
        decision = policy.decide(facts)
        if decision.verdict is Verdict.DEPLOY and tag is None \
                and self.trust.older(candidate, current):
            facts = dataclasses.replace(facts, older=True)
            decision = policy.decide(facts)
        found = self.trust.check(candidate) if decision.verdict is Verdict.DEPLOY else None
        if found is not None:  # only a candidate to deploy, when verification is on
            decision = policy.decide(dataclasses.replace(facts, signature=found[0],
                                                         grace_left_s=found[1]))
        return decision

    def next_window(self, wall: dt.datetime | None = None) -> str | None:
        """Outside every deploy window: when the next one opens (ISO 8601); else None."""
        windows, wall = self.config.windows, wall or utc(self.clock)
        if is_open(windows, wall):
            return None
        nxt = next_opening(windows, wall)
        return nxt.isoformat(timespec="minutes") if nxt else "never"

    def _age_left(self, candidate: Release, current: str | None, wall: dt.datetime) -> float:
        """TWILIGHT_MIN_AGE: how long the track's new build still has to wait."""
        if self.config.min_age <= 0 or str(candidate.digest) == current:
            return 0.0
        t = wall.timestamp()
        seen = self.store.first_seen(str(candidate.digest), candidate.tag, t)
        return age_left(seen, t, self.config.min_age)

    def _gate(self, tag: str) -> Tag:
        try:
            return Tag.parse(tag, self.config.run.tag_pattern)
        except ValueError as exc:
            raise InvalidTag(str(exc)) from None

    def _candidate(self, tag: Tag | None, current: str | None,
                   known: Release | None) -> Release:
        track, digest = self.config.track, None
        if tag is not None and tag not in (track, "latest"):
            return self.registry.resolve_tag(tag)
        if tag is None:
            digest = self.registry.track_digest(track)
            if digest == current and known is not None and known.digest == digest:
                return known
            q = {e.digest: e for e in self.store.quarantined()}.get(str(digest))
            if q is not None:
                return Release(q.tag or track, Digest(q.digest))
            last = self._track_release  # a held build: the HEAD is all a poll asks again
            if last is not None and last.digest == digest:
                return last
        release = self.registry.resolve_track(tag or track, known, digest)
        self._track_release = release if tag is None else self._track_release
        return release

    def _previous_good(self, current: str | None) -> Release:
        row = policy.previous_good(self.store.history(500), current)
        prev = (Release(row.from_tag or "", Digest(str(row.from_digest)))
                if row else self.store.meta().previous)
        if prev is None or str(prev.digest) == current:
            raise InvalidInput("no previous good version recorded to roll back to")
        if prev.tag:  # read from the store: parsed here, once
            prev = dataclasses.replace(prev, tag=self._gate(prev.tag))
        if self.store.is_quarantined(str(prev.digest)):
            raise InvalidInput(f"{prev.label} is quarantined; unquarantine it first")
        return prev

    # -- running ----------------------------------------------------------------------
    def _recover_locked(self) -> None:
        run = recover(self._ctx)
        if run is not None:
            log.info("recovered", **self._report_run(run, raise_error=False).as_dict())

    def _deploy_locked(self, tag: Tag | None, trigger: str, explicit: bool,
                       now: bool = False) -> CycleReport:
        snap = self.observe()
        if snap.digest and self.store.meta().current is None:
            self.store.set_current(Release(snap.tag or "", Digest(snap.digest)))
        t0 = self.clock.now()
        try:
            decision = self.decide(tag, explicit=explicit, running=snap, now=now)
        finally:
            self._registry_s = self.clock.now() - t0
        if decision.verdict is Verdict.REFUSED:
            raise InvalidInput(decision.reason)
        if not explicit:  # what the track (or the pin) offers: held or not
            self.trust.tell(decision, Release(snap.tag or "", Digest(snap.digest))
                            if snap.digest else None)
        if decision.verdict is Verdict.UNTRUSTED:
            return self._untrusted(decision, snap, trigger)
        if decision.verdict is not Verdict.DEPLOY:
            return self._report(decision.outcome, to=decision.candidate,
                                reason=decision.reason)
        verified = None if decision.signature is None else decision.signature.valid
        return self._run(decision.candidate, snap, trigger, verified)

    def _run(self, to: Release, snap: Snapshot, trigger: str,
             verified: bool | None = None) -> CycleReport:
        run = DeployRun(deploy_id=new_deploy_id(), trigger=trigger, to=to, snapshot=snap,
                        verified=verified)
        start = m.State.HALTED if self.store.meta().halted else m.State.IDLE
        Runner(self._ctx, run).start(start)
        return self._report_run(run)

    def _untrusted(self, decision: Decision, snap: Snapshot, trigger: str) -> CycleReport:
        """Nothing is pulled: the digest is quarantined and the refusal recorded."""
        run = DeployRun(deploy_id=new_deploy_id(), trigger=trigger, to=decision.candidate,
                        snapshot=snap, verified=False)
        refuse_untrusted(self._ctx, run, decision.reason)
        return self._report_run(run)

    def _report_run(self, run: DeployRun, raise_error: bool = True) -> CycleReport:
        """The report of a finished run; re-raises a pre-swap error (exit 5 or 2)."""
        if raise_error and run.error is not None and run.outcome is Outcome.FAILED:
            raise run.error
        if run.outcome is None and run.watch_until is not None:  # a stop ended the watch
            left = max(run.watch_until - self.clock.wall(), 0.0)
            why = (f"healthy; the daemon watches it for the {left:.0f}s left"
                   if self._ctx.hand_off_watch else f"watch interrupted with {left:.0f}s "
                   "left; the next poll or start of the agent resumes it")
            return self._report(Outcome.DEPLOYED, deploy_id=run.deploy_id, from_=run.from_,
                                to=run.to, reason=why)
        outcome = run.outcome or Outcome.NOTHING_TO_DO
        if outcome in (Outcome.ABORTED, Outcome.FAILED):
            outcome = Outcome.NOTHING_TO_DO
        return self._report(outcome, deploy_id=run.deploy_id, from_=run.from_, to=run.to,
                            reason=run.reason)

    def _report(self, outcome: Outcome, exit_code: int | None = None,
                **kw: Any) -> CycleReport:
        code = outcome.exit_code if exit_code is None else exit_code
        return CycleReport(outcome=outcome, exit_code=code, status_line=self.status_line(),
                           **kw)

    # -- the poll ---------------------------------------------------------------------
    def _poll(self) -> CycleReport:
        try:
            with self._lock:
                self._recover_locked()
                pin = self._gate(self.config.pin) if self.config.pin else None
                report = self._deploy_locked(pin, "poll", explicit=False)
                if self.promoter is not None:
                    self.promoter.tick(verified=self.trust.verified)
        except LockBusy as exc:
            report = self._report(Outcome.BUSY, reason=str(exc))
        except RegistryError as exc:
            return self._registry_failed(exc)
        except RuntimeError_ as exc:
            report = self._report(Outcome.DOCKER_ERROR, reason=str(exc))
        except TwilightError as exc:
            report = self._report(Outcome.NOTHING_TO_DO, reason=str(exc),
                                  exit_code=exc.exit_code)
        if self._registry_failing is not None and self._registry_s is not None:
            log.info("registry_recovered", after=self._registry_failing)
            self._registry_failing = None
        return report

    def _registry_failed(self, exc: RegistryError) -> CycleReport:
        """Every failed poll is counted (sinks); it is logged when the error changes."""
        event = RegistryFailed(str(exc))
        if str(exc) != self._registry_failing:
            self.events.emit(event)
        else:
            self.events.notify(event)
        self._registry_failing = str(exc)
        return self._report(Outcome.REGISTRY_ERROR, reason=str(exc))

    def _live_current(self) -> Release | None:
        try:
            snap = self.target.snapshot()
        except TwilightError:
            return None
        return Release(snap.tag or "", Digest(snap.digest)) if snap.digest else None
