"""``check --json`` is a dry run of the deploy decision: for the same registry and store,
what it says is what ``deploy`` (and the daemon's poll, for a pin) then does."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import structlog

from tests.unit.fakes import REPO, FakeHealth, FakeRegistry, FakeRuntime, Sink, release
from twilight_agent import app
from twilight_agent.adapters.state.store import Store
from twilight_agent.agent import Agent
from twilight_agent.commands import check
from twilight_agent.core.history import HistoryRow
from twilight_agent.core.outcomes import Outcome
from twilight_agent.core.ports import Halt, Meta
from twilight_agent.settings import Settings

OLD, NEW, NEWER = release(1), release(2), release(3)
# What the check's decision promises the deploy will end in (with a healthy image).
PROMISE = {"deploy": Outcome.DEPLOYED, "up_to_date": Outcome.UP_TO_DATE,
           "pinned": Outcome.PINNED_CURRENT, "quarantined": Outcome.QUARANTINED,
           "halted": Outcome.QUARANTINED}


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    yield
    structlog.reset_defaults()


class Host:
    def __init__(self, tmp_path: Path, **settings: object) -> None:
        self.settings = Settings(image=REPO, container="app", state_dir=tmp_path / "state",
                                 **settings)
        self.registry = FakeRegistry(NEW)
        self.registry.tags[NEW.tag] = NEW
        self.runtime = FakeRuntime("app", OLD)
        self.store = Store(self.settings.state_dir)

    def agent(self, store: Store | None = None) -> Agent:
        return app.build_agent(self.settings, [Sink()], registry=self.registry,
                               runtime=self.runtime, health=FakeHealth(self.runtime),
                               store=store or self.store)

    def check_json(self) -> dict[str, object]:
        readonly = Store(self.settings.state_dir, readonly=True)
        report = check.gather(self.settings, build=lambda _: self.agent(readonly))
        return dict(json.loads(json.dumps(dataclasses.asdict(report))))


def quarantined(h: Host) -> None:
    h.store.quarantine(NEW.digest, NEW.tag, "health gate failed")


def halted(h: Host) -> None:
    h.store.finish(HistoryRow(id="d0", started="s", finished="f", outcome=Outcome.HALTED,
                              phase="HALTED"),
                   Meta(halted=Halt(NEW.digest, "previous version unhealthy too", "d0")))


def up_to_date(h: Host) -> None:
    h.registry.track = OLD


def newer_build(h: Host) -> None:
    h.registry.track = NEWER


SCENARIOS: list[tuple[str, Callable[[Host], None], str]] = [
    ("quarantined", quarantined, "quarantined"),
    ("halted", halted, "halted"),
    ("up to date", up_to_date, "up_to_date"),
    ("newer build", newer_build, "deploy"),
]


@pytest.mark.parametrize(("name", "arrange", "decision"), SCENARIOS,
                         ids=[s[0] for s in SCENARIOS])
def test_check_then_deploy_agree(tmp_path: Path, name: str,
                                 arrange: Callable[[Host], None], decision: str) -> None:
    h = Host(tmp_path)
    arrange(h)
    said = h.check_json()
    assert said["decision"] == decision, said
    report = h.agent().deploy(trigger="cli")
    assert report.outcome == PROMISE[decision], (name, said, report)
    assert said["candidate"]["digest"] == str(report.to.digest)  # type: ignore[index, union-attr]


def test_check_then_the_daemon_agree_on_a_pin(tmp_path: Path) -> None:
    h = Host(tmp_path, pin=OLD.tag)
    h.registry.tags[OLD.tag] = OLD
    h.registry.track = NEWER  # the track moved on; the pin wins
    said = h.check_json()
    assert said["decision"] == "pinned"
    assert h.agent().poll_once().outcome == PROMISE["pinned"]
    h.registry.tags[OLD.tag] = NEW  # the pinned tag moved (a re-push)
    said = h.check_json()
    assert said["decision"] == "deploy"
    assert h.agent().poll_once().outcome == Outcome.DEPLOYED
