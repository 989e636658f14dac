"""Start-first and stop-first swaps on the real engine (both lanes): a target that
publishes no host port gets its new container beside the old one, gated on its own
address, and the old one is stopped only after the gate; a failing build never stops the
old one; a published port keeps stop-first; kill -9 while both run, then start-up."""

from __future__ import annotations

import signal
import time
from typing import Any

import pytest

from bench.probe import Prober, longest_outage
from tests.integration.deploybed import Site, push
from tests.integration.test_watch import engine_events

pytestmark = pytest.mark.integration

BESIDE = {"HEALTH_URL": "http://{address}:8080/healthz", "HEALTH_INTERVAL": "0.3",
          "HEALTH_SOAK": "1", "HEALTH_TIMEOUT": "8"}


@pytest.fixture
def hidden(bed: Any, repo: str, cleanup: str, tmp_path: Any) -> Any:
    """An app with no published port, on its network with the alias ``web``."""
    s = Site(bed=bed, uid=cleanup, repo=repo, tmp=tmp_path, published=False)
    s.config.update(BESIDE)
    yield s
    s.teardown()


def started_at(site: Site, cid: str) -> str:
    return str(site.bed.docker.api.inspect_container(cid)["State"]["StartedAt"])


def test_start_first_runs_both_then_stops_the_old_one_after_the_gate(hidden: Site) -> None:
    v1 = push(hidden, "v1")
    old_id = hidden.run_app(v1)
    v2 = push(hidden, "v2", boot_delay=1)
    t0 = time.time()
    p = hidden.cli("deploy")
    assert p.returncode == 0, p.stderr
    assert hidden.running_digest() == v2.digest and hidden.serving() == "ok v2"
    assert hidden.containers() == [hidden.name] and hidden.data_intact()
    info = hidden.inspect()
    assert "web" in info["NetworkSettings"]["Networks"][f"{hidden.uid}-net"]["Aliases"]
    assert info["Config"]["Labels"]["runtime.label"] == "kept"
    events = engine_events(hidden, t0)
    new_id = info["Id"]
    new_started = min(e["timeNano"] for e in events if e["id"] == new_id
                      and e["Action"] == "start")
    old_died = min(e["timeNano"] for e in events if e["id"] == old_id and e["Action"] == "die")
    assert old_died > new_started + 1e9  # the old one served through the new one's gate
    row = hidden.history()[0]
    assert "CUTOVER" in row["timings"], row["timings"]


def test_a_failing_build_never_stops_the_old_one(hidden: Site) -> None:
    v1 = push(hidden, "v1")
    old_id = hidden.run_app(v1)
    before = started_at(hidden, old_id)
    bad = push(hidden, "v2", mode="500")
    p = hidden.cli("deploy")
    assert p.returncode == 1, p.stderr
    assert hidden.inspect()["Id"] == old_id and started_at(hidden, old_id) == before
    assert hidden.serving() == "ok v1" and hidden.containers() == [hidden.name]
    assert hidden.data_intact()
    assert [q["digest"] for q in hidden.status()["quarantined"]] == [bad.digest]


def test_auto_keeps_stop_first_for_a_published_port(site: Site) -> None:
    v1 = push(site, "v1")
    old_id = site.run_app(v1)
    push(site, "v2")
    t0 = time.time()
    p = site.cli("deploy")
    assert p.returncode == 0, p.stderr
    events = engine_events(site, t0)
    new_id = site.inspect()["Id"]
    created = min(e["timeNano"] for e in events if e["id"] == new_id and e["Action"] == "create")
    old_died = min(e["timeNano"] for e in events if e["id"] == old_id and e["Action"] == "die")
    new_started = min(e["timeNano"] for e in events if e["id"] == new_id
                      and e["Action"] == "start")
    assert created < old_died < new_started  # created first, then stop, then start
    refused = site.cli("deploy", SWAP="start-first")
    assert refused.returncode in (0, 2)  # up to date, or refused before touching anything


def test_stop_first_holds_no_request_behind_the_old_address(site: Site) -> None:
    """The new container re-uses the old one's address. A request that reached the published
    port while the engine was starting it would wait ~1 s in the host's neighbour table
    (an unanswered ARP); the agent points the entry at the new container as it starts, so
    such requests are answered at once and the outage is stop + start, well under 1 s."""
    v1 = push(site, "v1")
    site.run_app(v1)
    v2 = push(site, "v2")
    with Prober(site.port) as probe:
        time.sleep(0.3)
        p = site.cli("deploy")
        time.sleep(1.2)
    assert p.returncode == 0, p.stderr
    assert site.running_digest() == v2.digest and site.serving() == "ok v2"
    samples = probe.samples
    held = [round(s.done - s.t, 2) for s in samples if s.done - s.t >= 0.9]
    _, outage_ms = longest_outage(samples)
    assert not held, f"requests held ~1 s (s): {held}"
    assert outage_ms < 1000, f"outage {outage_ms:.0f} ms"
    assert "neighbour_refresh_failed" not in p.stderr + p.stdout  # the refresh ran


def test_kill_while_both_run_then_start_up_leaves_one_serving(hidden: Site) -> None:
    v1 = push(hidden, "v1")
    hidden.run_app(v1)
    v2 = push(hidden, "v2", boot_delay=3)
    deploy = hidden.popen("deploy")
    deadline = time.monotonic() + 30
    while hidden.status()["phase"] != "VERIFY":  # the new one started beside the old one
        assert time.monotonic() < deadline and deploy.poll() is None
        time.sleep(0.1)
    deploy.send_signal(signal.SIGKILL)
    deploy.communicate(timeout=10)
    assert sorted(hidden.containers()) == sorted([hidden.name, f"{hidden.name}.twilight-next"])
    p = hidden.cli("deploy")
    assert p.returncode == 0, p.stderr
    assert hidden.containers() == [hidden.name] and hidden.data_intact()
    assert hidden.running_digest() == v2.digest and hidden.serving() == "ok v2"
    (row,) = hidden.history()
    assert row["outcome"] == "deployed" and "recovered at start-up" in row["reason"], row
