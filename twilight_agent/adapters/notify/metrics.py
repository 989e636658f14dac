"""Metrics without a port: Prometheus text format written to a file after every event.

node_exporter's textfile collector (``--collector.textfile.directory``) picks the file up,
so the host opens nothing. The text is ``prometheus_client``'s (``generate_latest`` over
this sink's own registry), written through ``atomicfile.atomic_write`` rather than the
library's ``write_to_textfile``: that one opens its temporary file following symlinks and
with the umask's mode (the unit sets ``UMask=0077``, so node_exporter, running as another
user, could not read the file) and never fsyncs. The collector never reads half a file.
Off when ``TWILIGHT_METRICS_FILE`` is empty: ``build_sinks`` then does not create this sink.
``deploy/prometheus/twilight.rules.yml`` holds the alerts written against these names.

Events read (``core/events.py``) and what they change:

- ``DeployFinished``: ``twilight_deploys_total{outcome}``; ``deployed`` sets
  ``twilight_last_success_timestamp_seconds`` and ``twilight_current_revision_info`` from
  the ``to`` release, clears ``twilight_halted``; ``rolled_back`` points the revision info
  at ``from`` and clears ``twilight_halted``; ``halted`` sets it. The phase is IDLE or
  HALTED again.
- ``PhaseChanged``: ``twilight_phase{phase}`` (one series, value 1) and
  ``twilight_phase_since_timestamp_seconds``; into ROLLBACK also
  ``twilight_rollbacks_total``, once per deploy id.
- ``HaltedAlert``: ``twilight_halted`` = 1.
- ``Quarantined``: ``twilight_quarantines_total``.
- ``Promoted``: ``twilight_promotions_total{step}`` (``promoted`` or ``dropped``).
- ``RegistryFailed``: ``twilight_registry_errors_total``.
- ``Polled``: ``twilight_poll_duration_seconds`` (histogram) when the registry was reached;
  ``twilight_last_poll_success_timestamp_seconds`` unless the outcome is a registry or
  Docker error (a poll that found the lock busy still ran).
- ``Started`` and ``Polled`` carry ``Totals`` (what the state store says): the counters
  catch up with the history (never down), so a fresh process starts from the host's totals
  and the daemon's file counts deploys made from the CLI; the phase of an unfinished
  deploy, and the held build: ``twilight_held{kind}`` (``signature``, ``downgrade``: 1
  while ``Trust.tell``'s meta ``hold`` names it) and
  ``twilight_held_since_timestamp_seconds{kind}`` (only the held kind). ``Started`` writes
  the file at once, so the collector sees it before the first deploy, and keeps the last
  successful poll the file already says (a restart, or the CLI writing the same file,
  does not set it back); with none, it starts the clock at the process' start.

The settings the alerts compare against: ``twilight_poll_interval_seconds``,
``twilight_watch_seconds`` and ``twilight_verify_grace_seconds``.

A sink never raises into the agent: a failed write is logged once (and once more when
writing works again), and the counters keep counting in memory.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import threading
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from twilight_agent.adapters.state.atomicfile import atomic_write
from twilight_agent.core.clock import SYSTEM, Clock
from twilight_agent.core.events import (
    HELD_DOWNGRADE,
    HELD_SIGNATURE,
    DeployFinished,
    Event,
    HaltedAlert,
    PhaseChanged,
    Polled,
    Promoted,
    Quarantined,
    RegistryFailed,
    Started,
    Totals,
)
from twilight_agent.core.outcomes import Outcome
from twilight_agent.core.promotion import DROPPED, PROMOTED
from twilight_agent.logs import get_logger

log = get_logger("twilight.metrics")

POLL_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_SEEN_ROLLBACKS = 64  # deploy ids remembered so one rollback is counted once
_POLL_FAILED = (Outcome.REGISTRY_ERROR, Outcome.DOCKER_ERROR)
_LAST_POLL = "twilight_last_poll_success_timestamp_seconds"
_PROMOTION_STEPS = (PROMOTED, DROPPED)
# Each rolled-back or halted deploy went through ROLLBACK once.
_ROLLED_BACK = frozenset({Outcome.ROLLED_BACK.value, Outcome.HALTED.value})


def _epoch(value: str | None) -> float | None:
    """An ISO-8601 time (``2026-11-22T03:00:00Z``) -> Unix time."""
    if not value:
        return None
    try:
        return dt.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


@dataclass(frozen=True)
class Schedule:
    """The settings the alert rules compare against, exported as gauges (seconds)."""

    poll_interval: float = 60.0
    watch: float = 300.0
    verify_grace: float = 900.0


def _gauge(name: str, doc: str, r: CollectorRegistry, labels: tuple[str, ...] = ()) -> Gauge:
    return Gauge(name, doc, list(labels), registry=r)


class MetricsFile:
    """``EventSink`` keeping Prometheus metrics in its own registry, written to ``path``."""

    def __init__(self, path: Path, clock: Clock = SYSTEM,
                 schedule: Schedule | None = None) -> None:
        self.path = Path(path)
        self._clock = clock
        self._lock = threading.Lock()
        self._failing = False
        self._rollbacks_seen: deque[str] = deque(maxlen=_SEEN_ROLLBACKS)
        # What the counters already hold, to catch up with the store's totals.
        self._counted: dict[str, int] = {}
        self._rollbacks_counted = 0
        self._last_success = 0.0
        self._serving_digest = ""
        self._phase = ""
        self._is_halted = False
        self._held: tuple[str | None, str | None] = (None, None)
        self.registry = CollectorRegistry(auto_describe=True)
        self._define_deploys(self.registry)
        self._define_state(self.registry)
        self._define_schedule(self.registry, schedule or Schedule())

    def _define_deploys(self, r: CollectorRegistry) -> None:
        self.deploys = Counter("twilight_deploys", "Finished deploys by outcome.",
                               ["outcome"], registry=r)
        self.rollbacks = Counter("twilight_rollbacks", "Rollbacks started.", registry=r)
        self.quarantines = Counter("twilight_quarantines",
                                   "Builds quarantined (failed, or refused untrusted).",
                                   registry=r)
        self.promotions = Counter("twilight_promotions",
                                  "Promotions ended, by step (promoted or dropped).",
                                  ["step"], registry=r)
        for step in _PROMOTION_STEPS:  # a first drop is an increase from 0
            self.promotions.labels(step=step)
        self.last_success = _gauge("twilight_last_success_timestamp_seconds",
                                   "Unix time of the last deploy that passed its health gate.",
                                   r)
        self.revision = _gauge("twilight_current_revision_info",
                               "The version serving now (value is always 1).", r,
                               ("tag", "digest", "revision"))
        self.registry_errors = Counter("twilight_registry_errors",
                                       "Registry polls that failed.", registry=r)
        self.poll_duration = Histogram("twilight_poll_duration_seconds",
                                       "Time one registry poll took.", buckets=POLL_BUCKETS,
                                       registry=r)

    def _define_state(self, r: CollectorRegistry) -> None:
        self.halted = _gauge("twilight_halted",
                             "1 when a rollback failed and an operator is needed.", r)
        self.last_poll = _gauge(_LAST_POLL, "Unix time of the last poll that reached a "
                                "decision (not a registry or Docker error).", r)
        self.phase = _gauge("twilight_phase", "The deploy phase now (value is always 1).",
                            r, ("phase",))
        self.phase_since = _gauge("twilight_phase_since_timestamp_seconds",
                                  "Unix time the phase now began.", r)
        self.held = _gauge("twilight_held", "1 while the track's build is held back: no "
                           "signature yet, or older than what runs.", r, ("kind",))
        self.held_since = _gauge("twilight_held_since_timestamp_seconds",
                                 "Unix time the held build was first held.", r, ("kind",))
        for kind in (HELD_SIGNATURE, HELD_DOWNGRADE):
            self.held.labels(kind=kind).set(0)
        self._set_phase("IDLE", None)

    def _define_schedule(self, r: CollectorRegistry, schedule: Schedule) -> None:
        for name, value, doc in (
                ("poll_interval", schedule.poll_interval, "TWILIGHT_POLL_INTERVAL"),
                ("watch", schedule.watch, "TWILIGHT_WATCH"),
                ("verify_grace", schedule.verify_grace, "TWILIGHT_VERIFY_GRACE")):
            _gauge(f"twilight_{name}_seconds", f"{doc}, in seconds.", r).set(value)

    # -- EventSink --------------------------------------------------------------------
    def emit(self, event: Event) -> None:
        try:
            with self._lock:
                if self._apply(event):
                    self._write()
        except Exception as exc:  # a sink never raises into the agent
            self._report(exc)

    def write(self) -> None:
        """Write the file now (e.g. at start-up, so the collector sees zeros)."""
        try:
            with self._lock:
                self._write()
        except Exception as exc:
            self._report(exc)

    # -- internals --------------------------------------------------------------------
    def _apply(self, event: Event) -> bool:
        """Update the metrics; True when the file must be rewritten."""
        if isinstance(event, DeployFinished):
            self._finished(event)
        elif isinstance(event, PhaseChanged):
            self._set_phase(event.phase, None)
            if event.phase == "ROLLBACK":
                self._rollback(event.ref.deploy_id)
        elif isinstance(event, HaltedAlert):
            self._set_halted(True)
        elif isinstance(event, Quarantined):
            self.quarantines.inc()
        elif isinstance(event, Promoted):
            if event.step not in _PROMOTION_STEPS:
                return False
            self.promotions.labels(step=event.step).inc()
        elif isinstance(event, RegistryFailed):
            self.registry_errors.inc()
        elif isinstance(event, Polled):
            self._polled(event)
        elif isinstance(event, Started):
            self.last_poll.set(self._previous(_LAST_POLL) or float(self._clock.wall()))
            self._catch_up(event.totals)
        else:
            return False
        return True

    def _polled(self, event: Polled) -> None:
        if event.duration_s is not None:
            self.poll_duration.observe(event.duration_s)
        self._catch_up(event.totals)
        if event.outcome not in _POLL_FAILED:
            self.last_poll.set(float(self._clock.wall()))

    def _catch_up(self, totals: Totals) -> None:
        """Bring the counters and gauges up to what the state store says."""
        for outcome, n in totals.deploys.items():
            missing = n - self._counted.get(outcome, 0)
            if missing > 0:
                self.deploys.labels(outcome=outcome).inc(missing)
                self._counted[outcome] = n
        started = sum(n for o, n in totals.deploys.items() if o in _ROLLED_BACK)
        if started > self._rollbacks_counted:
            self.rollbacks.inc(started - self._rollbacks_counted)
            self._rollbacks_counted = started
        success = _epoch(totals.last_success)
        if success is not None and success > self._last_success:
            self.last_success.set(success)
            self._last_success = success
        cur = totals.current
        if cur is not None and str(cur.digest) != self._serving_digest:
            self._serving(cur.tag, str(cur.digest), "")
        self._set_halted(totals.halted)
        self._set_phase(totals.phase, _epoch(totals.phase_since))
        self._set_held(totals.hold, totals.hold_since)

    def _set_phase(self, phase: str, since: float | None) -> None:
        """One ``twilight_phase`` series; the clock starts when the phase changes."""
        if phase == self._phase:
            return
        self._phase = phase
        self.phase.clear()
        self.phase.labels(phase=phase).set(1)
        self.phase_since.set(since if since is not None else float(self._clock.wall()))

    def _set_held(self, kind: str | None, since: str | None) -> None:
        if (kind, since) == self._held:
            return
        self._held = (kind, since)
        self.held_since.clear()
        for k in (HELD_SIGNATURE, HELD_DOWNGRADE):
            self.held.labels(kind=k).set(1 if k == kind else 0)
        if kind is not None:
            when = _epoch(since)
            self.held_since.labels(kind=kind).set(
                when if when is not None else float(self._clock.wall()))

    def _previous(self, name: str) -> float | None:
        """What the file on disk says for ``name`` (written by an earlier process)."""
        with contextlib.suppress(OSError, ValueError):
            text = self.path.read_text(encoding="utf-8")
            for family in text_string_to_metric_families(text):
                for sample in family.samples:
                    if sample.name == name and sample.value > 0:
                        return float(sample.value)
        return None

    def _finished(self, event: DeployFinished) -> None:
        outcome = event.outcome.value
        self.deploys.labels(outcome=outcome).inc()
        self._counted[outcome] = self._counted.get(outcome, 0) + 1
        to, from_ = event.ref.to, event.ref.from_
        if event.outcome is Outcome.DEPLOYED:
            self._last_success = float(self._clock.wall())
            self.last_success.set(self._last_success)
            if to is not None:
                self._serving(to.tag, str(to.digest), to.revision or "")
            self._set_halted(False)
        elif event.outcome is Outcome.ROLLED_BACK:
            if from_ is not None:
                self._serving(from_.tag, str(from_.digest), from_.revision or "")
            self._set_halted(False)
        elif event.outcome is Outcome.HALTED:
            self._set_halted(True)
        # A build refused or stopped before the swap leaves a halt as it was.
        self._set_phase("HALTED" if self._is_halted else "IDLE", None)

    def _set_halted(self, halted: bool) -> None:
        self._is_halted = halted
        self.halted.set(1 if halted else 0)

    def _rollback(self, deploy_id: str) -> None:
        if deploy_id and deploy_id in self._rollbacks_seen:
            return
        if deploy_id:
            self._rollbacks_seen.append(deploy_id)
        self.rollbacks.inc()
        self._rollbacks_counted += 1

    def _serving(self, tag: str, digest: str, revision: str) -> None:
        self._serving_digest = digest
        self.revision.clear()
        self.revision.labels(tag=tag, digest=digest, revision=revision).set(1)

    def _write(self) -> None:
        # Not named *.prom while written; world-readable whatever the umask.
        atomic_write(self.path, generate_latest(self.registry), mode=0o644)
        if self._failing:
            self._failing = False
            log.info("metrics_recovered", path=str(self.path))

    def _report(self, exc: Exception) -> None:
        if not self._failing:
            self._failing = True
            log.warning("metrics_failed", path=str(self.path),
                        error=f"{type(exc).__name__}: {exc}")
