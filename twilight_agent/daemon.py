"""The daemon: poll on a schedule, reload on SIGHUP, stop gracefully, keep systemd informed.

Threads: the main thread runs ``Daemon.run``'s loop; APScheduler runs the poll job in its
single worker. Signal handlers only set flags (uvicorn's ``handle_exit``); the loop acts
on them every ``Tunables.loop_tick_s`` seconds:

- SIGHUP: re-read the config file. Invalid -> one ``reload_refused`` line, old settings
  keep running. Changed -> a new agent from the new settings and a poll right away (a new
  pin is deployed through the same gate and health check; an empty pin follows the track).
- SIGTERM/SIGINT: stop scheduling, ask the agent to stop (the deploy in flight finishes or
  undoes its phase), wait for it up to ``Tunables.stop_grace_s`` seconds, exit 0.
- WATCHDOG=1 every WatchdogSec/2 from the loop, as long as the cycle in flight moves: the
  run reports progress to the daemon's ``Heartbeat`` (core/progress.py: pull bytes, a
  swarm task's state, the health gate's and the watch's looks, each step the machine
  begins). A cycle with no progress for ``TWILIGHT_STALL`` (plus what its step said it may
  be quiet for) stops the pings, so systemd restarts the agent and recovery runs.
"""

from __future__ import annotations

import datetime as dt
import logging
import signal
import threading
from collections.abc import Callable
from typing import Any, Protocol

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.interval import IntervalTrigger

from twilight_agent.adapters.notify.targets import Notifier
from twilight_agent.core.clock import SYSTEM, Clock
from twilight_agent.core.outcomes import Outcome
from twilight_agent.core.progress import Heartbeat
from twilight_agent.core.tunables import DEFAULT, Tunables
from twilight_agent.errors import TwilightError
from twilight_agent.logs import get_logger
from twilight_agent.settings import Settings

log = get_logger("twilight.daemon")

JOB_ID = "poll"
# A cycle is logged when its outcome differs from the last one (not once per poll while
# the registry is down), and always when it changed what runs.
LOUD_OUTCOMES = frozenset(o for o in Outcome if o.changed_service)


class AgentLike(Protocol):
    """What the daemon needs from the agent (``app.build_agent`` builds the real one)."""

    def recover(self) -> None: ...

    def poll_once(self) -> Any: ...

    def request_stop(self) -> None: ...

    def status(self) -> dict[str, Any]: ...


AgentFactory = Callable[[Settings], AgentLike]
SettingsLoader = Callable[[], Settings]


