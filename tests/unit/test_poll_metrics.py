"""Polls reach the metrics: ``poll`` with the registry time after every cycle, registry
errors counted on every failed poll (logged once per change), the metrics file written at
start-up, and a fresh process (a restart, ``twilight-agent deploy``) starting from the
host's totals instead of zero."""

from __future__ import annotations

import itertools
import time
from pathlib import Path
from typing import Any

import structlog
from prometheus_client.parser import text_string_to_metric_families

from tests.unit.fakes import REPO, FakeHealth, FakeRegistry, FakeRuntime, Sink, release
from twilight_agent.adapters.notify.metrics import MetricsFile
from twilight_agent.adapters.notify.targets import Notifier
from twilight_agent.adapters.state.store import Store
from twilight_agent.agent import Agent
from twilight_agent.app import build_agent
from twilight_agent.daemon import Daemon
from twilight_agent.settings import Settings

OLD, NEW, NEWER = release(1), release(2), release(3)


def metric(path: Path, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(path.read_text()):
        for s in family.samples:
            if s.name == name and s.labels == labels:
                return float(s.value)
    raise AssertionError(f"{name}{labels} not in {path}:\n{path.read_text()}")


class TickingClock:
    """The agent's ``Clock``: every look at it is 250 ms later; sleeping moves it on."""

    def __init__(self) -> None:
        self._ticks = itertools.count()
        self.t = 0.0

    def now(self) -> float:
        self.t = next(self._ticks) * 0.25
        return self.t

    def wall(self) -> float:
        return time.time()

    def sleep(self, seconds: float) -> None:
        pass


class Host:
    """One host's state dir, engine and registry; agents are processes over them."""

    def __init__(self, tmp_path: Path) -> None:
        self.settings = Settings(image=REPO, container="app", state_dir=tmp_path / "state")
        self.registry = FakeRegistry(NEW)
        self.runtime = FakeRuntime("app", OLD)
        self.health = FakeHealth(self.runtime)
        self.prom = tmp_path / "twilight.prom"
        self.clock = TickingClock()

    def agent(self, *sinks: Any) -> Agent:
        """A process of the agent on this host (its own store handle, its own sinks)."""
        return build_agent(self.settings, list(sinks), registry=self.registry,
                           runtime=self.runtime, health=self.health,
                           store=Store(self.settings.state_dir), clock=self.clock)


def test_every_poll_reports_its_registry_time_and_the_totals(tmp_path: Path) -> None:
    host = Host(tmp_path)
    sink = Sink()
    agent = host.agent(sink)
    assert agent.poll_once().outcome == "deployed"
    assert agent.poll_once().outcome == "up_to_date"

    polls = sink.named("poll")
    assert [p["outcome"] for p in polls] == ["deployed", "up_to_date"]
    assert all(p["duration_s"] == 0.25 for p in polls)  # the registry check, not the deploy
    assert polls[-1]["totals"]["deploys"] == {"deployed": 1}
    assert polls[-1]["totals"]["current"]["digest"] == str(NEW.digest)
    assert polls[-1]["totals"]["halted"] is False


def test_registry_errors_are_counted_every_poll_and_logged_once(tmp_path: Path) -> None:
    host = Host(tmp_path)
    sink = MetricsFile(host.prom)
    agent = host.agent(sink)
    host.registry.down = True
    with structlog.testing.capture_logs() as logs:
        for _ in range(3):
            assert agent.poll_once().outcome == "registry_error"
        host.registry.down = False
        agent.poll_once()
    assert metric(host.prom, "twilight_registry_errors_total") == 3
    assert metric(host.prom, "twilight_poll_duration_seconds_count") == 4
    events = [e["event"] for e in logs]
    assert events.count("registry_error") == 1
    assert "registry_recovered" in events


class IdleScheduler:
    """Accepts the daemon's job and never runs it: the test runs the cycle itself."""

    def add_job(self, *a: Any, **kw: Any) -> None: ...
    def start(self) -> None: ...
    def get_job(self, job_id: str) -> None: ...
    def shutdown(self, wait: bool = True) -> None: ...


def test_the_daemon_writes_the_metrics_file_at_start_up(tmp_path: Path) -> None:
    host = Host(tmp_path)
    host.agent().deploy()  # an earlier life of this host: one deploy in the history

    daemon = Daemon(host.settings, agent_factory=lambda s: host.agent(MetricsFile(host.prom)),
                    load=lambda: host.settings, notifier=Notifier(None),
                    scheduler=IdleScheduler())  # type: ignore[arg-type]
    daemon.start()
    # Before any poll: the file is there, with the host's totals, not zeros.
    assert metric(host.prom, "twilight_deploys_total", outcome="deployed") == 1
    assert metric(host.prom, "twilight_current_revision_info", tag=NEW.tag,
                  digest=str(NEW.digest), revision="") == 1
    assert metric(host.prom, "twilight_last_success_timestamp_seconds") > 1.7e9
    assert metric(host.prom, "twilight_poll_duration_seconds_count") == 0
    assert metric(host.prom, "twilight_halted") == 0

    daemon._cycle()  # the scheduled poll
    assert metric(host.prom, "twilight_poll_duration_seconds_count") == 1
    assert daemon.shutdown() == 0


def test_the_daemon_file_counts_a_deploy_made_from_the_cli(tmp_path: Path) -> None:
    host = Host(tmp_path)
    daemon_agent = host.agent(MetricsFile(host.prom))
    daemon_agent.announce()
    assert daemon_agent.poll_once().outcome == "deployed"

    # `twilight-agent deploy` is another process with its own sink on the same file.
    host.registry.track = NEWER
    cli = host.agent(MetricsFile(host.prom))
    cli.announce()
    assert cli.deploy().outcome == "deployed"
    assert metric(host.prom, "twilight_deploys_total", outcome="deployed") == 2

    # The daemon's next poll rewrites the file: the CLI's deploy is still counted.
    assert daemon_agent.poll_once().outcome == "up_to_date"
    assert metric(host.prom, "twilight_deploys_total", outcome="deployed") == 2
    assert metric(host.prom, "twilight_current_revision_info", tag=NEWER.tag,
                  digest=str(NEWER.digest), revision="") == 1
    assert metric(host.prom, "twilight_rollbacks_total") == 0
