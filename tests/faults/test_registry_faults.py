"""Registry faults against the real agent and engine: the bed's registry behind a proxy that
refuses, stalls, rate-limits, errors, truncates, corrupts and lies about digests.

Expect: nothing unverified deployed, no crash, backoff, the service untouched, and in the
daemon's log one line per change of state, not one per poll. (The registry adapter's
reaction to each bad answer is unit-tested in ``tests/unit/test_registry*.py``; here the
whole agent meets them over a real socket, with the engine running the service.)
"""

from __future__ import annotations

import itertools
import json
import signal
import time
from collections.abc import Iterator
from typing import Any

import pytest

from testbed.faultproxy import FaultProxy
from tests.faults.conftest import Figures
from tests.integration.deploybed import Site, one_line, push
from twilight_agent import app
from twilight_agent.agent import Agent  # the type make_agent returns
from twilight_agent.settings import Settings

pytestmark = [pytest.mark.faults, pytest.mark.one_engine]

FAST = {"HEALTH_INTERVAL": "0.2", "HEALTH_SOAK": "0.5", "HEALTH_TIMEOUT": "5"}


OPEN: list[Any] = []  # registry sessions and engine clients, closed after each test


def make_agent(settings: Settings, registry: Any = None, health: Any = None) -> Agent:
    """The real adapters, with registry timeouts short enough for a test (0.5 s, 3 tries)."""
    runtime = app.build_runtime(settings)
    registry = registry or app.build_registry(settings, timeout=0.5, attempts=3,
                                              backoff_base=0.05, backoff_cap=5)
    OPEN.extend([registry, runtime])
    return app.build_agent(settings, registry=registry, runtime=runtime, health=health)


@pytest.fixture(autouse=True)
def _close_clients() -> Iterator[None]:
    yield
    while OPEN:
        OPEN.pop().close()


FAULTS: list[tuple[str, dict[str, Any]]] = [
    ("down", {}),
    ("slow", {"delay": 3}),  # beyond the 0.5 s timeout
    ("status", {"status": 429, "retry_after": "0"}),
    ("status", {"status": 429, "retry_after": "3600"}),  # asks for longer than the cap
    ("status", {"status": 500}),
    ("status", {"status": 503, "only": "/manifests/sha256:"}),
    ("truncate", {"only": "/manifests/sha256:"}),
    ("cut", {"only": "/manifests/"}),
    ("corrupt", {"only": "/manifests/sha256:"}),
    ("corrupt", {"only": "/blobs/"}),
    ("truncate", {"only": "/blobs/"}),
    ("wrong_digest", {"only": "/manifests/main"}),
    ("wrong_digest", {"only": "/manifests/sha-"}),
    ("wrong_body", {"only": "/manifests/"}),
    ("status", {"status": 500, "only": "/token"}),
    ("down", {"only": "/token"}),
    ("corrupt", {"only": "/token"}),
    ("truncate", {"only": "/token"}),
]


def test_every_registry_fault_leaves_the_service_untouched_then_recovers(
        site: Site, proxy: FaultProxy, figures: Figures) -> None:
    v1 = push(site, "v1")
    old_id = site.run_app(v1)
    v2 = push(site, "v2")
    settings = site.settings(REGISTRY_URL=proxy.url, **FAST)
    for kind, opts in FAULTS:
        proxy.set(kind, **opts)
        agent = make_agent(settings)  # a fresh session: tokens are fetched again
        before = proxy.injected
        report = agent.poll_once()  # never raises
        figures.deploys()
        assert proxy.injected > before, (kind, opts, "the fault was never hit")
        figures.fault(proxy.injected - before)
        assert report.outcome in ("registry_error", "nothing_to_do"), (kind, opts, report)
        assert report.exit_code in (2, 5)
        assert site.inspect()["Id"] == old_id and site.running_digest() == v1.digest
        figures.service_ok(site, "v1", timeout=2)
    assert site.history() == []  # nothing even started: no deploy on a bad answer
    assert site.env_tag() == v1.sha_tag

    # A 429 storm that asks for 1 s: honoured, then the build is deployed.
    proxy.set("status", status=429, retry_after="1", count=2, only="/manifests/main")
    t0 = time.monotonic()
    report = make_agent(settings).poll_once()
    figures.fault(2)
    figures.deploys()
    assert report.outcome == "deployed", report
    # (requests stalled by the "slow" fault earlier are still being answered: not this poll's)
    main = [h for h in proxy.hits("/manifests/main") if h[3] != "slow"]
    gaps = [b[0] - a[0] for a, b in itertools.pairwise(main) if a[3] == "429" and a[0] >= t0]
    assert len(gaps) >= 2 and min(gaps) >= 0.95, gaps
    assert site.running_digest() == v2.digest
    figures.service_ok(site, "v2")
    figures.nothing_lost(site)


def test_cli_deploy_against_a_failing_registry_is_exit_5_one_line(
        site: Site, proxy: FaultProxy, figures: Figures) -> None:
    old_id = site.run_app(push(site, "v1"))
    push(site, "v2")
    proxy.set("status", status=503, retry_after="0")
    p = site.cli("deploy", REGISTRY_URL=proxy.url)
    figures.fault(proxy.injected)
    figures.deploys()
    assert p.returncode == 5, p.stderr
    assert "503" in one_line(p.stderr)
    assert site.inspect()["Id"] == old_id
    figures.service_ok(site, "v1", timeout=2)
    assert site.history() == []


