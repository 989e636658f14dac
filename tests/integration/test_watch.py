"""The watch after commit on the real engine and registry: a build that passes the gate and
dies later is rolled back from the parked container; status shows the watch; a new build
waits for it. Runs on both engine lanes."""

from __future__ import annotations

import time
from typing import Any

import pytest

from testbed.util import wait_until
from tests.integration.deploybed import Site, push

pytestmark = pytest.mark.integration

INTERVAL = 0.5
WATCHED = {"HEALTH_INTERVAL": str(INTERVAL), "HEALTH_SOAK": "2", "HEALTH_TIMEOUT": "8"}


def engine_events(site: Site, since: float, **filters: str) -> list[dict[str, Any]]:
    """The engine's own record of this site's container events since ``since`` (epoch
    seconds): only containers named after the site (the engine is shared with other tests)."""
    until = time.time() + 1
    stream = site.bed.docker.api.events(since=int(since) - 1, until=int(until) + 1,
                                        filters={"type": "container", **filters}, decode=True)
    return [e for e in stream if e.get("timeNano", 0) / 1e9 >= since - 1
            and str((e.get("Actor") or {}).get("Attributes", {}).get("name", "")).startswith(
                site.name)]


def wait_phase(site: Site, phase: str, proc: Any, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        st = site.status()
        if st["phase"] == phase:
            return st
        time.sleep(0.2)
    out, err = proc.communicate(timeout=60) if proc.poll() is not None else ("", "")
    raise AssertionError(f"the agent never reached {phase}: {site.status()} "
                         f"(deploy exit {proc.poll()}: {out} {err})")


def test_a_build_that_dies_after_the_gate_is_rolled_back_within_interval_plus_2s(
        site: Site) -> None:
    v1 = push(site, "v1")
    old_id = site.run_app(v1)
    env_before = site.env_file.read_bytes()  # the operator's: IMAGE_TAG, no IMAGE_DIGEST
    bad = push(site, "v2", mode="die-later", die_after=20)
    t0 = time.time()

    site.config.update(WATCH="90s", **WATCHED)
    p = site.cli("deploy", timeout=120)
    assert p.returncode == 1, (p.stdout, p.stderr)
    assert site.inspect()["Id"] == old_id and site.running_digest() == v1.digest
    assert site.serving() == "ok v1" and site.data_intact()
    assert site.env_file.read_bytes() == env_before  # .env put back as the commit found it
    assert (site.env_tag(), site.env_digest()) == (v1.sha_tag, "")
    assert site.containers() == [site.name]
    row = site.history()[0]
    assert (row["outcome"], row["phase"], row["to_digest"]) == (
        "rolled_back", "WATCH", bad.digest), row
    assert "watch" in row["reason"] and "worker pool exhausted" in row["log_tail"]
    assert [q["digest"] for q in site.status()["quarantined"]] == [bad.digest]

    events = engine_events(site, t0)
    new_ids = {e["id"] for e in events if e["Action"] == "create" and e["id"] != old_id}
    died = min(e["timeNano"] for e in events if e["Action"] == "die" and e["id"] in new_ids)
    back = min(e["timeNano"] for e in events if e["Action"] == "start" and e["id"] == old_id
               and e["timeNano"] > died)
    lived = (died - min(e["timeNano"] for e in events if e["Action"] == "start"
                        and e["id"] in new_ids)) / 1e9
    took = (back - died) / 1e9
    print(f"\nlived {lived:.1f}s after its start; previous started again {took:.2f}s after "
          f"the death (limit {INTERVAL + 2:g}s)")
    assert lived > 15  # it really passed the gate and the soak first
    assert took <= INTERVAL + 2

    again = site.cli("deploy")
    assert again.returncode == 0 and "quarantined" in again.stdout  # not retried


def test_status_shows_the_watch_and_a_new_build_waits_for_its_end(site: Site) -> None:
    v1 = push(site, "v1")
    site.run_app(v1)
    v2 = push(site, "v2")
    site.config.update(WATCH="8s", **WATCHED)  # every CLI call below writes the config
    deploy = site.popen("deploy")
    try:
        st = wait_phase(site, "WATCH", deploy)
        assert st["current"]["digest"] == v2.digest and st["previous"]["digest"] == v1.digest
        assert 0 < st["watch"]["left_s"] <= 8
        assert sorted(site.containers()) == sorted([site.name, f"{site.name}.twilight-prev"])
        text = site.cli("status")
        assert "watching" in text.stdout and "left" in text.stdout, text.stdout
        v3 = push(site, "v3")
        busy = site.cli("deploy")
        assert busy.returncode == 3, (busy.stdout, busy.stderr)
        held = [d for i in site.bed.docker.images.list(name=v3.ref)
                for d in i.attrs.get("RepoDigests") or []]
        assert f"{v3.ref}@{v3.digest}" not in held  # not even pulled
        out, err = deploy.communicate(timeout=60)
    finally:
        if deploy.poll() is None:
            deploy.kill()
    assert deploy.returncode == 0, (out, err)
    assert site.containers() == [site.name]  # the parked one went when the watch ended
    row = site.history()[0]
    assert (row["outcome"], row["phase"], row["to_digest"]) == ("deployed", "WATCH", v2.digest)
    assert site.status()["watch"] is None

    nxt = site.cli("deploy", WATCH="0")
    assert nxt.returncode == 0 and site.running_digest() == v3.digest, nxt.stderr


def test_deploy_detach_returns_after_the_gate_and_the_daemon_rolls_back_a_late_crash(
        site: Site) -> None:
    v1 = push(site, "v1")
    site.run_app(v1)
    bad = push(site, "v2", mode="die-later", die_after=20)
    site.config.update(WATCH="60s", POLL_INTERVAL="2s", RUNTIME_DIRECTORY=str(site.tmp / "run"),
                       **WATCHED)
    daemon = site.popen("run", TRACK="stable")  # follows a tag nobody pushes: it only watches
    try:
        wait_until(lambda: (site.tmp / "run" / "twilight-agent.pid").exists(), timeout=20)
        t0 = time.monotonic()
        p = site.cli("deploy", "--detach", bad.sha_tag)
        took = time.monotonic() - t0
        assert p.returncode == 0 and "the daemon watches it" in p.stdout, (p.stdout, p.stderr)
        assert took < 20 and site.running_digest() == bad.digest, took  # before the crash
        st = site.status()
        assert st["phase"] == "WATCH" and st["watch"]["by"] == "daemon", st
        assert "watching" in site.cli("status").stdout
        wait_until(lambda: site.running_digest() == v1.digest, timeout=60)
        wait_until(lambda: bool(site.history()), timeout=30)
    finally:
        daemon.terminate()
        _, err = daemon.communicate(timeout=60)
    row = site.history()[0]
    assert (row["outcome"], row["phase"], row["to_digest"], row["trigger"]) == (
        "rolled_back", "WATCH", bad.digest, "cli"), (row, err[-2000:])
    assert [q["digest"] for q in site.status()["quarantined"]] == [bad.digest]
    assert site.serving() == "ok v1" and site.env_tag() == v1.sha_tag
    print(f"\ndeploy --detach returned after {took:.1f}s; the daemon rolled back the crash")


def test_deploy_detach_without_a_daemon_says_so_and_watches_itself(site: Site) -> None:
    v1 = push(site, "v1")
    site.run_app(v1)
    v2 = push(site, "v2")
    site.config.update(WATCH="3s", RUNTIME_DIRECTORY=str(site.tmp / "run"), **WATCHED)
    p = site.cli("deploy", "--detach")
    assert p.returncode == 0, (p.stdout, p.stderr)
    assert "no daemon of this app is running; watching here" in p.stderr, p.stderr
    row = site.history()[0]  # recorded: the watch ended here, nothing left open
    assert (row["outcome"], row["phase"], row["to_digest"]) == ("deployed", "WATCH", v2.digest)
    assert site.status()["watch"] is None and site.containers() == [site.name]
