"""``twilight-agent check``: the decision (pure) and the command, with fakes for the ports."""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog

from twilight_agent.commands import check
from twilight_agent.core.models import Digest, Release
from twilight_agent.core.policy import check_verdict
from twilight_agent.core.ports import QuarantineEntry, Snapshot
from twilight_agent.errors import (
    DockerUnavailable,
    InvalidTag,
    RegistryAuthError,
    RegistryUnavailable,
    TargetNotFound,
)
from twilight_agent.settings import Settings


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """``check`` sets up logging to the (captured) stderr; give later tests the defaults."""
    yield
    structlog.reset_defaults()


OLD = Digest("sha256:" + "1" * 64)
NEW = Digest("sha256:" + "2" * 64)
IMAGE = "ghcr.io/lacatfly/twilight-drive"


@pytest.mark.parametrize(("running", "candidate", "quarantined", "pinned", "action"), [
    (OLD, NEW, set(), False, "deploy"),
    (None, NEW, set(), False, "deploy"),
    (NEW, NEW, set(), False, "up_to_date"),
    (NEW, NEW, set(), True, "pinned"),
    (OLD, NEW, {NEW}, False, "quarantined"),
    (OLD, NEW, {NEW}, True, "quarantined"),
    (OLD, NEW, set(), True, "deploy"),
    (OLD, None, set(), False, "registry_unreachable"),
])
def test_verdict(running, candidate, quarantined, pinned, action) -> None:
    got, reason = check_verdict(running, candidate, quarantined, pinned=pinned, source="main")
    assert got == action and reason and "\n" not in reason


class FakeRuntime:
    def __init__(self, digest: str | None = OLD, error: Exception | None = None) -> None:
        self.digest, self.error, self.closed = digest, error, False

    def find_target(self) -> str:
        if self.error:
            raise self.error
        return "c0ffee"

    def snapshot(self, cid: str) -> Snapshot:
        return Snapshot(cid, "web", "sha256:img", self.digest, "sha-1111111",
                        image_inspect={"Os": "linux", "Architecture": "arm64", "Variant": "v8"})

    def close(self) -> None:
        self.closed = True


class FakeStore:
    def __init__(self, digests: tuple[str, ...] = ()) -> None:
        self.digests = digests

    def quarantined(self) -> list[QuarantineEntry]:
        return [QuarantineEntry(d, None, "health", "2026-11-22T00:00:00Z") for d in self.digests]


class FakeRegistry:
    def __init__(self, digest: str = NEW, error: Exception | None = None) -> None:
        self.digest, self.error = digest, error
        self.calls: list[tuple[str, str]] = []
        self.platform: Any = None

    def __call__(self, settings: Settings, platform: Any) -> FakeRegistry:
        self.platform = platform
        return self

    def __enter__(self) -> FakeRegistry:
        return self

    def __exit__(self, *_: object) -> None:
        pass

    def _release(self, kind: str, ref: str) -> Release:
        self.calls.append((kind, ref))
        if self.error:
            raise self.error
        return Release("sha-2222222", Digest(self.digest), "2" * 40, "2026-11-22T03:00:00Z")

    def resolve_track(self, track: str) -> Release:
        return self._release("track", track)

    def resolve_tag(self, tag: str) -> Release:
        return self._release("tag", tag)


def _gather(tmp_path: Path, *, runtime=None, store=None, registry=None, **settings: Any):
    s = Settings(image=IMAGE, container="web", state_dir=tmp_path, **settings)
    registry = registry or FakeRegistry()
    report = check.gather(s, runtime=lambda _: runtime or FakeRuntime(),
                          store=lambda _: store or FakeStore(), registry=registry)
    return report, registry


def test_newer_build_on_the_track_would_be_deployed(tmp_path: Path) -> None:
    report, registry = _gather(tmp_path)
    assert (report.decision, report.exit_code, report.errors) == ("deploy", 0, [])
    assert report.running == {"container": "web", "tag": "sha-1111111", "digest": OLD}
    assert report.candidate["tag"] == "sha-2222222" and report.candidate["source"] == "track"
    assert registry.calls == [("track", "main")]
    assert registry.platform == ("linux", "arm64", "v8")  # the engine's, from the running image


def test_up_to_date(tmp_path: Path) -> None:
    report, _ = _gather(tmp_path, runtime=FakeRuntime(NEW))
    assert (report.decision, report.exit_code) == ("up_to_date", 0)


def test_quarantined_candidate(tmp_path: Path) -> None:
    report, _ = _gather(tmp_path, store=FakeStore((NEW,)))
    assert report.decision == "quarantined"


def test_pin_is_resolved_instead_of_the_track(tmp_path: Path) -> None:
    report, registry = _gather(tmp_path, runtime=FakeRuntime(NEW), pin="v1.2.3")
    assert registry.calls == [("tag", "v1.2.3")]
    assert report.decision == "pinned" and report.candidate["source"] == "pin"


@pytest.mark.parametrize(("error", "code"), [
    (RegistryUnavailable("GET /v2/: timed out after 4 attempts"), 5),
    (RegistryAuthError("token endpoint refused"), 2),
])
def test_registry_errors(tmp_path: Path, error: Exception, code: int) -> None:
    report, _ = _gather(tmp_path, registry=FakeRegistry(error=error))
    assert report.decision == "registry_unreachable" and report.exit_code == code
    assert report.candidate is None and str(error) in report.errors[0]


def test_invalid_pin_fails_like_bad_config(tmp_path: Path) -> None:
    with pytest.raises(InvalidTag):
        _gather(tmp_path, registry=FakeRegistry(error=InvalidTag("tag 'x;y' has characters")))


@pytest.mark.parametrize(("error", "code"), [
    (TargetNotFound("no container named web"), 2), (DockerUnavailable("no engine"), 5)])
def test_runtime_errors_leave_the_running_version_unknown(tmp_path: Path, error, code) -> None:
    report, registry = _gather(tmp_path, runtime=FakeRuntime(error=error))
    assert report.running is None and report.exit_code == code
    assert registry.platform == ("linux", "amd64")
    assert report.decision == "deploy" and "unknown" in report.errors[0]


def test_no_state_dir_means_no_quarantine_and_nothing_created(tmp_path: Path) -> None:
    missing = tmp_path / "state"
    s = Settings(image=IMAGE, container="web", state_dir=missing)
    report = check.gather(s, runtime=lambda _: FakeRuntime(),
                          store=lambda _: pytest.fail("store opened"), registry=FakeRegistry())
    assert report.decision == "deploy" and not missing.exists()


def test_cmd_check_prints_text_and_json(tmp_path: Path, monkeypatch, capsys) -> None:
    report, _ = _gather(tmp_path)
    monkeypatch.setattr(check, "gather", lambda s: report)
    s = Settings(image=IMAGE)
    assert check.cmd_check(s, argparse.Namespace(json=False)) == 0
    text = capsys.readouterr().out
    assert "running:   sha-1111111" in text and "candidate: sha-2222222" in text
    assert "decision:  deploy:" in text
    assert check.cmd_check(s, argparse.Namespace(json=True)) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["decision"] == "deploy" and doc["candidate"]["digest"] == NEW
    assert doc["running"]["digest"] == OLD
