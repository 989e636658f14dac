"""The daemon's wiring with a fake agent: scheduler, signals, reload, stop, watchdog.

Signals are real (``os.kill`` on this process from a helper thread while ``run()`` holds
the main thread, as under systemd); the engine is a fake that records what it was asked.
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import structlog
from apscheduler.schedulers.background import BackgroundScheduler

from twilight_agent import cli
from twilight_agent.adapters.notify.targets import Notifier
from twilight_agent.commands.service import PIDFILE
from twilight_agent.core.tunables import Tunables
from twilight_agent.daemon import JOB_ID, Daemon
from twilight_agent.errors import ConfigError, DockerUnavailable
from twilight_agent.settings import Settings, load_settings

IMAGE = "127.0.0.1:5000/bed/daemon/app"


def settings(**kw: Any) -> Settings:
    values: dict[str, Any] = {"image": IMAGE, "container": "app", "poll_interval": 60, **kw}
    return Settings(**values)


@dataclass
class Report:
    outcome: str
    exit_code: int = 0
    deploy_id: str | None = None
    reason: str = ""
    status_line: str = ""


class FakeAgent:
    """Records calls; ``hold`` makes poll_once block (a deploy in flight) until released."""

    def __init__(self, s: Settings, hold: bool = False, honour_stop: bool = True) -> None:
        self.settings = s
        self.polls = 0
        self.recovered = 0
        self.stop_requested = False
        self.recover_error: Exception | None = None
        self.poll_error: Exception | None = None
        self.in_flight = threading.Event()
        self.release = threading.Event()
        self.hold, self.honour_stop = hold, honour_stop
        self.finished = threading.Event()
        self.progress: Callable[..., None] | None = None

    def recover(self) -> None:
        self.recovered += 1
        if self.recover_error is not None:
            raise self.recover_error

    def poll_once(self) -> Report:
        self.polls += 1
        if self.poll_error is not None:
            raise self.poll_error
        if self.hold:
            self.in_flight.set()
            self.release.wait(10)
            self.finished.set()
            return Report("rolled_back", 1, "d-1", "stopped", "following main (rolled back)")
        tag = self.settings.pin or "sha-1234567"
        return Report("up_to_date", status_line=f"{self.mode()} at {tag}")

    def mode(self) -> str:
        return f"pinned to {self.settings.pin}" if self.settings.pin else "following main"

    def set_heartbeat(self, progress: Callable[..., None]) -> None:
        self.progress = progress

    def request_stop(self) -> None:
        self.stop_requested = True
        if self.honour_stop:
            self.release.set()

    def status(self) -> dict[str, Any]:
        return {}


class RecordingNotifier(Notifier):
    def __init__(self, watchdog_usec: int | None = None) -> None:
        super().__init__("/unused", watchdog_usec)
        self.sent: list[dict[str, object]] = []

    def send(self, **fields: object) -> bool:
        self.sent.append(fields)
        return True

    def kinds(self) -> list[str]:
        return [next(iter(f)) for f in self.sent if "status" not in f or len(f) > 1]


class Harness:
    def __init__(self, s: Settings, **agent_kw: Any) -> None:
        self.agents: list[FakeAgent] = []
        self.next_settings: Settings | Exception = s
        self.notifier = RecordingNotifier()
        self.agent_kw = agent_kw

    def factory(self, s: Settings) -> FakeAgent:
        agent = FakeAgent(s, **(self.agent_kw if not self.agents else {}))
        self.agents.append(agent)
        return agent

    def load(self) -> Settings:
        if isinstance(self.next_settings, Exception):
            raise self.next_settings
        return self.next_settings

    def daemon(self, s: Settings, **kw: Any) -> Daemon:
        return Daemon(s, agent_factory=self.factory, load=self.load, notifier=self.notifier,
                      tick=0.02, **kw)


@pytest.fixture
def signals() -> Iterator[None]:
    """Restore the test process's own signal handlers afterwards."""
    saved = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
    yield
    for s, handler in saved.items():
        signal.signal(s, handler)


