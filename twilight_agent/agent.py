"""The agent: resolve -> decide -> run one deploy through the ports, under the deploy lock.

Public API (the daemon and the CLI build on these names): ``Agent.recover()``,
``poll_once()``, ``deploy(tag)``, ``rollback()``, ``request_stop()``, ``status()``, and the
``CycleReport`` every cycle returns.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from twilight_agent.adapters.envfile import read_image_tag
from twilight_agent.adapters.lock import DeployLock
from twilight_agent.adapters.store import Store, utcnow
from twilight_agent.core import machine as m
from twilight_agent.core import policy
from twilight_agent.core.models import Digest, Release
from twilight_agent.core.ports import EventSink, HealthPort, RegistryPort, RuntimePort, Snapshot
from twilight_agent.errors import (
    InvalidInput,
    InvalidTag,
    LockBusy,
    RegistryError,
    RuntimeError_,
    TwilightError,
)
from twilight_agent.logs import get_logger
from twilight_agent.runner import DeployRun, Runner, new_deploy_id, release_dict, release_from
from twilight_agent.settings import Settings

log = get_logger("twilight.agent")

EXIT_CODES = {"deployed": 0, "up_to_date": 0, "nothing_to_do": 0, "quarantined": 0,
              "pinned_current": 0, "rolled_back": 1, "busy": 3, "halted": 4,
              "registry_error": 5, "docker_error": 5}


@dataclass
class CycleReport:
    """What one poll or one deploy did; ``exit_code`` is what the CLI returns."""

    outcome: str  # up_to_date|deployed|rolled_back|halted|registry_error|docker_error|...
    exit_code: int = 0
    deploy_id: str | None = None
    from_: Release | None = None
    to: Release | None = None
    reason: str = ""
    status_line: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {"outcome": self.outcome, "exit_code": self.exit_code,
                "deploy_id": self.deploy_id, "from": release_dict(self.from_),
                "to": release_dict(self.to), "reason": self.reason}


class Agent:
    """One target container, one registry repository."""

    def __init__(self, settings: Settings, registry: RegistryPort, runtime: RuntimePort,
                 health: HealthPort, store: Store, sinks: list[EventSink],
                 clock: Callable[[], float] = time.monotonic, *,
                 auth: Callable[[], Mapping[str, str] | None] | None = None) -> None:
        self.settings = settings
        self.registry = registry
        self.runtime = runtime
        self.health = health
        self.store = store
        self.sinks = list(sinks)
        self.clock = clock
        self._auth = auth
        self._stop = threading.Event()
        self._lock = DeployLock(settings.state_dir)
        # Called with each pull status line (the CLI sets it when stdout is a terminal).
        self.pull_progress: Callable[[str], None] | None = None
        self._registry_s: float | None = None  # the registry part of the current poll
        self._registry_failing: str | None = None  # the error of the last poll, if any

    # -- small services the runner uses ----------------------------------------------
    def stop_requested(self) -> bool:
        return self._stop.is_set()

    def close(self) -> None:
        """Flush and close the sinks that hold a thread or a file (webhook delivery)."""
        for sink in self.sinks:
            close = getattr(sink, "close", None)
            if callable(close):
                close()

    def request_stop(self) -> None:
        """Thread-safe: the deploy in flight finishes or undoes its current phase."""
        self._stop.set()

    def pull_auth(self) -> Mapping[str, str] | None:
        return self._auth() if self._auth else None

    def emit(self, event: str, fields: Mapping[str, Any]) -> None:
        """Log the event (the audit trail) and hand it to every sink."""
        log.info(event, **{k: v for k, v in fields.items() if k != "log_tail"})
        self._to_sinks(event, fields)

    def _to_sinks(self, event: str, fields: Mapping[str, Any]) -> None:
        for sink in self.sinks:
            try:
                sink.emit(event, fields)
            except Exception as exc:  # a sink must never break a deploy
                log.warning("sink_failed", sink=type(sink).__name__, error=str(exc))

    # -- public API -------------------------------------------------------------------
    def recover(self) -> None:
        """At start-up, under the lock: finish or undo an interrupted deploy."""
        with self._lock:
            self._recover_locked()

    def deploy(self, tag: str | None = None, trigger: str = "cli") -> CycleReport:
        """Deploy ``tag`` (None: newest on the track). Raises typed errors before the swap."""
        if tag is not None:
            self._gate(tag)
        with self._lock:
            self._recover_locked()
            return self._deploy_locked(tag, trigger, explicit=tag is not None)

    def rollback(self) -> CycleReport:
        """Go back to the previous good digest (from history), through the same gate."""
        with self._lock:
            self._recover_locked()
            snap = self.snapshot_target()
            target = self._previous_good(snap.digest or self._current_digest())
            return self._run(trigger="rollback", resolve=lambda run: self._fixed(
                run, target, snap))

    def poll_once(self) -> CycleReport:
        """One daemon cycle: never raises for registry or Docker trouble.

        Afterwards the sinks get ``poll``: ``duration_s`` (how long the registry check took;
        absent when the registry was not reached), ``outcome`` and ``totals`` (what the
        history says, so deploys made by ``twilight-agent deploy`` are counted too). Not
        logged: one line per poll would flood the journal.
        """
        self._registry_s = None
        report = self._poll()
        fields: dict[str, Any] = {"outcome": report.outcome, "totals": self.totals()}
        if self._registry_s is not None:
            fields["duration_s"] = round(self._registry_s, 4)
        self._to_sinks("poll", fields)
        return report

    def _poll(self) -> CycleReport:
        try:
            with self._lock:
                self._recover_locked()
                report = self._deploy_locked(self.settings.pin or None, "poll", explicit=False)
        except LockBusy as exc:
            report = self._report("busy", reason=str(exc))
        except RegistryError as exc:
            # Every failed poll is counted (sinks); it is logged when the error changes.
            fields = {"error": str(exc)}
            if str(exc) != self._registry_failing:
                self.emit("registry_error", fields)
            else:
                self._to_sinks("registry_error", fields)
            self._registry_failing = str(exc)
            return self._report("registry_error", reason=str(exc))
        except RuntimeError_ as exc:
            report = self._report("docker_error", reason=str(exc))
        except TwilightError as exc:
            report = self._report("nothing_to_do", reason=str(exc), exit_code=exc.exit_code)
        if self._registry_failing is not None and self._registry_s is not None:
            log.info("registry_recovered", after=self._registry_failing)
            self._registry_failing = None
        return report

    def announce(self) -> None:
        """Tell the sinks where things stand (``started`` with ``totals``): the metrics file
        is written at once, so the collector sees it before the first event."""
        self._to_sinks("started", {"totals": self.totals()})

    def totals(self) -> dict[str, Any]:
        """What the state store says: finished deploys by outcome, the last success, what
        serves now, whether the agent is halted."""
        counts = self.store.outcome_counts()
        return {"deploys": {k: n for k, (n, _) in counts.items()},
                "last_success": counts.get("deployed", (0, ""))[1] or None,
                "current": self.store.get_meta("current"),
                "halted": bool(self.store.get_meta("halted"))}

    def status(self) -> dict[str, Any]:
        """Current/previous release, pin, quarantine, phase, last result, halted flag."""
        journal = self.store.open_journal()
        halted = self.store.get_meta("halted")
        phase = journal["phase"] if journal else ("HALTED" if halted else "IDLE")
        return {
            "current": self.store.get_meta("current") or self._live_current(),
            "previous": self.store.get_meta("previous"),
            "pinned": self.settings.pin or None,
            "track": self.settings.track,
            "quarantined": [{"digest": q.digest, "tag": q.tag, "reason": q.reason, "at": q.at}
                            for q in self.store.quarantined()],
            "phase": phase,
            "last_result": self.store.get_meta("last_result"),
            "halted": bool(halted),
            "halted_reason": (halted or {}).get("reason"),
        }

    # -- recovery ---------------------------------------------------------------------
    def _recover_locked(self) -> None:
        from twilight_agent.recovery import reconcile

        report = reconcile(self)
        if report is not None:
            log.info("recovered", **report.as_dict())

    # -- deciding ---------------------------------------------------------------------
    def _gate(self, tag: str) -> None:
        try:
            policy.check_tag(tag, self.settings.tag_pattern)
        except ValueError as exc:
            raise InvalidTag(str(exc)) from None

    def _deploy_locked(self, tag: str | None, trigger: str, explicit: bool) -> CycleReport:
        snap = self.snapshot_target()
        current = snap.digest or self._current_digest()
        if snap.digest and self.store.get_meta("current") is None:
            self.store.set_meta(current={"tag": snap.tag, "digest": snap.digest})
        t0 = self.clock()
        try:
            candidate = self._candidate(tag, current)
        finally:
            self._registry_s = self.clock() - t0
        quarantined = {q.digest for q in self.store.quarantined()}
        halted_on = (self.store.get_meta("halted") or {}).get("digest")
        verdict = policy.decide(candidate.digest, current, quarantined, explicit=explicit,
                                halted_on=halted_on)
        if verdict == policy.REFUSED:
            raise InvalidInput(f"{candidate.label} is quarantined; run `twilight-agent "
                               f"unquarantine {candidate.tag}` first")
        if verdict != policy.DEPLOY:
            outcome = verdict
            if verdict == policy.UP_TO_DATE and self.settings.pin and not explicit:
                outcome = "pinned_current"
            return self._report(outcome, to=candidate, reason=self._why(verdict, candidate))
        return self._run(trigger, lambda run: self._fixed(run, candidate, snap))

    def _candidate(self, tag: str | None, current: str | None) -> Release:
        if tag is not None and tag not in (self.settings.track, "latest"):
            return self.registry.resolve_tag(tag)
        track = tag or self.settings.track
        known = release_from(self.store.get_meta("current"))
        if tag is None:
            digest = self.registry.track_digest(track)
            if digest == current and known is not None and known.digest == digest:
                return known
            q = {e.digest: e for e in self.store.quarantined()}.get(str(digest))
            if q is not None:
                return Release(q.tag or track, Digest(q.digest))
        return self.registry.resolve_track(track, known)

    @staticmethod
    def _why(verdict: str, r: Release) -> str:
        return {policy.UP_TO_DATE: f"{r.label} is already running",
                policy.QUARANTINED: f"{r.label} is quarantined; waiting for a newer build"
                }.get(verdict, verdict)

    @staticmethod
    def _fixed(run: DeployRun, target: Release, snap: Any) -> m.Event:
        run.to, run.snapshot = target, snap
        return m.Resolved()

    def _previous_good(self, current: str | None) -> Release:
        row = policy.previous_good(self.store.history(500), current)
        prev = (release_from({"tag": row["from_tag"], "digest": row["from_digest"]}) if row
                else release_from(self.store.get_meta("previous")))
        if prev is None or str(prev.digest) == current:
            raise InvalidInput("no previous good version recorded to roll back to")
        if prev.tag:
            self._gate(prev.tag)
        if self.store.is_quarantined(str(prev.digest)):
            raise InvalidInput(f"{prev.label} is quarantined; unquarantine it first")
        return prev

    def snapshot_target(self) -> Snapshot:
        """The running target, with the tag it runs as: the engine's reference when it
        names one, else the recorded current tag, else the compose ``.env`` IMAGE_TAG."""
        snap = self.runtime.snapshot(self.runtime.find_target())
        return dataclasses.replace(snap, tag=self._tag_of(snap))

    def _tag_of(self, snap: Snapshot) -> str | None:
        cur = self.store.get_meta("current") or {}
        env = self.settings.env_file
        for tag in (snap.tag, cur.get("tag") if cur.get("digest") == snap.digest else None,
                    read_image_tag(env) if env else None):
            if tag and self._passes(tag):
                return str(tag)
        return snap.tag

    def _passes(self, tag: str) -> bool:
        try:
            policy.check_tag(tag, self.settings.tag_pattern)
        except ValueError:
            return False
        return True

    def _current_digest(self) -> str | None:
        cur = self.store.get_meta("current") or {}
        return cur.get("digest")

    def _live_current(self) -> dict[str, Any] | None:
        try:
            snap = self.runtime.snapshot(self.runtime.find_target())
        except TwilightError:
            return None
        return {"tag": snap.tag, "digest": snap.digest}

    # -- running ----------------------------------------------------------------------
    def _run(self, trigger: str, resolve: Callable[[DeployRun], m.Event]) -> CycleReport:
        run = DeployRun(deploy_id=new_deploy_id(), trigger=trigger)
        start = m.State.HALTED if self.store.get_meta("halted") else m.State.IDLE
        Runner(self, run, resolve).start(start)
        return self.finish_report(run)

    def finish_report(self, run: DeployRun) -> CycleReport:
        """The report of a finished run; re-raises a pre-swap error (exit 5 or 2)."""
        if run.error is not None and run.outcome == "failed":
            raise run.error
        outcome = run.outcome or "nothing_to_do"
        if outcome in ("aborted", "failed"):
            outcome = "nothing_to_do"
        return self._report(outcome, deploy_id=run.deploy_id, from_=run.from_, to=run.to,
                            reason=run.reason)

    def _report(self, outcome: str, exit_code: int | None = None, **kw: Any) -> CycleReport:
        code = EXIT_CODES.get(outcome, 1) if exit_code is None else exit_code
        return CycleReport(outcome=outcome, exit_code=code, status_line=self.status_line(),
                           **kw)

    def status_line(self) -> str:
        halted = self.store.get_meta("halted")
        if halted:
            return f"HALTED: {halted.get('reason', '')}"[:120]
        cur = release_from(self.store.get_meta("current"))
        at = f" at {cur.tag or cur.digest.short}" if cur else ""
        if self.settings.pin:
            return f"pinned to {self.settings.pin}{at}"
        return f"following {self.settings.track}{at}"

    # -- recording --------------------------------------------------------------------
    def record(self, run: DeployRun, reason: str) -> None:
        """History row + current/previous/halted/last_result, journal closed: one write."""
        outcome = run.outcome or "failed"
        if run.note:
            reason = f"{run.note}: {reason}" if reason else run.note
        if run.warnings:
            reason = (reason + "; " if reason else "") + "warnings: " + "; ".join(run.warnings)
        finished = utcnow()
        row = {"id": run.deploy_id, "started": run.started, "finished": finished,
               "outcome": outcome, "phase": run.phase, "reason": reason,
               "timings": run.timings, "log_tail": run.log_tail, "trigger": run.trigger,
               **self._sides(run)}
        last = {"deploy_id": run.deploy_id, "outcome": outcome, "reason": reason,
                "finished": finished}
        self.store.finish(row, self._meta_after(run, outcome, reason, last))
        self.emit("deploy_finished", {
            "deploy_id": run.deploy_id, "outcome": outcome, "phase": run.phase,
            "from": row["from_tag"], "to": row["to_tag"], "digest": row["to_digest"],
            "from_tag": row["from_tag"], "from_digest": row["from_digest"],
            "to_tag": row["to_tag"], "to_digest": row["to_digest"],
            "revision": run.to.revision if run.to else None,
            "log_tail": run.log_tail, "reason": reason, "duration_s": round(sum(
                v for k, v in run.timings.items() if k.isupper()), 3),
            "trigger": run.trigger})

    @staticmethod
    def _sides(run: DeployRun) -> dict[str, Any]:
        f, t = run.from_, run.to
        return {"from_tag": f.tag if f else None, "from_digest": str(f.digest) if f else None,
                "to_tag": t.tag if t else None, "to_digest": str(t.digest) if t else None}

    @staticmethod
    def _meta_after(run: DeployRun, outcome: str, reason: str,
                    last: dict[str, Any]) -> dict[str, Any]:
        meta: dict[str, Any] = {"last_result": last}
        if outcome == "deployed":
            meta.update(current=release_dict(run.to), previous=release_dict(run.from_),
                        halted=None)
        elif outcome == "rolled_back":
            meta.update(current=release_dict(run.from_), halted=None)
        elif outcome == "halted":
            meta["halted"] = {"digest": str(run.to.digest) if run.to else None,
                              "reason": reason, "deploy_id": run.deploy_id}
        return meta
