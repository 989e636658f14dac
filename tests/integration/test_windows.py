"""Minimum age and deploy windows on the real engine and registry: a young build waits
(nothing pulled), a build replaced before its age never runs, and the daemon deploys a
build pushed outside the window when the window opens."""

from __future__ import annotations

import datetime as dt
import signal
import time

import pytest

from testbed.images import AppImage
from tests.integration.deploybed import Site, push

pytestmark = [pytest.mark.integration, pytest.mark.one_engine]

FAST = {"HEALTH_INTERVAL": "0.3", "HEALTH_SOAK": "0.5", "HEALTH_TIMEOUT": "8"}


def held(site: Site, img: AppImage) -> bool:
    """The engine holds an image of ``img``'s digest."""
    return any(d == f"{img.ref}@{img.digest}" for i in site.bed.docker.api.images()
               for d in i.get("RepoDigests") or [])


def test_min_age_holds_a_new_build_and_skips_one_replaced_in_time(site: Site) -> None:
    site.run_app(push(site, "v1"))
    v2 = push(site, "v2")
    site.config.update(MIN_AGE="8s", **FAST)
    first = site.cli("deploy")
    assert first.returncode == 0 and "waiting" in first.stdout, first.stdout
    assert not held(site, v2)  # not even pulled
    time.sleep(3)
    v3 = push(site, "v3")  # CI replaces it before its age is reached
    t3 = time.monotonic()
    assert "waiting" in site.cli("deploy").stdout
    time.sleep(max(0.0, 8 - (time.monotonic() - t3)) + 0.5)
    done = site.cli("deploy")
    assert done.returncode == 0 and "deployed" in done.stdout, (done.stdout, done.stderr)
    assert site.running_digest() == v3.digest
    assert not held(site, v2)  # the replaced build never ran, never was pulled
    assert [r["to_digest"] for r in site.history()] == [v3.digest]


def test_the_daemon_deploys_a_build_pushed_outside_the_window_when_it_opens(
        site: Site) -> None:
    site.run_app(push(site, "v1"))
    now = dt.datetime.now(dt.timezone.utc)
    start = (now + dt.timedelta(seconds=75)).replace(second=0, microsecond=0)
    end = start + dt.timedelta(minutes=10)
    day = start.strftime("%a")
    window = f"{day} {start:%H:%M}-{end:%H:%M} UTC" if end.date() == start.date() \
        else f"{day} {start:%H:%M}-23:59 UTC"
    v2 = push(site, "v2")
    site.config.update(DEPLOY_WINDOW=window, **FAST)
    outside = site.cli("deploy")
    assert outside.returncode == 0 and "waiting" in outside.stdout, outside.stdout
    assert site.status()["next_window"].startswith(start.strftime("%Y-%m-%dT%H:%M"))
    assert site.cli("deploy", v2.sha_tag).returncode == 2  # an operator needs --now
    daemon = site.popen("run", POLL_INTERVAL="2s", RUNTIME_DIRECTORY=str(site.tmp / "run"))
    try:
        deadline = time.monotonic() + 150
        while site.running_digest() != v2.digest and time.monotonic() < deadline:
            assert daemon.poll() is None
            assert dt.datetime.now(dt.timezone.utc) >= start or \
                site.running_digest() != v2.digest, "deployed before the window opened"
            time.sleep(0.5)
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.communicate(timeout=60)
    (row,) = site.history()
    started = dt.datetime.fromisoformat(row["started"].replace("Z", "+00:00"))
    print(f"\nwindow opened {start:%H:%M:%S}, deploy started {started:%H:%M:%S}")
    assert row["to_digest"] == v2.digest and start <= started <= start + dt.timedelta(
        seconds=2 + 2 + 1)  # one poll interval (with jitter), the clocks' second resolution
