"""kill -9 of the agent during the watch after commit, then start-up: the watch resumes
with the time that was left, or rolls back a build that died while the agent was away.
Nothing is lost either way."""

from __future__ import annotations

import signal
import time
from typing import Any

import pytest

from tests.faults.conftest import Figures
from tests.integration.deploybed import Site, push

pytestmark = pytest.mark.faults

WATCHED = {"HEALTH_INTERVAL": "0.5", "HEALTH_SOAK": "1", "HEALTH_TIMEOUT": "8"}


def killed_in_watch(site: Site, figures: Figures) -> dict[str, Any]:
    """Start a CLI deploy, SIGKILL it once it is watching; the status it left behind."""
    deploy = site.popen("deploy")
    try:
        deadline = time.monotonic() + 60
        while (st := site.status())["phase"] != "WATCH":
            assert time.monotonic() < deadline and deploy.poll() is None, st
            time.sleep(0.2)
        time.sleep(1)
        deploy.send_signal(signal.SIGKILL)
        deploy.communicate(timeout=10)
    finally:
        if deploy.poll() is None:
            deploy.kill()
    figures.fault()
    figures.deploys()
    assert deploy.returncode == -signal.SIGKILL
    left = site.status()
    assert left["phase"] == "WATCH" and left["watch"]["left_s"] > 0, left
    assert f"{site.name}.twilight-prev" in site.containers()  # the rollback target is kept
    return left


def test_kill_during_the_watch_then_start_up_resumes_it_for_the_time_left(
        site: Site, figures: Figures) -> None:
    v1 = push(site, "v1")
    site.run_app(v1)
    v2 = push(site, "v2")
    site.config.update(WATCH="15s", **WATCHED)
    left = killed_in_watch(site, figures)
    until = time.time() + left["watch"]["left_s"]

    p = site.cli("deploy")  # the next lock holder: start-up recovery first
    done = time.time()
    assert p.returncode == 0, p.stderr
    assert until - 1 <= done <= until + 6, (until, done)  # the time left, not a new window
    assert site.running_digest() == v2.digest and figures.service_ok(site, "v2") == "v2"
    figures.nothing_lost(site)
    row = site.history()[0]
    figures.watch_resumed(site, row["outcome"] == "deployed" and row["phase"] == "WATCH"
                          and "stopped in WATCH/Watch" in row["reason"])
    assert row["to_digest"] == v2.digest
    assert site.status()["phase"] == "IDLE" and site.env_tag() == v2.sha_tag


def test_kill_during_the_watch_and_a_death_meanwhile_rolls_back_at_start_up(
        site: Site, figures: Figures) -> None:
    v1 = push(site, "v1")
    old_id = site.run_app(v1)
    bad = push(site, "v2", mode="die-later", die_after=8)
    site.config.update(WATCH="120s", **WATCHED)
    killed_in_watch(site, figures)
    new_id = site.inspect()["Id"]
    deadline = time.monotonic() + 30
    while site.bed.docker.api.inspect_container(new_id)["RestartCount"] < 1:
        assert time.monotonic() < deadline, "the build never died"
        time.sleep(0.2)  # it died and its restart policy started it again: a crash loop

    p = site.cli("deploy")
    assert p.returncode == 0, p.stderr
    assert "quarantined" in p.stdout  # the same build is not tried again
    mark = figures.quarantined(site, bad.digest)
    assert site.cli("deploy").returncode == 0
    figures.quarantine_held(site, mark)
    assert site.inspect()["Id"] == old_id and site.running_digest() == v1.digest
    assert figures.service_ok(site, "v1") == "v1"
    figures.nothing_lost(site)
    row = site.history()[0]
    figures.watch_resumed(site, (row["outcome"], row["phase"], row["to_digest"]) == (
        "rolled_back", "WATCH", bad.digest))
    assert "stopped in WATCH/Watch" in row["reason"] and "restart" in row["reason"]
    assert [q["digest"] for q in site.status()["quarantined"]] == [bad.digest]
    assert site.env_tag() == v1.sha_tag