def wait_for(cond: Callable[[], object], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met")
        time.sleep(0.01)


def run_with(daemon: Daemon, script: Callable[[], None]) -> int:
    """Run the daemon in the main thread while ``script`` drives it from another."""
    errors: list[BaseException] = []

    def driver() -> None:
        try:
            script()
        except BaseException as exc:
            errors.append(exc)
            os.kill(os.getpid(), signal.SIGTERM)

    daemon.install_signal_handlers()
    t = threading.Thread(target=driver)
    t.start()
    code = daemon.run()
    t.join(10)
    if errors:
        raise errors[0]
    return code


# --------------------------------------------------------------------------- scheduling
def test_start_recovers_schedules_then_says_ready() -> None:
    h = Harness(settings(poll_interval="2m"))
    sched = BackgroundScheduler(timezone=dt.timezone.utc)
    d = h.daemon(settings(poll_interval="2m"), scheduler=sched)
    d.start()
    try:
        job = sched.get_job(JOB_ID)
        assert job is not None
        assert job.trigger.interval == dt.timedelta(minutes=2)
        assert job.trigger.jitter == pytest.approx(12.0)  # 10% of the interval
        assert job.max_instances == 1 and job.coalesce is True
        wait_for(lambda: h.agents[0].polls == 1)  # the first poll runs at once
        assert h.agents[0].recovered == 1
        ready = [f for f in h.notifier.sent if "ready" in f]
        assert len(ready) == 1  # the first poll may already have set the status line
        assert ready[0]["status"] in ("following main", "following main at sha-1234567")
        wait_for(lambda: d.status_text() == "following main at sha-1234567")
    finally:
        sched.shutdown(wait=True)


def test_polls_repeat_on_the_interval_one_at_a_time(signals: None) -> None:
    h = Harness(settings(poll_interval=0.05))
    d = h.daemon(settings(poll_interval=0.05))

    def script() -> None:
        wait_for(lambda: h.agents and h.agents[0].polls >= 3)
        os.kill(os.getpid(), signal.SIGTERM)

    assert run_with(d, script) == 0
    kinds = h.notifier.kinds()
    assert kinds[0] == "ready" and kinds[-1] == "stopping"


# --------------------------------------------------------------------------- reload
def test_sighup_with_a_new_pin_deploys_it_now_and_stops_following(signals: None) -> None:
    h = Harness(settings())
    d = h.daemon(settings())

    def script() -> None:
        wait_for(lambda: h.agents and h.agents[0].polls == 1)
        h.next_settings = settings(pin="sha-abcdef0")
        os.kill(os.getpid(), signal.SIGHUP)
        # The poll interval is a minute: only the reload's kick can poll this soon.
        wait_for(lambda: len(h.agents) == 2 and h.agents[1].polls == 1)
        os.kill(os.getpid(), signal.SIGTERM)

    with structlog.testing.capture_logs() as logs:
        assert run_with(d, script) == 0
    assert h.agents[1].settings.pin == "sha-abcdef0"
    assert d.settings.pin == "sha-abcdef0"
    reload_at = next(i for i, f in enumerate(h.notifier.sent) if "reloading" in f)
    assert "monotonic_usec" in h.notifier.sent[reload_at]
    assert h.notifier.sent[reload_at + 1]["ready"] == 1
    assert {"status": "pinned to sha-abcdef0 at sha-abcdef0"} in h.notifier.sent
    events = {e["event"]: e for e in logs}
    assert events["reload"]["changed"] == ["pin"]
    assert events["pin_changed"]["pin"] == "sha-abcdef0"


def test_sighup_with_an_empty_pin_resumes_following(signals: None) -> None:
    h = Harness(settings(pin="sha-abcdef0"))
    d = h.daemon(settings(pin="sha-abcdef0"))

    def script() -> None:
        wait_for(lambda: h.agents and h.agents[0].polls == 1)
        h.next_settings = settings()
        os.kill(os.getpid(), signal.SIGHUP)
        wait_for(lambda: len(h.agents) == 2 and h.agents[1].polls == 1)
        os.kill(os.getpid(), signal.SIGTERM)

    with structlog.testing.capture_logs() as logs:
        run_with(d, script)
    assert d.settings.pin == ""
    assert any(e["event"] == "unpinned" for e in logs)
    assert h.notifier.sent[-2] == {"status": "following main at sha-1234567"}


def test_an_invalid_config_is_refused_and_the_old_settings_keep_running(
        signals: None) -> None:
    h = Harness(settings())
    d = h.daemon(settings())

    def script() -> None:
        wait_for(lambda: h.agents and h.agents[0].polls == 1)
        h.next_settings = ConfigError("TWILIGHT_POLL_INTERVAL: invalid duration 'soon'")
        os.kill(os.getpid(), signal.SIGHUP)
        wait_for(lambda: sum("ready" in f for f in h.notifier.sent) == 2)
        os.kill(os.getpid(), signal.SIGTERM)

    with structlog.testing.capture_logs() as logs:
        assert run_with(d, script) == 0
    refused = [e for e in logs if e["event"] == "reload_refused"]
    assert len(refused) == 1 and "soon" in refused[0]["error"]
    assert refused[0]["log_level"] == "error"
    assert len(h.agents) == 1 and d.settings == settings()
    ready_again = [f for f in h.notifier.sent if "ready" in f][1]
    assert "reload refused" in str(ready_again["status"])


def test_an_unchanged_config_keeps_the_agent(signals: None) -> None:
    h = Harness(settings())
    d = h.daemon(settings())

    def script() -> None:
        wait_for(lambda: h.agents and h.agents[0].polls == 1)
        os.kill(os.getpid(), signal.SIGHUP)
        wait_for(lambda: sum("ready" in f for f in h.notifier.sent) == 2)
        os.kill(os.getpid(), signal.SIGTERM)

    run_with(d, script)
    assert len(h.agents) == 1


def test_a_new_poll_interval_reschedules_the_job() -> None:
    h = Harness(settings())
    sched = BackgroundScheduler(timezone=dt.timezone.utc)
    d = h.daemon(settings(), scheduler=sched)
    d.start()
    try:
        h.next_settings = settings(poll_interval="5m")
        d.reload()
        job = sched.get_job(JOB_ID)
        assert job.trigger.interval == dt.timedelta(minutes=5)
        assert job.trigger.jitter == pytest.approx(30.0)
    finally:
        sched.shutdown(wait=True)


def test_the_kick_after_a_reload_waits_for_the_deploy_in_flight(signals: None) -> None:
    h = Harness(settings(), hold=True)
    d = h.daemon(settings())

    def script() -> None:
        wait_for(lambda: h.agents and h.agents[0].in_flight.is_set())
        h.next_settings = settings(pin="sha-abcdef0")
        os.kill(os.getpid(), signal.SIGHUP)
        wait_for(lambda: len(h.agents) == 2)
        time.sleep(0.1)
        assert h.agents[1].polls == 0  # not while the old agent deploys
        h.agents[0].release.set()
        wait_for(lambda: h.agents[1].polls == 1)
        os.kill(os.getpid(), signal.SIGTERM)

    assert run_with(d, script) == 0


# --------------------------------------------------------------------------- stop
def test_sigterm_during_a_deploy_lets_it_finish_or_undo_then_exits_0(signals: None) -> None:
    h = Harness(settings(), hold=True)
    d = h.daemon(settings())

    def script() -> None:
        wait_for(lambda: h.agents and h.agents[0].in_flight.is_set())
        os.kill(os.getpid(), signal.SIGTERM)

    with structlog.testing.capture_logs() as logs:
        assert run_with(d, script) == 0
    agent = h.agents[0]
    assert agent.stop_requested and agent.finished.is_set()
    assert agent.polls == 1  # nothing was scheduled after the stop
    stopping = next(e for e in logs if e["event"] == "daemon_stopping")
    assert stopping["signal"] == "SIGTERM" and stopping["deploy_in_flight"] is True
    assert h.notifier.sent[-1] == {"stopping": 1,
                                   "status": "stopping: finishing the deploy in flight"}


def test_sigint_stops_too(signals: None) -> None:
    h = Harness(settings())
    d = h.daemon(settings())

    def script() -> None:
        wait_for(lambda: h.agents and h.agents[0].polls == 1)
        os.kill(os.getpid(), signal.SIGINT)

    assert run_with(d, script) == 0


def test_a_deploy_that_does_not_stop_in_time_is_reported(signals: None) -> None:
    h = Harness(settings(), hold=True, honour_stop=False)
    d = h.daemon(settings(), tunables=Tunables(stop_grace_s=0.2))

    def script() -> None:
        wait_for(lambda: h.agents and h.agents[0].in_flight.is_set())
        os.kill(os.getpid(), signal.SIGTERM)

    with structlog.testing.capture_logs() as logs:
        code = run_with(d, script)
    h.agents[0].release.set()
    assert code == 1 and d.stop_timed_out
    assert any(e["event"] == "daemon_stop_timeout" for e in logs)


# --------------------------------------------------------------------------- cycle errors
def test_a_crashing_cycle_is_logged_and_the_next_poll_still_runs(signals: None) -> None:
    h = Harness(settings(poll_interval=0.05))
    d = h.daemon(settings(poll_interval=0.05))

    def script() -> None:
        wait_for(lambda: h.agents)
        h.agents[0].poll_error = ValueError("bug")
        wait_for(lambda: h.agents[0].polls >= 2)
        h.agents[0].poll_error = DockerUnavailable("engine gone")
        wait_for(lambda: h.agents[0].polls >= 4)
        os.kill(os.getpid(), signal.SIGTERM)

    with structlog.testing.capture_logs() as logs:
        assert run_with(d, script) == 0
    names = [e["event"] for e in logs]
    assert "cycle_crashed" in names and "cycle_failed" in names


def test_failed_recovery_keeps_the_daemon_up_and_retries_before_polling(
        signals: None) -> None:
    h = Harness(settings(poll_interval=0.05))
    d = h.daemon(settings(poll_interval=0.05))
    original = h.factory

    def factory(s: Settings) -> FakeAgent:
        agent = original(s)
        agent.recover_error = DockerUnavailable("engine not answering")
        return agent

    d._factory = factory

    def script() -> None:
        wait_for(lambda: h.agents and h.agents[0].recovered >= 2)
        wait_for(lambda: any("ready" in f for f in h.notifier.sent))
        assert h.agents[0].polls == 0  # never poll before recovery succeeded
        h.agents[0].recover_error = None
        wait_for(lambda: h.agents[0].polls >= 1)
        os.kill(os.getpid(), signal.SIGTERM)

    with structlog.testing.capture_logs() as logs:
        assert run_with(d, script) == 0
    assert h.notifier.sent[0] == {"ready": 1, "status": "recovery pending (see the journal)"}
    assert any(e["event"] == "recover_failed" for e in logs)


# --------------------------------------------------------------------------- watchdog
class Clock:
    """The daemon's ``Clock`` port; tests move ``t`` by hand."""

    def __init__(self) -> None:
        self.t = 1000.0

    def now(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


def test_watchdog_pings_at_half_the_watchdog_sec() -> None:
    clock = Clock()
    h = Harness(settings())
    h.notifier = RecordingNotifier(watchdog_usec=2_000_000)  # WatchdogSec=2s
    d = h.daemon(settings(), clock=clock)
    pings = lambda: sum("watchdog" in f for f in h.notifier.sent)  # noqa: E731
    d.tick()
    assert pings() == 1
    clock.t += 0.5
    d.tick()
    assert pings() == 1
    clock.t += 0.6
    d.tick()
    assert pings() == 2


def watched(clock: Clock, **kw: Any) -> tuple[Harness, Daemon, Callable[[], int]]:
    """A daemon under WatchdogSec=2s with a cycle in flight since ``clock.t``."""
    h = Harness(settings(**kw))
    h.notifier = RecordingNotifier(watchdog_usec=2_000_000)
    d = h.daemon(settings(**kw), clock=clock)
    d._busy_since = clock.t
    d._heartbeat.beat("poll")
    return h, d, lambda: sum("watchdog" in f for f in h.notifier.sent)


def test_work_that_moves_keeps_the_watchdog_fed_however_long_it_takes() -> None:
    clock = Clock()
    _, d, pings = watched(clock, stall=60, health_timeout=60, health_soak=10, watch=0)
    with structlog.testing.capture_logs() as logs:
        for i in range(200):  # 100 minutes of a pull whose bytes keep growing
            clock.t += 30
            d._heartbeat.beat(f"pull: 1 layers, {i / 10:.1f} MB so far")
            d.tick()
    assert pings() == 200
    assert not [e for e in logs if e["event"] == "cycle_stuck"]


def test_a_cycle_with_no_progress_for_the_bound_stops_the_pings_once() -> None:
    clock = Clock()
    h, d, pings = watched(clock, stall=60)
    d._heartbeat.beat("pull: 1 layers, 0.1 MB so far")
    clock.t += 59
    d.tick()
    assert pings() == 1
    clock.t += 2
    with structlog.testing.capture_logs() as logs:
        d.tick()
        d._heartbeat.beat("pull: 1 layers, 0.2 MB so far")  # too late: systemd restarts
        clock.t += 5
        d.tick()
    assert pings() == 1
    stuck = [e for e in logs if e["event"] == "cycle_stuck"]
    assert len(stuck) == 1
    assert stuck[0]["stalled"] == "pull: 1 layers, 0.1 MB so far"
    assert (stuck[0]["quiet_s"], stuck[0]["limit_s"]) == (61.0, 60.0)
    # the next cycle starts afresh
    d.agent = h.factory(d.settings)
    d._cycle()
    clock.t += 5
    d.tick()
    assert pings() == 2


def test_a_step_with_its_own_bound_may_be_quiet_that_much_longer() -> None:
    clock = Clock()
    _, d, pings = watched(clock, stall=60)
    d._heartbeat.beat("pre-deploy task", quiet_s=600)
    clock.t += 650
    d.tick()
    assert pings() == 1
    clock.t += 20
    with structlog.testing.capture_logs() as logs:
        d.tick()
    assert pings() == 1 and logs[0]["stalled"] == "pre-deploy task"


def test_the_daemon_hands_its_heartbeat_to_every_agent(signals: None) -> None:
    h = Harness(settings())
    d = h.daemon(settings())
    d.start()
    h.next_settings = settings(poll_interval=30)
    d.reload()
    d._scheduler.shutdown(wait=True)
    assert [a.progress for a in h.agents] == [d._heartbeat.beat] * 2


def test_no_watchdog_without_watchdog_sec() -> None:
    h = Harness(settings())
    d = h.daemon(settings())
    d.tick()
    assert h.notifier.sent == []


# --------------------------------------------------------------------------- pin / unpin
CONFIG = f"""# the agent's settings
TWILIGHT_IMAGE={IMAGE}
TWILIGHT_CONTAINER=app
TWILIGHT_PIN=
# keep me
"""


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "agent.env"
    path.write_text(CONFIG)
    path.chmod(0o640)
    monkeypatch.setenv("TWILIGHT_RUNTIME_DIRECTORY", str(tmp_path / "run"))
    monkeypatch.delenv("TWILIGHT_PIN", raising=False)
    return path


def test_pin_writes_the_file_keeping_the_rest_and_its_mode(
        config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--config", str(config), "pin", "sha-abcdef0"]) == 0
    text = config.read_text()
    assert "TWILIGHT_PIN=sha-abcdef0\n" in text and text.count("TWILIGHT_PIN") == 1
    assert "# keep me" in text and f"TWILIGHT_IMAGE={IMAGE}" in text
    assert stat.S_IMODE(config.stat().st_mode) == 0o640
    assert load_settings(config).pin == "sha-abcdef0"
    out = capsys.readouterr().out
    assert "pinned sha-abcdef0" in out
    assert "the daemon is not running" in out
    assert [p.name for p in config.parent.iterdir() if p.name.startswith(".")] == []


def test_unpin_empties_the_pin(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cli.main(["--config", str(config), "pin", "v1.4.2"])
    assert cli.main(["--config", str(config), "unpin"]) == 0
    assert load_settings(config).pin == ""
    assert "following main again" in capsys.readouterr().out


@pytest.mark.parametrize("tag", ["latest; rm -rf /", "sha-XYZ", "v1.2", ""])
def test_a_bad_tag_exits_2_and_leaves_the_file_untouched(
        config: Path, tag: str, capsys: pytest.CaptureFixture[str]) -> None:
    before = config.read_bytes(), config.stat().st_mtime_ns
    assert cli.main(["--config", str(config), "pin", tag]) == 2
    assert (config.read_bytes(), config.stat().st_mtime_ns) == before
    assert "refusing to pin" in capsys.readouterr().err


def test_pin_signals_the_daemon_named_in_the_pidfile(
        config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    flag, ready = tmp_path / "hup", tmp_path / "ready"
    child = subprocess.Popen([sys.executable, "-c", (
        "import pathlib, signal, time\n"
        f"signal.signal(signal.SIGHUP, lambda *a: pathlib.Path({str(flag)!r}).touch())\n"
        f"pathlib.Path({str(ready)!r}).touch()\n"
        "time.sleep(20)\n"), "twilight-agent", "run"])  # argv as the daemon's reads
    try:
        wait_for(ready.exists)
        (tmp_path / "run").mkdir()
        (tmp_path / "run" / PIDFILE).write_text(f"{child.pid}\n")
        assert cli.main(["--config", str(config), "pin", "sha-abcdef0"]) == 0
        wait_for(flag.exists)
        assert f"sent SIGHUP to pid {child.pid}" in capsys.readouterr().out
    finally:
        child.kill()
        child.wait()


def test_pin_never_signals_a_pid_that_is_not_the_daemon(
        config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A stale pidfile whose pid was reused by another program: no SIGHUP for it."""
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(20)"])
    try:
        (tmp_path / "run").mkdir()
        (tmp_path / "run" / PIDFILE).write_text(f"{child.pid}\n")
        assert cli.main(["--config", str(config), "pin", "sha-abcdef0"]) == 0
        assert "not a twilight-agent daemon" in capsys.readouterr().out
        time.sleep(0.2)
        assert child.poll() is None  # still running: SIGHUP would have killed it
    finally:
        child.kill()
        child.wait()


def test_a_stale_pidfile_is_not_signalled(config: Path, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / PIDFILE).write_text("999999999\n")
    assert cli.main(["--config", str(config), "unpin"]) == 0
    assert "the daemon is not running" in capsys.readouterr().out
