"""``twilight-agent check``: a dry run of the deploy decision, over fakes of the ports."""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog

from tests.unit.fakes import REPO, FakeRegistry, FakeRuntime, release
from twilight_agent import app
from twilight_agent.adapters.registry.client import HttpRegistry
from twilight_agent.adapters.state.store import Store
from twilight_agent.commands import check
from twilight_agent.errors import (
    DockerUnavailable,
    RegistryAuthError,
    RegistryProtocolError,
    TargetNotFound,
)
from twilight_agent.settings import Settings

OLD, NEW = release(1), release(2)


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """``check`` sets up logging to the (captured) stderr; give later tests the defaults."""
    yield
    structlog.reset_defaults()


class Bed:
    def __init__(self, tmp_path: Path, running=OLD, track=NEW, **settings: Any) -> None:
        self.settings = Settings(image=REPO, container="app", state_dir=tmp_path / "state",
                                 **settings)
        self.registry = FakeRegistry(track)
        self.runtime = FakeRuntime("app", running)

    def gather(self) -> check.CheckReport:
        return check.gather(self.settings, build=lambda s: app.build_agent(
            s, registry=self.registry, runtime=self.runtime,
            store=app.build_store(s, readonly=True)))


def test_newer_build_on_the_track_would_be_deployed(tmp_path: Path) -> None:
    bed = Bed(tmp_path)
    report = bed.gather()
    assert (report.decision, report.exit_code, report.errors) == ("deploy", 0, [])
    assert report.running == {"container": "app", "kind": "container", "tag": OLD.tag,
                              "digest": OLD.digest}
    assert report.candidate["tag"] == NEW.tag and report.candidate["source"] == "track"
    assert bed.registry.calls == ["head", "resolve_track"]


def test_up_to_date(tmp_path: Path) -> None:
    report = Bed(tmp_path, running=NEW).gather()
    assert (report.decision, report.exit_code) == ("up_to_date", 0)


def test_quarantined_candidate(tmp_path: Path) -> None:
    bed = Bed(tmp_path)
    Store(bed.settings.state_dir).quarantine(NEW.digest, NEW.tag, "health")
    assert bed.gather().decision == "quarantined"


def test_pin_is_resolved_instead_of_the_track(tmp_path: Path) -> None:
    bed = Bed(tmp_path, running=NEW, pin=NEW.tag)
    bed.registry.track = OLD
    bed.registry.tags[NEW.tag] = NEW
    report = bed.gather()
    assert bed.registry.calls == ["resolve_tag"]
    assert report.decision == "pinned" and report.candidate["source"] == "pin"


def test_registry_unavailable_is_exit_5(tmp_path: Path) -> None:
    bed = Bed(tmp_path)
    bed.registry.down = True
    report = bed.gather()
    assert report.decision == "registry_unreachable" and report.exit_code == 5
    assert report.candidate is None and "refused" in report.errors[0]
    assert report.reason == "the registry gave no answer; nothing would change"


def test_registry_garbage_is_exit_5_and_not_called_no_answer(tmp_path: Path) -> None:
    bed = Bed(tmp_path)

    def garbage(track: str) -> Any:
        raise RegistryProtocolError("main: the registry sent no valid sha256 digest")

    bed.registry.track_digest = garbage  # type: ignore[method-assign]
    report = bed.gather()
    assert (report.decision, report.exit_code) == ("registry_unreachable", 5)
    assert report.reason == "the registry's answer was not usable; nothing would change"


def test_registry_refusing_credentials_is_exit_2(tmp_path: Path) -> None:
    bed = Bed(tmp_path)

    def refuse(track: str) -> Any:
        raise RegistryAuthError("token endpoint refused")

    bed.registry.track_digest = refuse  # type: ignore[method-assign]
    report = bed.gather()
    assert report.exit_code == 2 and "token endpoint refused" in report.errors[0]


@pytest.mark.parametrize(("error", "code"), [
    (TargetNotFound("no container named app"), 2), (DockerUnavailable("no engine"), 5)])
def test_runtime_errors_leave_the_running_version_unknown(tmp_path: Path, error, code) -> None:
    bed = Bed(tmp_path)
    bed.runtime.fail["find_target"] = error
    report = bed.gather()
    assert report.running is None and report.exit_code == code
    assert report.decision == "deploy" and "unknown" in report.errors[0]


def test_no_state_dir_means_no_quarantine_and_nothing_created(tmp_path: Path) -> None:
    bed = Bed(tmp_path)
    report = bed.gather()
    assert report.decision == "deploy" and not bed.settings.state_dir.exists()


def test_the_registry_asks_the_engine_for_its_platform_on_first_use(tmp_path: Path) -> None:
    asked: list[str] = []

    def platform() -> tuple[str, ...]:
        asked.append("engine")
        return ("linux", "arm64", "v8")

    reg = app.build_registry(Bed(tmp_path).settings, platform=platform)
    assert isinstance(reg, HttpRegistry) and asked == []  # a cheap constructor
    assert str(reg.platform) == "linux/arm64/v8" and asked == ["engine"]
    reg.close()


def test_cmd_check_prints_text_and_json(tmp_path: Path, monkeypatch, capsys) -> None:
    report = Bed(tmp_path).gather()
    monkeypatch.setattr(check, "gather", lambda s: report)
    s = Settings(image=REPO)
    assert check.cmd_check(s, argparse.Namespace(json=False)) == 0
    text = capsys.readouterr().out
    assert f"running:   {OLD.tag}" in text and f"candidate: {NEW.tag}" in text
    assert "decision:  deploy:" in text
    assert check.cmd_check(s, argparse.Namespace(json=True)) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["decision"] == "deploy" and doc["candidate"]["digest"] == NEW.digest
    assert doc["running"]["digest"] == OLD.digest
