"""Timing and size constants that are not operator settings, in one injectable object.

``Settings`` holds what an operator configures; ``Tunables`` holds what the code needs to
behave (how long to wait for an engine that went away, how long a stop may take). Tests
pass a ``Tunables`` with short values instead of patching module globals.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Tunables:
    """Defaults are the production values; docs/architecture.md says where each is used."""

    # An undo or commit step waits this long for an engine that went away (dockerd
    # restarting) before it leaves the step to start-up recovery, retrying every
    # ``engine_retry_s``.
    engine_wait_s: float = 60.0
    engine_retry_s: float = 1.0
    # SIGTERM: how long the daemon waits for the deploy in flight. Must stay below the
    # unit's TimeoutStopSec (120 s; tests/unit/test_structure.py reads both).
    stop_grace_s: float = 100.0
    # Start-first: how long the new container holds the network aliases beside the old one
    # before the old one stops (TWILIGHT_DRAIN adds to it): a proxy caches what the alias
    # resolves to (nginx ``resolver ... valid=1s``) and must see the new address first.
    alias_settle_s: float = 2.0
    # How often the health gate reads the container state.
    health_tick_s: float = 0.25
    # Failed container's log lines kept in the history row, and their size cap.
    log_lines: int = 50
    log_tail_chars: int = 8000
    # Webhook delivery: attempts, backoff between them, per-request timeout.
    webhook_attempts: int = 3
    webhook_backoff_s: tuple[float, ...] = (1.0, 2.0)
    webhook_timeout_s: float = 5.0


DEFAULT = Tunables()
