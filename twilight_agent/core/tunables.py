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
    # The longest one health probe may take (a shorter TWILIGHT_HEALTH_INTERVAL wins), and
    # how long a signal-killed container is looked at before a verdict (it may be dockerd
    # stopping it, not the app failing).
    probe_timeout_cap_s: float = 5.0
    signal_grace_s: float = 2.0
    # The daemon's loop: how often it looks at the signal flags; the share of the poll
    # interval added at random, so hosts do not poll in step.
    loop_tick_s: float = 0.2
    poll_jitter: float = 0.1
    # Swarm: how often ``settle`` reads the update status, and the time allowed per batch
    # of tasks beyond swarm's monitor and delay (pull, start, stop grace).
    swarm_settle_tick_s: float = 0.5
    swarm_boot_allowance_s: float = 120.0
    # a swarm update still for a batch's pause plus this, with tasks on a node that is
    # down: stalled on the lost node (swarm would wait for the node)
    swarm_stall_grace_s: float = 10.0
    # One registry operation (resolve or check: all requests, retries and reads).
    registry_operation_s: float = 120.0
    # The engine's stop timeout when the container names none (docker's own default).
    stop_timeout_s: int = 10
    # ``ip neigh replace`` and ``docker compose config --hash``: how long each may run.
    ip_timeout_s: float = 2.0
    compose_timeout_s: float = 60.0
    # Failed container's log lines kept in the history row, and their size cap.
    log_lines: int = 50
    log_tail_chars: int = 8000
    # Webhook delivery: attempts, backoff between them, per-request timeout.
    webhook_attempts: int = 3
    webhook_backoff_s: tuple[float, ...] = (1.0, 2.0)
    webhook_timeout_s: float = 5.0
    # A delivery thread (webhook, Apprise) ends after this long without a message; it
    # waits out a backoff in steps this long, so that closing the sink cuts it short.
    delivery_idle_s: float = 60.0
    delivery_stop_tick_s: float = 0.1


DEFAULT = Tunables()
