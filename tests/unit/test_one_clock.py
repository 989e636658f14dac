"""One ``Clock``, handed in by the composition root, reaches every part that reads or waits
on time (issue 26): a fake clock given to ``app``'s builders is the one the registry's
backoff, the webhook's retries, the engine adapter, the metrics file and the keyless
root use; none of them falls back to the system's."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.unit.fakes import StepClock
from tests.unit.test_webhook import Receiver, rolled_back
from twilight_agent import app
from twilight_agent.adapters.docker.runtime import DockerRuntime
from twilight_agent.adapters.notify.metrics import MetricsFile
from twilight_agent.adapters.notify.webhook import Webhook
from twilight_agent.core.clock import SYSTEM
from twilight_agent.errors import RegistryUnavailable
from twilight_agent.settings import Settings

IMAGE = "ghcr.io/owner/app"


def settings(tmp_path: Path, **env: Any) -> Settings:
    return Settings(image=IMAGE, container="app", state_dir=tmp_path, **env)


def test_the_registry_backs_off_on_the_clock_it_is_given(tmp_path: Path) -> None:
    clock = StepClock()
    answers = httpx.MockTransport(lambda request: httpx.Response(503))
    with app.build_registry(settings(tmp_path), clock=clock, transport=answers,
                            rand=lambda: 0.5) as registry, \
            pytest.raises(RegistryUnavailable, match="HTTP 503 after 4 attempts"):
        registry.track_digest("v1.0.0")
    assert clock.slept == [0.375, 0.75, 1.5]  # 0.5 * 2**n, equal jitter: no real wait


def test_the_webhook_waits_its_retries_on_the_clock_it_is_given(tmp_path: Path) -> None:
    clock, receiver = StepClock(), Receiver()
    receiver.statuses = [503, 503]  # then 200: the third attempt is delivered
    try:
        [hook] = app.build_notifiers(settings(tmp_path, webhook_url=receiver.url),
                                     clock=clock)
        start = SYSTEM.now()
        hook.emit(rolled_back())
        hook.close(timeout=5.0)
        elapsed = SYSTEM.now() - start
    finally:
        receiver.close()
    assert receiver.hits == 3 and len(receiver.bodies) == 1
    assert sum(clock.slept) == pytest.approx(1.0 + 2.0)  # the default backoff, all faked
    assert elapsed < 2.0


def test_the_app_hands_its_one_clock_to_every_part(tmp_path: Path) -> None:
    clock = StepClock()
    config = settings(tmp_path, metrics_file=tmp_path / "twilight.prom",
                      webhook_url="http://127.0.0.1:9/hook")
    sinks = app.build_sinks(config, clock=clock)
    metrics, hook = sinks
    assert isinstance(metrics, MetricsFile) and isinstance(hook, Webhook)
    assert metrics._clock is clock and hook.clock is clock
    agent = app.build_agent(config, sinks, clock=clock)
    try:
        assert agent.clock is clock and agent.trust.clock is clock
        assert agent.registry._http._clock is clock  # type: ignore[attr-defined]
        runtime = agent._ctx.images
        assert isinstance(runtime, DockerRuntime) and runtime._clock is clock
        assert agent._ctx.health._clock_obj is clock  # type: ignore[attr-defined]
    finally:
        agent.close()


def test_the_engine_prunes_by_the_clock_it_is_given(tmp_path: Path) -> None:
    """An image built after the fake clock's now is young by it (by the system's clock,
    years old): it is kept."""
    clock = StepClock(wall=1000.0)
    runtime = app.build_runtime(settings(tmp_path), clock)

    class Api:
        def __init__(self) -> None:
            self.removed: list[str] = []

        def images(self) -> list[dict[str, Any]]:
            return [{"Id": "sha256:" + "a" * 64, "Created": 900, "RepoTags": [f"{IMAGE}:old"]},
                    {"Id": "sha256:" + "b" * 64, "Created": 990, "RepoTags": [f"{IMAGE}:new"]}]

        def containers(self, all: bool) -> list[dict[str, Any]]:
            return []

        def remove_image(self, ref: str, force: bool, noprune: bool) -> None:
            self.removed.append(ref)

    api = runtime._client = Api()  # type: ignore[assignment]
    assert runtime.prune_images(IMAGE, keep=set(), older_than_s=50) == ["sha256:" + "a" * 64]
    assert api.removed == [f"{IMAGE}:old"]


def test_the_keyless_root_refreshes_by_the_clock_it_is_given(tmp_path: Path) -> None:
    from twilight_agent.adapters.verify.keyless import KeylessVerifier

    clock = StepClock()
    config = settings(tmp_path, verify_identity="https://github.com/owner/app/"
                      ".github/workflows/release.yml@refs/heads/main")
    verifier = app.build_verifier(config, object(), clock)
    assert isinstance(verifier, KeylessVerifier) and verifier._clock is clock
