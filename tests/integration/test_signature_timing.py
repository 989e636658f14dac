"""Signatures as CI really makes them, and no way around them (issue 24), on the real engine
and the token-auth registry, signed by the real ``cosign`` (Debian 13's package).

- CI pushes its tags before the signature exists: the build waits, it is not condemned.
- A signature must agree with the build (commit vs revision label), checked before a pull.
- The track moved back to an older signed build is held, not followed.
- ``rollback`` and ``promote`` take a digest only once this host verified it.

The daemon's polls run in-process (``Agent.poll_once``) where a test counts events or
moves the wall clock; everything an operator types goes through the CLI.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest

from testbed.accesslog import AccessLog
from testbed.images import AppImage
from tests.integration.deploybed import Site, push
from tests.integration.test_promotion import canary_config, stable
from tests.integration.test_signatures import (
    MAIN,
    Keys,
    engine_has,
    keys,
    layers_fetched,
    verify_cfg,
)
from twilight_agent import app
from twilight_agent.core.clock import SYSTEM
from twilight_agent.core.events import Held, Quarantined

pytestmark = [pytest.mark.integration, pytest.mark.one_engine]
__all__ = ["keys"]  # the module-scoped fixture of test_signatures, shared here


class Recorder:
    """An event sink that keeps what it is given."""

    def __init__(self) -> None:
        self.events: list[Any] = []

    def emit(self, event: Any) -> None:
        self.events.append(event)

    def of(self, kind: type) -> list[Any]:
        return [e for e in self.events if isinstance(e, kind)]


class Wall:
    """The agent's clock with a wall-clock time moved by the test (the grace is counted
    on it); monotonic time and sleeps are the system's."""

    def __init__(self) -> None:
        self.at = dt.datetime.now(dt.timezone.utc)

    def now(self) -> float:
        return SYSTEM.now()

    def wall(self) -> float:
        return self.at.timestamp()

    def sleep(self, seconds: float) -> None:
        SYSTEM.sleep(seconds)


def signed(keys: Keys, img: AppImage) -> AppImage:
    keys.sign(img, annotations={**MAIN, "commit": img.revision})
    return img


def point_track_at(site: Site, img: AppImage) -> None:
    """Re-point ``main`` at ``img``'s manifest, as a registry writer (or an attacker) can."""
    body, media_type, _ = site.bed.raw.get_manifest(site.repo, img.digest)
    site.bed.raw.put_manifest(site.repo, "main", body, media_type)


def test_a_late_signature_waits_and_the_build_is_deployed(site: Site, keys: Keys) -> None:
    """The race of the reference workflow before it pushed by digest: tags first, then the
    signature. Two polls pass while it is unsigned; then it is signed and deployed."""
    v1 = push(site, "v1")
    site.run_app(v1)
    v2 = push(site, "v2")  # sha-<7>, main, latest: no signature yet
    site.config.update(verify_cfg(keys))
    sink = Recorder()
    agent = app.build_agent(site.settings(), sinks=[sink])
    try:
        first = agent.poll_once()
        log, before = AccessLog(), agent.registry.requests  # type: ignore[attr-defined]
        second = agent.poll_once()
        served = log.served(site.repo)
        assert (first.outcome, first.exit_code) == ("waiting", 0), first
        # a waiting poll: the track's HEAD, then only the signature lookups (.sig tag,
        # referrers API, referrers tag): the build is not resolved again
        assert served[0] == ("HEAD", f"/v2/{site.repo}/manifests/main", 200), served
        assert all("sha256-" in u or "/referrers/" in u for _, u, _ in served[1:]), served
        assert agent.registry.requests - before == len(served) <= 4  # type: ignore[attr-defined]
        assert second.outcome == "waiting" and "waiting for a signature" in second.reason
        held = site.status()["held"]
        assert (held["kind"], held["digest"], held["tag"]) == ("signature", v2.digest,
                                                               v2.sha_tag), held
        check = site.cli("check", "--json")
        assert json.loads(check.stdout)["decision"] == "waiting_for_signature", check.stdout
        assert [e.kind for e in sink.of(Held)] == ["signature"]  # one event, two polls
        signed(keys, v2)
        third = agent.poll_once()
    finally:
        agent.close()
    assert third.outcome == "deployed", third
    assert site.running_digest() == v2.digest
    st = site.status()
    assert st["quarantined"] == [] and st["held"] is None, st
    row = site.history()[0]
    assert (row["outcome"], row["to_digest"], row["verified"]) == ("deployed", v2.digest, True)