def test_tag_deleted_between_check_and_pull(site: Site, figures: Figures) -> None:
    v1 = push(site, "v1")
    old_id = site.run_app(v1)
    v2 = push(site, "v2")
    settings = site.settings(**FAST)
    real = app.build_registry(settings)
    OPEN.append(real)

    class DeleteAfterResolve:
        def __getattr__(self, name: str) -> Any:
            return getattr(real, name)

        def resolve_track(self, track: str, known: Any = None, digest: Any = None) -> Any:
            release = real.resolve_track(track, known, digest)
            site.bed.raw.delete_manifest(site.repo, str(release.digest))
            return release

    agent = make_agent(settings, registry=DeleteAfterResolve())
    report = agent.poll_once()
    figures.fault()
    figures.deploys()
    assert report.outcome == "docker_error" and report.exit_code == 5, report
    assert "pull" in report.reason and v2.digest[:19] in report.reason
    assert site.inspect()["Id"] == old_id and site.running_digest() == v1.digest
    figures.service_ok(site, "v1", timeout=2)
    (row,) = site.history()
    assert row["outcome"] == "failed" and row["phase"] == "PULL"
    assert site.status()["quarantined"] == []  # the build was not blamed
    nxt = make_agent(settings).poll_once()  # main is gone now: nothing to do, no crash
    assert nxt.outcome == "registry_error" and "does not exist" in nxt.reason
    v3 = push(site, "v3")
    assert make_agent(settings).poll_once().outcome == "deployed"
    figures.deploys(2)
    assert site.running_digest() == v3.digest
    figures.service_ok(site, "v3")
    figures.nothing_lost(site)


def test_main_moved_during_verify_deploys_what_was_verified(
        site: Site, figures: Figures) -> None:
    v1 = push(site, "v1")
    site.run_app(v1)
    v2 = push(site, "v2", boot_delay=1)
    settings = site.settings(**FAST)
    pushed: list[Any] = []
    runtime = app.build_runtime(settings)
    OPEN.append(runtime)
    gate = app.build_health(settings, runtime)

    class MoveMainInVerify:
        def verify(self, *a: Any, **k: Any) -> Any:
            if not pushed:
                pushed.append(push(site, "v3"))  # CI pushes a new main mid-deploy
            return gate.verify(*a, **k)

    agent = make_agent(settings, health=MoveMainInVerify())
    report = agent.poll_once()
    figures.fault()
    figures.deploys()
    assert report.outcome == "deployed" and report.to is not None
    assert str(report.to.digest) == v2.digest and report.to.tag == v2.sha_tag
    assert site.running_digest() == v2.digest and site.env_tag() == v2.sha_tag
    figures.service_ok(site, "v2")
    (row,) = site.history()
    assert row["to_digest"] == v2.digest
    v3 = pushed[0]
    assert make_agent(settings).poll_once().outcome == "deployed"  # the next poll takes v3
    figures.deploys()
    assert site.running_digest() == v3.digest
    figures.service_ok(site, "v3")
    figures.nothing_lost(site)


def _events(stderr: str) -> list[dict[str, Any]]:
    out = []
    for line in stderr.splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            out.append({"event": "<not json>", "line": line})
    return out


def test_daemon_logs_a_down_registry_once_per_change_not_once_per_poll(
        site: Site, proxy: FaultProxy, figures: Figures) -> None:
    old_id = site.run_app(push(site, "v1"))
    v2 = push(site, "v2")
    proxy.set("down", only="/manifests/main")
    daemon = site.popen("run", REGISTRY_URL=proxy.url, POLL_INTERVAL="0.3",
                        RUNTIME_DIRECTORY=str(site.tmp / "run"), **FAST)
    try:
        def down_hits() -> int:
            return sum(1 for h in proxy.hits("/manifests/main") if h[3] == "down")

        deadline = time.monotonic() + 60
        while down_hits() < 8 * 4 and time.monotonic() < deadline:  # 4 attempts per poll
            time.sleep(0.2)
        assert site.inspect()["Id"] == old_id
        figures.service_ok(site, "v1", timeout=2)
        proxy.set("status", status=503, retry_after="0", only="/manifests/main")
        deadline = time.monotonic() + 30
        while sum(1 for h in proxy.hits() if h[3] == "503") < 3 * 4 \
                and time.monotonic() < deadline:
            time.sleep(0.1)
        proxy.clear()
        deadline = time.monotonic() + 30
        while not (site.running_digest() == v2.digest and site.containers() == [site.name]) \
                and time.monotonic() < deadline:  # committed: the parked one is removed
            time.sleep(0.2)
    finally:
        daemon.send_signal(signal.SIGTERM)
        _, err = daemon.communicate(timeout=60)
    figures.fault(proxy.injected)
    figures.deploys()
    assert daemon.returncode == 0, err
    events = _events(err)
    names = [e.get("event") for e in events]
    down_polls = sum(1 for h in proxy.hits("/manifests/main") if h[3] == "down") // 4
    figures.note(f"daemon vs a down registry: {down_polls} failed polls + 3 answering 503 "
                 f"-> {names.count('registry_error')} registry_error lines, "
                 f"{len(events)} log lines in all")
    assert down_polls >= 8
    assert names.count("registry_error") == 2, names  # down, then 503: two changes
    assert names.count("registry_recovered") == 1, names
    assert "registry_retry" not in names, names  # each retry is not a log line
    assert "<not json>" not in names, err
    assert site.running_digest() == v2.digest
    figures.service_ok(site, "v2")
    figures.nothing_lost(site)
