"""Open file descriptors stay flat over many deploys in one agent: the agent's own file
handling (the sqlite store, the deploy lock, the env file, the metrics textfile, the
journal) opens and closes what it uses. Engine and registry are fakes here; the bench
(``python -m bench --only leaks``) measures the real clients and RSS over 1,000 deploys."""

from __future__ import annotations

import os
from pathlib import Path

from tests.unit.fakes import REPO, FakeHealth, FakeRegistry, FakeRuntime, release
from twilight_agent.adapters.state.store import Store
from twilight_agent.app import build_agent, build_sinks
from twilight_agent.settings import Settings

OLD, NEW = release(1), release(2)


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_open_fds_flat_over_50_deploys(tmp_path: Path) -> None:
    env = tmp_path / ".env"
    env.write_text(f"IMAGE_TAG={OLD.tag}\n")
    settings = Settings(image=REPO, container="app", state_dir=tmp_path / "state",
                        env_file=env, metrics_file=tmp_path / "agent.prom", watch=0,
                        health_soak=0)
    registry = FakeRegistry(NEW)
    registry.tags[OLD.tag] = OLD
    runtime = FakeRuntime("app", OLD)
    agent = build_agent(settings, build_sinks(settings), registry=registry, runtime=runtime,
                        health=FakeHealth(runtime), store=Store(settings.state_dir))
    try:
        counts = []
        for i in range(50):
            report = agent.deploy((NEW if i % 2 == 0 else OLD).tag)
            assert report.outcome == "deployed", report
            counts.append(open_fds())
        assert counts[-1] <= counts[9], counts  # after ten deploys' warm-up: no growth
        assert len(agent.store.history(100)) == 50
    finally:
        agent.close()