class Daemon:
    """One agent on a schedule. Cheap to construct; ``run()`` does the work."""

    def __init__(self, settings: Settings, *, agent_factory: AgentFactory,
                 load: SettingsLoader, notifier: Notifier | None = None,
                 scheduler: BackgroundScheduler | None = None, clock: Clock = SYSTEM,
                 tunables: Tunables = DEFAULT, tick: float = DEFAULT.loop_tick_s) -> None:
        self.settings = settings
        self.agent: AgentLike | None = None
        self.last_report: Any = None
        self.should_exit = False
        self.force_exit = False
        self.reload_requested = False
        self.stop_timed_out = False
        self._factory = agent_factory
        self._load = load
        self._notify = notifier or Notifier(None)
        self._scheduler = scheduler or BackgroundScheduler(timezone=dt.timezone.utc)
        self._clock, self._sleep = clock.now, clock.sleep
        self._tunables, self._tick = tunables, tick
        self._busy_since: float | None = None
        self._heartbeat = Heartbeat(self._clock)
        self._lock = threading.Lock()
        self._kick = False
        self._needs_recover = False
        self._last_ping = float("-inf")
        self._stuck_logged = False
        self._signal: int | None = None

    # ------------------------------------------------------------------ signals
    def install_signal_handlers(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self.handle_exit)
        signal.signal(signal.SIGHUP, self.handle_reload)

    def handle_exit(self, sig: int, frame: object = None) -> None:
        if self.should_exit and sig == signal.SIGINT:
            self.force_exit = True  # a second Ctrl-C: stop waiting for the deploy
        self.should_exit = True
        self._signal = sig

    def handle_reload(self, sig: int, frame: object = None) -> None:
        self.reload_requested = True

    # ------------------------------------------------------------------ lifecycle
    def run(self) -> int:
        """Recover, schedule, serve until a stop signal; 0 when stopped cleanly."""
        self.start()
        while not self.should_exit:
            self.tick()
            self._sleep(self._tick)
        return self.shutdown()

    def start(self) -> None:
        self.agent = self._factory(self.settings)
        self._attach(self.agent)
        self._recover(self.agent)
        _announce(self.agent)
        logging.getLogger("apscheduler").setLevel(logging.ERROR)
        self._scheduler.add_job(self._cycle, self._trigger(), id=JOB_ID, max_instances=1,
                                coalesce=True, misfire_grace_time=None,
                                next_run_time=dt.datetime.now(dt.timezone.utc))
        self._scheduler.start()
        log.info("daemon_started", image=self.settings.image, **self._mode(self.settings),
                 poll_interval_s=self.settings.poll_interval)
        self._notify.ready(self.status_text())

    def tick(self) -> None:
        """One turn of the main loop: act on a reload request, a pending kick, the watchdog."""
        if self.reload_requested:
            self.reload_requested = False
            self.reload()
        if self._kick and not self.busy:
            self._kick = False
            self._scheduler.modify_job(JOB_ID, next_run_time=dt.datetime.now(dt.timezone.utc))
        self._watchdog()

    def shutdown(self) -> int:
        busy = self.busy
        log.info("daemon_stopping", signal=_signame(self._signal), deploy_in_flight=busy)
        self._notify.stopping("stopping: finishing the deploy in flight" if busy else "stopping")
        if self._scheduler.get_job(JOB_ID) is not None:
            self._scheduler.remove_job(JOB_ID)
        if self.agent is not None:
            self.agent.request_stop()
        clean = self._wait_idle(self._tunables.stop_grace_s)
        self._scheduler.shutdown(wait=clean)  # a run submitted just before the removal
        if not clean:
            self.stop_timed_out = True
            log.error("daemon_stop_timeout", waited_s=self._tunables.stop_grace_s,
                      forced=self.force_exit)
            return 1
        log.info("daemon_stopped")
        return 0

    # ------------------------------------------------------------------ reload
    def reload(self) -> None:
        """Re-read the config; refuse an invalid one; rebuild the agent when it changed."""
        self._notify.reloading("reloading configuration")
        try:
            new = self._load()
            changed = _changed(self.settings, new)
            agent = self._factory(new) if changed else None
        except TwilightError as exc:
            log.error("reload_refused", error=str(exc), kept="previous settings")
            self._notify.ready(f"{self.status_text()} (reload refused: {exc})")
            return
        if agent is not None:
            self._swap(new, agent, changed)
        else:
            log.info("reload", changed=[])
        self._notify.ready(self.status_text())

    def _swap(self, new: Settings, agent: AgentLike, changed: list[str]) -> None:
        old_settings, old_agent = self.settings, self.agent
        self.settings, self.agent = new, agent
        self._attach(agent)
        _announce(agent)  # new sinks (e.g. a new metrics file) start from the totals
        if new.poll_interval != old_settings.poll_interval:
            self._scheduler.reschedule_job(JOB_ID, trigger=self._trigger())
        log.info("reload", changed=changed, **self._mode(new))
        if "pin" in changed:
            log.info("pin_changed" if new.pin else "unpinned", pin=new.pin or None,
                     previous_pin=old_settings.pin or None, track=new.track)
        self.last_report = None
        self._kick = True  # apply the new settings now, not at the next tick of the interval
        close = getattr(old_agent, "close", None)
        if callable(close) and not self.busy:
            close()

    # ------------------------------------------------------------------ the cycle
    def _cycle(self) -> None:
        """The scheduled job: one poll of the agent. Never raises into APScheduler."""
        with self._lock:
            self._busy_since = self._clock()
            self._stuck_logged = False
        self._heartbeat.beat("poll")
        agent = self.agent
        try:
            if agent is None:
                return
            if self._needs_recover:
                self._recover(agent)
            if not self._needs_recover:
                self._record(agent.poll_once())
        except TwilightError as exc:
            log.error("cycle_failed", error=str(exc), exit_code=exc.exit_code)
        except Exception:  # a bug: log it, keep the daemon alive for the next poll
            log.exception("cycle_crashed")
        finally:
            with self._lock:
                self._busy_since = None

    def _recover(self, agent: AgentLike) -> None:
        try:
            agent.recover()
            self._needs_recover = False
        except TwilightError as exc:
            self._needs_recover = True
            log.error("recover_failed", error=str(exc), retry="next poll")

    def _record(self, report: Any) -> None:
        previous = getattr(self.last_report, "outcome", None)
        self.last_report = report
        outcome = getattr(report, "outcome", None)
        if outcome != previous or outcome in LOUD_OUTCOMES:
            log.info("cycle", outcome=outcome, deploy_id=getattr(report, "deploy_id", None),
                     reason=getattr(report, "reason", None))
        if not self.should_exit:  # while stopping, STATUS keeps saying so
            self._notify.status(self.status_text())

    # ------------------------------------------------------------------ helpers
    @property
    def busy(self) -> bool:
        with self._lock:
            return self._busy_since is not None

    def status_text(self) -> str:
        """The STATUS= line: the agent's own summary, else what the daemon is set to do."""
        if self._needs_recover:
            return "recovery pending (see the journal)"
        line = getattr(self.last_report, "status_line", None)
        if line:
            return str(line)
        s = self.settings
        return f"pinned to {s.pin}" if s.pin else f"following {s.track}"

    @staticmethod
    def _mode(s: Settings) -> dict[str, Any]:
        return {"pin": s.pin} if s.pin else {"track": s.track}

    def _trigger(self) -> IntervalTrigger:
        interval = self.settings.poll_interval
        return IntervalTrigger(seconds=interval, jitter=interval * self._tunables.poll_jitter,
                               timezone=dt.timezone.utc)

    def _watchdog(self) -> None:
        interval = self._notify.watchdog_interval
        now = self._clock()
        if not interval or now - self._last_ping < interval:
            return
        if self._stuck(now):
            return
        self._notify.watchdog()
        self._last_ping = now

    def _stuck(self, now: float) -> bool:
        """A cycle that stopped moving: let the watchdog fire. Once stuck, a cycle stays
        stuck (systemd restarts the agent within WatchdogSec)."""
        with self._lock:
            since, logged = self._busy_since, self._stuck_logged
        if since is None:
            return False
        if logged:
            return True
        stall = self._heartbeat.stalled(self.settings.stall)
        if stall is None:
            return False
        with self._lock:
            self._stuck_logged = True
        log.error("cycle_stuck", stalled=stall.what, quiet_s=stall.quiet_s,
                  limit_s=stall.limit_s, running_s=round(now - since, 1),
                  action="watchdog pings stopped; systemd will restart")
        return True

    def _attach(self, agent: AgentLike) -> None:
        """The agent's runs report progress to this daemon's heartbeat (optional for an
        ``AgentLike``: one without ``set_heartbeat`` is judged by its cycle's start)."""
        attach = getattr(agent, "set_heartbeat", None)
        if callable(attach):
            attach(self._heartbeat.beat)

    def _wait_idle(self, timeout: float) -> bool:
        deadline = self._clock() + timeout
        while self.busy:
            if self.force_exit or self._clock() >= deadline:
                return False
            self._watchdog()
            self._sleep(self._tick)
        return True


def _announce(agent: AgentLike) -> None:
    """``Agent.announce()``: the sinks learn where things stand (the metrics file is written
    at start-up). Optional for an ``AgentLike``; a failure never stops the daemon."""
    announce = getattr(agent, "announce", None)
    if not callable(announce):
        return
    try:
        announce()
    except Exception:  # a state store that cannot be read now: the first poll catches up
        log.exception("announce_failed")


def _changed(old: Settings, new: Settings) -> list[str]:
    a, b = old.model_dump(), new.model_dump()
    return sorted(k for k in a if a[k] != b.get(k))


def _signame(sig: int | None) -> str | None:
    return signal.Signals(sig).name if sig is not None else None
