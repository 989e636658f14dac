"""Metrics without a port: Prometheus text format written to a file after every event.

node_exporter's textfile collector (``--collector.textfile.directory``) picks the file up,
so the host opens nothing. The file is rewritten atomically (``generate_latest`` into a
temporary file in the same directory, then a rename), so the collector never reads half a
file; it is world-readable whatever the umask (the unit sets ``UMask=0077``) so
node_exporter, running as another user, can read it. Off when
``TWILIGHT_METRICS_FILE`` is empty: ``build_sinks`` then does not create this sink.

Events read (``core/events.py``) and what they change:

- ``DeployFinished``: ``twilight_deploys_total{outcome}``; ``deployed`` sets
  ``twilight_last_success_timestamp_seconds`` and ``twilight_current_revision_info`` from
  the ``to`` release, clears ``twilight_halted``; ``rolled_back`` points the revision info
  at ``from`` and clears ``twilight_halted``; ``halted`` sets it.
- ``PhaseChanged`` into ROLLBACK: ``twilight_rollbacks_total``, once per deploy id.
- ``HaltedAlert``: ``twilight_halted`` = 1.
- ``RegistryFailed``: ``twilight_registry_errors_total``.
- ``Polled``: ``twilight_poll_duration_seconds`` (histogram) when the registry was reached.
- ``Started`` and ``Polled`` carry ``Totals`` (what the state store says): the counters
  catch up with the history (never down), so a fresh process starts from the host's totals
  and the daemon's file counts deploys made from the CLI; ``Started`` writes the file at
  once, so the collector sees it before the first deploy.

A sink never raises into the agent: a failed write is logged once (and once more when
writing works again), and the counters keep counting in memory.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from twilight_agent.adapters.atomicfile import atomic_write
from twilight_agent.core.events import (
    DeployFinished,
    Event,
    HaltedAlert,
    PhaseChanged,
    Polled,
    RegistryFailed,
    Started,
    Totals,
)
from twilight_agent.core.outcomes import Outcome
from twilight_agent.logs import get_logger

log = get_logger("twilight.metrics")

POLL_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_SEEN_ROLLBACKS = 64  # deploy ids remembered so one rollback is counted once


def _epoch(value: str | None) -> float | None:
    """An ISO-8601 time (``2026-11-22T03:00:00Z``) -> Unix time."""
    if not value:
        return None
    try:
        return dt.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


class MetricsFile:
    """``EventSink`` keeping Prometheus metrics in its own registry, written to ``path``."""

    def __init__(self, path: Path, clock: Any = time.time) -> None:
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
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.deploys = Counter("twilight_deploys", "Finished deploys by outcome.",
                               ["outcome"], registry=r)
        self.rollbacks = Counter("twilight_rollbacks", "Rollbacks started.", registry=r)
        self.last_success = Gauge("twilight_last_success_timestamp_seconds",
                                  "Unix time of the last deploy that passed its health gate.",
                                  registry=r)
        self.revision = Gauge("twilight_current_revision_info",
                              "The version serving now (value is always 1).",
                              ["tag", "digest", "revision"], registry=r)
        self.registry_errors = Counter("twilight_registry_errors",
                                       "Registry polls that failed.", registry=r)
        self.poll_duration = Histogram("twilight_poll_duration_seconds",
                                       "Time one registry poll took.", buckets=POLL_BUCKETS,
                                       registry=r)
        self.halted = Gauge("twilight_halted",
                            "1 when a rollback failed and an operator is needed.", registry=r)

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
            if event.phase != "ROLLBACK":
                return False
            self._rollback(event.ref.deploy_id)
        elif isinstance(event, HaltedAlert):
            self.halted.set(1)
        elif isinstance(event, RegistryFailed):
            self.registry_errors.inc()
        elif isinstance(event, Polled):
            if event.duration_s is not None:
                self.poll_duration.observe(event.duration_s)
            self._catch_up(event.totals)
        elif isinstance(event, Started):
            self._catch_up(event.totals)
        else:
            return False
        return True

    def _catch_up(self, totals: Totals) -> None:
        """Bring the counters and gauges up to what the state store says."""
        for outcome, n in totals.deploys.items():
            missing = n - self._counted.get(outcome, 0)
            if missing > 0:
                self.deploys.labels(outcome=outcome).inc(missing)
                self._counted[outcome] = n
        # Each rolled-back or halted deploy went through ROLLBACK once.
        started = sum(n for o, n in totals.deploys.items() if o in ("rolled_back", "halted"))
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
        self.halted.set(1 if totals.halted else 0)

    def _finished(self, event: DeployFinished) -> None:
        outcome = event.outcome.value
        self.deploys.labels(outcome=outcome).inc()
        self._counted[outcome] = self._counted.get(outcome, 0) + 1
        to, from_ = event.ref.to, event.ref.from_
        if event.outcome is Outcome.DEPLOYED:
            self._last_success = float(self._clock())
            self.last_success.set(self._last_success)
            if to is not None:
                self._serving(to.tag, str(to.digest), to.revision or "")
            self.halted.set(0)
        elif event.outcome is Outcome.ROLLED_BACK:
            if from_ is not None:
                self._serving(from_.tag, str(from_.digest), from_.revision or "")
            self.halted.set(0)
        elif event.outcome is Outcome.HALTED:
            self.halted.set(1)

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
