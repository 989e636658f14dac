"""A deploy parses its candidate tag once (at the edge it came in by) and asks the registry
for the track's digest with one HEAD per new build: counted over the real registry adapter
(httpx's MockTransport and test_registry's ghcr.io look-alike)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.unit.fakes import FakeHealth, FakeRuntime, Sink, StepClock, release
from tests.unit.test_registry import BASE, REPO, FakeGhcr
from twilight_agent.adapters.registry.client import HttpRegistry
from twilight_agent.adapters.state.store import Store
from twilight_agent.app import build_agent
from twilight_agent.core.models import Tag
from twilight_agent.settings import Settings

REVISION = "abcdef0123456789abcdef0123456789abcdef01"
SHA_TAG = "sha-abcdef0"


@pytest.fixture
def parses(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    seen: list[str] = []
    real = Tag.parse.__func__  # type: ignore[attr-defined]

    def counting(cls: type[Tag], text: str, *a: Any, **kw: Any) -> Tag:
        seen.append(text)
        return real(cls, text, *a, **kw)  # type: ignore[no-any-return]

    monkeypatch.setattr(Tag, "parse", classmethod(counting))
    yield seen


def _agent(tmp_path: Path, fake: FakeGhcr) -> Any:
    env = tmp_path / ".env"
    env.write_text("IMAGE_TAG=sha-0000001\n")
    settings = Settings(image=f"ghcr.io/{REPO}", container="app", state_dir=tmp_path / "st",
                        env_file=env, watch=0)
    runtime = FakeRuntime("app", release(1))
    registry = HttpRegistry(BASE, REPO, transport=httpx.MockTransport(fake),
                            clock=StepClock(), tag_pattern=settings.tag_pattern)
    return build_agent(settings, [Sink()], registry=registry, runtime=runtime,
                       health=FakeHealth(runtime), store=Store(settings.state_dir))


@pytest.fixture
def heads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The refs the registry adapter HEADs (a 401 and its retry count as one)."""
    seen: list[str] = []
    real = HttpRegistry._head

    def counting(self: HttpRegistry, ref: str) -> Any:
        seen.append(ref)
        return real(self, ref)

    monkeypatch.setattr(HttpRegistry, "_head", counting)
    return seen


def test_a_new_track_build_costs_one_head_of_the_track_and_one_tag_parse(
        tmp_path: Path, parses: list[str], heads: list[str]) -> None:
    fake = FakeGhcr()
    fake.image("main", SHA_TAG, revision=REVISION)
    agent = _agent(tmp_path, fake)
    parses.clear()
    assert agent.poll_once().outcome == "deployed"
    counts = (heads.count("main"), heads.count(SHA_TAG), parses.count(SHA_TAG))
    assert counts == (1, 1, 1), counts  # HEAD main; HEAD of the label's tag (design step 2)


def test_an_operators_tag_is_parsed_once(tmp_path: Path, parses: list[str],
                                         heads: list[str]) -> None:
    fake = FakeGhcr()
    fake.image("main", SHA_TAG, revision=REVISION)
    agent = _agent(tmp_path, fake)
    parses.clear()
    tag = Tag.parse(SHA_TAG, agent.config.run.tag_pattern)  # cmd_deploy, from argv
    assert agent.deploy(tag).outcome == "deployed"
    counts = (parses.count(SHA_TAG), heads.count(SHA_TAG))
    assert counts == (1, 1), counts
