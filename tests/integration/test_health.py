"""The health gate against real containers of the bed's app variants."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator

import pytest

from twilight_agent.adapters.docker.health import HealthGate
from twilight_agent.adapters.docker.runtime import DockerRuntime
from twilight_agent.core.models import Digest

pytestmark = pytest.mark.integration

FAST = {"timeout": 8.0, "interval": 0.5, "soak": 1.0}


@pytest.fixture
def rt() -> Iterator[DockerRuntime]:
    with DockerRuntime() as runtime:
        yield runtime


def _run(bed, rt: DockerRuntime, repo: str, uid: str, **variant) -> tuple[str, str]:
    """Push and pull one app variant, start it with a published port; (id, health URL)."""
    img = bed.push(repo, **variant)
    image_id = rt.pull(img.ref, Digest(img.digest), bed.auth)
    api = bed.docker.api
    cid = api.create_container(
        image_id, name=f"{uid}-app", ports=[8080],
        host_config=api.create_host_config(port_bindings={8080: ("127.0.0.1", None)}))["Id"]
    rt.start(cid)
    url = rt.published_url(cid)
    assert url is not None and url.startswith("http://127.0.0.1:")
    return cid, url


def _finished_at(bed, cid: str) -> float:
    stamp = bed.docker.api.inspect_container(cid)["State"]["FinishedAt"]
    whole, _, frac = stamp.rstrip("Z").partition(".")
    at = dt.datetime.fromisoformat(whole).replace(tzinfo=dt.timezone.utc)
    return at.timestamp() + float("0." + (frac or "0"))


def test_good_app_passes_after_the_soak(bed, repo, cleanup, rt):
    cid, url = _run(bed, rt, repo, cleanup, mode="good")
    v = HealthGate(rt).verify(cid, url, **FAST)
    assert v.ok and v.reason == "healthy", v
    assert v.detail["probe"] == "http 200"
    assert 1.0 <= v.after_s < 4.0


def test_exit_at_boot_fails_within_two_seconds_of_the_exit(bed, repo, cleanup, rt):
    cid, url = _run(bed, rt, repo, cleanup, mode="exit", boot_delay=1)  # exits 1 s in
    v = HealthGate(rt).verify(cid, url, **FAST)
    decided = time.time()
    assert not v.ok and v.reason == "exited with code 3", v
    assert v.after_s < 3.0
    assert decided - _finished_at(bed, cid) < 2.0
    assert "fatal: cannot open database" in rt.logs_tail(cid, 5)


def test_http_500_fails_at_the_timeout(bed, repo, cleanup, rt):
    cid, url = _run(bed, rt, repo, cleanup, mode="500")
    v = HealthGate(rt).verify(cid, url, **FAST)
    assert not v.ok and v.reason == "timeout after 8s: http 500", v
    assert 8.0 <= v.after_s < 9.5


def test_hanging_app_fails_at_the_timeout(bed, repo, cleanup, rt):
    cid, url = _run(bed, rt, repo, cleanup, mode="hang")
    v = HealthGate(rt).verify(cid, url, **FAST)
    assert not v.ok and v.reason == "timeout after 8s: read timeout", v
    assert 8.0 <= v.after_s < 9.5


def test_slow_boot_within_the_window_passes(bed, repo, cleanup, rt):
    cid, url = _run(bed, rt, repo, cleanup, mode="good", boot_delay=3)
    v = HealthGate(rt).verify(cid, url, timeout=20, interval=0.5, soak=1)
    assert v.ok, v
    assert 3.0 <= v.detail["passed_after_s"] < 6.0


def test_healthcheck_image_passes_only_once_docker_says_healthy(bed, repo, cleanup, rt):
    cid, url = _run(bed, rt, repo, cleanup, mode="good", healthcheck=True)
    assert rt.state(cid).health == "starting"
    v = HealthGate(rt).verify(cid, url, **FAST)
    assert v.ok and v.detail["health"] == "healthy", v
    assert rt.state(cid).health == "healthy"


def test_no_url_and_no_healthcheck_passes_on_state_with_a_warning(bed, repo, cleanup, rt):
    cid, _ = _run(bed, rt, repo, cleanup, mode="good")
    v = HealthGate(rt).verify(cid, None, **FAST)
    assert v.ok and "warning" in v.detail