def test_no_signature_by_the_end_of_the_grace_is_quarantined_once(site: Site,
                                                                   keys: Keys) -> None:
    v1 = push(site, "v1")
    site.run_app(v1)
    v2 = push(site, "v2")
    wall, sink = Wall(), Recorder()
    agent = app.build_agent(site.settings(VERIFY_GRACE="20s", **verify_cfg(keys)),
                            sinks=[sink], clock=wall)
    try:
        waiting = agent.poll_once()
        wall.at += dt.timedelta(seconds=19)
        still = agent.poll_once()
        wall.at += dt.timedelta(seconds=2)
        refused, after = agent.poll_once(), agent.poll_once()
    finally:
        agent.close()
    assert (waiting.outcome, still.outcome) == ("waiting", "waiting"), (waiting, still)
    assert "1s of TWILIGHT_VERIFY_GRACE left" in still.reason, still.reason
    assert (refused.outcome, refused.exit_code) == ("untrusted", 1), refused
    assert "still unsigned when TWILIGHT_VERIFY_GRACE ran out" in refused.reason
    assert after.outcome == "quarantined"
    assert len(sink.of(Quarantined)) == 1
    q = {e["digest"]: e["reason"] for e in site.status()["quarantined"]}
    assert q[v2.digest].startswith("signature: missing"), q
    assert site.running_digest() == v1.digest and not engine_has(site, v2)


def test_a_signed_commit_that_is_not_the_builds_revision_is_refused_before_pull(
        site: Site, keys: Keys) -> None:
    v1 = push(site, "v1")
    site.run_app(v1)
    v2 = push(site, "v2")
    keys.sign(v2, annotations={**MAIN, "commit": "f" * 40})  # the right key, another commit
    log = AccessLog()
    p = site.cli("deploy", **verify_cfg(keys))
    assert p.returncode == 1, (p.stdout, p.stderr)
    assert "it signs commit ffffffffffff, the image's revision label is " \
        f"{v2.revision[:12]}" in p.stderr, p.stderr
    assert layers_fetched(site, v2, log) == []
    assert site.running_digest() == v1.digest and not engine_has(site, v2)
    assert site.history()[0]["verified"] is False


def test_the_track_moved_back_is_held_and_an_operator_can_go_back(site: Site,
                                                                  keys: Keys) -> None:
    v1 = signed(keys, push(site, "v1"))
    site.run_app(v1)
    v2 = signed(keys, push(site, "v2"))
    site.config.update(verify_cfg(keys))
    assert site.cli("deploy").returncode == 0 and site.running_digest() == v2.digest
    point_track_at(site, v1)

    check = site.cli("check")
    assert check.returncode == 0, check.stderr
    assert "decision:  downgrade:" in check.stdout, check.stdout
    assert f"twilight-agent deploy {v1.sha_tag}" in check.stdout, check.stdout
    sink = Recorder()
    agent = app.build_agent(site.settings(), sinks=[sink])
    try:
        polls = [agent.poll_once() for _ in range(3)]
    finally:
        agent.close()
    assert [(p.outcome, p.exit_code) for p in polls] == [("nothing_to_do", 0)] * 3, polls
    assert [(e.kind, str(e.build.digest)) for e in sink.of(Held)] == [("downgrade",
                                                                       v1.digest)]
    assert site.running_digest() == v2.digest
    assert site.status()["held"]["kind"] == "downgrade"

    back = site.cli("deploy", v1.sha_tag)  # on purpose
    assert back.returncode == 0 and site.running_digest() == v1.digest, back.stderr
    point_track_at(site, v2)
    assert site.cli("deploy").returncode == 0 and site.running_digest() == v2.digest
    point_track_at(site, v1)
    follows = site.cli("deploy", ALLOW_DOWNGRADE="true")
    assert follows.returncode == 0 and site.running_digest() == v1.digest, follows.stderr


def test_rollback_verifies_a_digest_this_host_never_verified(site: Site, keys: Keys) -> None:
    v1 = push(site, "v1")  # unsigned: verification was switched on later
    site.run_app(v1)
    v2 = signed(keys, push(site, "v2"))
    assert site.cli("deploy").returncode == 0 and site.running_digest() == v2.digest
    site.config.update(verify_cfg(keys))

    refused = site.cli("rollback")
    assert refused.returncode == 2, (refused.stdout, refused.stderr)
    assert "rollback to" in refused.stderr and "signature is missing" in refused.stderr
    assert site.running_digest() == v2.digest
    signed(keys, v1)
    done = site.cli("rollback")
    assert done.returncode == 0 and site.running_digest() == v1.digest, done.stderr
    row = site.history()[0]
    assert (row["trigger"], row["to_digest"], row["verified"]) == ("rollback", v1.digest,
                                                                    True)


def test_a_canary_never_promotes_a_build_it_did_not_verify(site: Site, keys: Keys) -> None:
    v1 = push(site, "v1")
    site.run_app(v1)
    v2 = push(site, "v2")  # deployed while verification was off
    canary = canary_config(site, after="0s")
    assert site.cli("deploy", **canary).returncode == 0 and site.running_digest() == v2.digest
    site.config.update({**canary, **verify_cfg(keys)})
    agent = app.build_agent(site.settings())
    try:
        report = agent.poll_once()
    finally:
        agent.close()
    assert report.outcome == "up_to_date", report
    promotion = site.status()["promotion"]
    assert (promotion["step"], promotion["reason"]) == (
        "dropped", "its signature was never verified on this host"), promotion
    assert stable(site) is None  # the tag was never written
    by_hand = site.cli("promote", v2.sha_tag)
    assert by_hand.returncode == 2 and "signature is missing" in by_hand.stderr, by_hand
    assert stable(site) is None
