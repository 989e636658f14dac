"""Metrics without a port: Prometheus text format written to a file after every event.

node_exporter's textfile collector (``--collector.textfile.directory``) picks the file up,
so the host opens nothing. The file is rewritten atomically (``generate_latest`` into a
temporary file in the same directory, then a rename), so the collector never reads half a
file; it is world-readable whatever the umask (the unit sets ``UMask=0077``) so
node_exporter, running as another user, can read it. Off when
``TWILIGHT_METRICS_FILE`` is empty: ``build_sinks`` then does not create this sink.

Events read (``core/ports.py`` ``EventSink``) and what they change:

- ``deploy_finished``: ``twilight_deploys_total{outcome}``; ``outcome=deployed`` sets
  ``twilight_last_success_timestamp_seconds`` and ``twilight_current_revision_info`` from
  ``to_tag``/``to_digest``/``revision`` (or ``to``/``digest``), clears ``twilight_halted``;
  ``rolled_back`` points the revision info at ``from`` and clears ``twilight_halted``;
  ``halted`` sets it.
- ``rollback``, or ``phase`` with ``phase=ROLLBACK``: ``twilight_rollbacks_total``, once
  per ``deploy_id`` whichever of the two arrives.
- ``halted``: ``twilight_halted`` = 1.
- ``registry_error``: ``twilight_registry_errors_total``.
- ``poll`` with ``duration_s``: ``twilight_poll_duration_seconds`` (histogram).
- ``started`` (the daemon and the CLI, before anything else) and ``poll`` with ``totals``
  (what the state store says: ``deploys`` by outcome, ``last_success``, ``current``,
  ``halted``): the counters catch up with the history (never down), so a fresh process
  starts from the host's totals and the daemon's file counts deploys made from the CLI;
  ``started`` writes the file at once, so the collector sees it before the first deploy.

A sink never raises into the agent: a failed write is logged once (and once more when
writing works again), and the counters keep counting in memory.
"""

from __future__ import annotations

import datetime as dt
import os
import threading
import time
from collections import deque
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from twilight_agent.logs import get_logger

log = get_logger("twilight.metrics")

POLL_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_SEEN_ROLLBACKS = 64  # deploy ids remembered so one rollback is counted once


def _tag_digest(value: Any) -> tuple[str, str]:
    """``{tag, digest}``, ``"tag@digest"`` or a bare tag -> ``(tag, digest)``."""
    if isinstance(value, Mapping):
        return str(value.get("tag") or ""), str(value.get("digest") or "")
    if isinstance(value, str) and "@" in value:
        tag, _, digest = value.partition("@")
        return tag, digest
    return (str(value) if value else ""), ""


def _epoch(value: Any) -> float | None:
    """An ISO-8601 time (``2026-11-22T03:00:00Z``) or a number -> Unix time."""
    if isinstance(value, (int, float)):
        return float(value)
    if not isinstance(value, str) or not value:
        return None
    try:
        return dt.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def side(fields: Mapping[str, Any], which: str) -> tuple[str, str]:
    """Tag and digest of the ``from`` or ``to`` side of an event, whatever shape it has.

    Explicit ``<which>_tag``/``<which>_digest`` win; ``digest`` alone means the target.
    """
    tag, digest = _tag_digest(fields.get(which))
    tag = str(fields.get(f"{which}_tag") or tag)
    digest = str(fields.get(f"{which}_digest") or digest)
    if which == "to" and fields.get("digest"):
        digest = str(fields["digest"])
    return tag, digest


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
    def emit(self, event: str, fields: Mapping[str, Any]) -> None:
        try:
            with self._lock:
                if self._apply(event, fields):
                    self._write()
        except Exception as exc:  # a sink never raises into the agent
            self._report(exc)

    def write(self) -> None:
        """Write the file now (e.g. at start-up, so the collector sees zeros)."""
        self.emit("_write", {})

    # -- internals --------------------------------------------------------------------
    def _apply(self, event: str, fields: Mapping[str, Any]) -> bool:
        """Update the metrics; True when the file must be rewritten."""
        if event == "deploy_finished":
            self._finished(str(fields.get("outcome") or "unknown"), fields)
        elif event == "rollback" or (event == "phase" and fields.get("phase") == "ROLLBACK"):
            self._rollback(fields)
        elif event == "halted":
            self.halted.set(1)
        elif event == "registry_error":
            self.registry_errors.inc()
        elif event == "poll":
            duration, totals = fields.get("duration_s"), fields.get("totals")
            if duration is None and totals is None:
                return False
            if duration is not None:
                self.poll_duration.observe(float(duration))
            self._catch_up(totals)
        elif event == "started":
            self._catch_up(fields.get("totals"))
        elif event != "_write":
            return False
        return True

    def _catch_up(self, totals: Any) -> None:
        """Bring the counters and gauges up to what the state store says."""
        if not isinstance(totals, Mapping):
            return
        for outcome, n in dict(totals.get("deploys") or {}).items():
            missing = int(n) - self._counted.get(outcome, 0)
            if missing > 0:
                self.deploys.labels(outcome=outcome).inc(missing)
                self._counted[outcome] = int(n)
        # Each rolled-back or halted deploy went through ROLLBACK once.
        started = sum(int(n) for o, n in dict(totals.get("deploys") or {}).items()
                      if o in ("rolled_back", "halted"))
        if started > self._rollbacks_counted:
            self.rollbacks.inc(started - self._rollbacks_counted)
            self._rollbacks_counted = started
        success = _epoch(totals.get("last_success"))
        if success is not None and success > self._last_success:
            self.last_success.set(success)
            self._last_success = success
        tag, digest = _tag_digest(totals.get("current"))
        if digest and digest != self._serving_digest:
            self._serving(tag, digest, "")
        self.halted.set(1 if totals.get("halted") else 0)

    def _finished(self, outcome: str, fields: Mapping[str, Any]) -> None:
        self.deploys.labels(outcome=outcome).inc()
        self._counted[outcome] = self._counted.get(outcome, 0) + 1
        if outcome == "deployed":
            ts = fields.get("timestamp")
            self._last_success = float(ts if isinstance(ts, (int, float)) else self._clock())
            self.last_success.set(self._last_success)
            self._serving(*side(fields, "to"), str(fields.get("revision") or ""))
            self.halted.set(0)
        elif outcome == "rolled_back":
            tag, digest = side(fields, "from")
            if tag or digest:
                self._serving(tag, digest, str(fields.get("from_revision") or ""))
            self.halted.set(0)
        elif outcome == "halted":
            self.halted.set(1)

    def _rollback(self, fields: Mapping[str, Any]) -> None:
        deploy_id = str(fields.get("deploy_id") or "")
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
        data = generate_latest(self.registry)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")  # not *.prom
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            with os.fdopen(fd, "wb") as f:
                os.fchmod(f.fileno(), 0o644)  # whatever the umask
                f.write(data)
            os.replace(tmp, self.path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        if self._failing:
            self._failing = False
            log.info("metrics_recovered", path=str(self.path))

    def _report(self, exc: Exception) -> None:
        if not self._failing:
            self._failing = True
            log.warning("metrics_failed", path=str(self.path),
                        error=f"{type(exc).__name__}: {exc}")
