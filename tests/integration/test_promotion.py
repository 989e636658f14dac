"""A fleet on the real engine and registry: one canary promoting to ``stable`` and two
followers of ``stable``, each its own container, state and daemon (as hosts would be).

What a user checks: the digest ``stable`` points at (a GET at the registry), the digest
each container runs, the history rows; which host asked the registry for what (each
follower talks to the registry through its own pass-through proxy, which records every
request: the followers' own registry log); the engine's container-create events.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import signal
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from testbed.accesslog import AccessLog
from testbed.faultproxy import FaultProxy
from testbed.services import PASSWORD, USERNAME
from testbed.util import wait_until
from tests.integration.deploybed import SECRET_FORMS, Site, push

pytestmark = [pytest.mark.integration, pytest.mark.one_engine]

FAST = {"HEALTH_INTERVAL": "0.3", "HEALTH_SOAK": "0.5", "HEALTH_TIMEOUT": "6",
        "POLL_INTERVAL": "1s"}  # the default tag pattern lets `stable` through


def stable(site: Site) -> str | None:
    """The digest ``stable`` points at, asked of the registry."""
    try:
        return site.bed.raw.get_manifest(site.repo, "stable")[2]  # type: ignore[no-any-return]
    except httpx.HTTPStatusError as exc:
        if exc.response.status_code == 404:  # no such tag yet
            return None
        raise


def canary_config(site: Site, after: str) -> dict[str, str]:
    token = site.tmp / "promote-token"
    token.write_text(PASSWORD + "\n")
    token.chmod(0o600)
    return {**FAST, "TRACK": "main", "PROMOTE_TO": "stable", "PROMOTE_AFTER": after,
            "REGISTRY_USERNAME": USERNAME, "PROMOTE_PASSWORD_FILE": str(token),
            "RUNTIME_DIRECTORY": str(site.tmp / "run")}


def promotion_step(site: Site) -> str | None:
    db = site.state_dir / "state.db"
    if not db.exists():
        return None
    try:
        with contextlib.closing(sqlite3.connect(db, timeout=1)) as c:
            row = c.execute("SELECT step FROM promotion ORDER BY at DESC, rowid DESC "
                            "LIMIT 1").fetchone()
    except sqlite3.Error:
        return None
    return str(row[0]) if row else None


def at(iso: str) -> float:
    return dt.datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


@contextlib.contextmanager
def daemons(*procs: subprocess.Popen[str]) -> Iterator[list[str]]:
    """Stop the daemons at the end (SIGTERM); the list gets each one's stdout + stderr."""
    outputs: list[str] = []
    try:
        yield outputs
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                out, err = p.communicate(timeout=60)
                outputs.append(out + err)


def created_for(site: Site, since: float, digest: str) -> list[str]:
    """Containers the engine created under ``site``'s name from an image of ``digest``."""
    stream = site.bed.docker.api.events(since=int(since) - 1, until=int(time.time()) + 1,
                                        filters={"type": "container", "event": "create"},
                                        decode=True)
    return [e["Actor"]["Attributes"].get("name", "") for e in stream
            if e["Actor"]["Attributes"].get("name", "").startswith(site.name)
            and digest in e["Actor"]["Attributes"].get("image", "")]


def test_a_good_build_is_promoted_and_followed_a_bad_one_never_leaves_the_canary(
        site: Site, tmp_path: Path) -> None:
    canary = site
    followers = []
    for i in (1, 2):
        (tmp_path / f"f{i}").mkdir()
        followers.append(Site(bed=site.bed, uid=f"{site.uid}-f{i}", repo=site.repo,
                              tmp=tmp_path / f"f{i}"))
    v1 = push(canary, "v1", extra_tags=("stable",))
    for s in (canary, *followers):
        s.run_app(v1)
    t0 = time.time()
    proxies = [FaultProxy().start() for _ in followers]
    procs = [canary.popen("run", **canary_config(canary, "2s"))]
    procs += [f.popen("run", **FAST, TRACK="stable", REGISTRY_URL=p.url,
                      RUNTIME_DIRECTORY=str(f.tmp / "run"))
              for f, p in zip(followers, proxies, strict=True)]
    try:
        with daemons(*procs) as outputs:
            v2 = push(canary, "v2")
            mark = AccessLog()
            wait_until(lambda: stable(canary) == v2.digest, timeout=60, what="stable -> v2")
            puts = [r for r in mark.served(canary.repo) if r[0] == "PUT"]
            for f in followers:  # running v2, its deploy recorded
                wait_until(lambda f=f: f.running_digest() == v2.digest and f.history(),
                           timeout=30, what=f"{f.name} runs v2")
            deployed, promoted = canary.history()[1], canary.history()[0]
            assert (deployed["outcome"], deployed["to_digest"]) == ("deployed", v2.digest)
            assert (promoted["outcome"], promoted["to_digest"], promoted["from_digest"]) == (
                "promoted", v2.digest, v1.digest)
            assert at(promoted["started"]) - at(deployed["finished"]) >= 2 - 1  # 1 s: ISO
            assert puts == [("PUT", f"/v2/{canary.repo}/manifests/stable", 201)]
            for f in followers:  # within one poll (1 s + 10 % jitter; ISO seconds)
                (row,) = f.history()
                assert row["to_digest"] == v2.digest
                assert at(row["started"]) - at(promoted["finished"]) <= 1.1 + 1 + 1, row

            before = [len(p.requests) for p in proxies]  # idle: one HEAD per poll
            time.sleep(3.5)
            for p, n in zip(proxies, before, strict=True):
                idle = p.requests[n:]
                assert 2 <= len(idle) <= 5, idle
                assert {(r[1], r[2], r[3]) for r in idle} == {
                    ("HEAD", f"/v2/{canary.repo}/manifests/stable", "200")}, idle

            v3 = push(canary, "v3", mode="exit")
            wait_until(lambda: any(r["outcome"] == "rolled_back" and r["to_digest"] ==
                                   v3.digest for r in canary.history()), timeout=60,
                       what="the canary rolls v3 back")
            time.sleep(3.5)  # past PROMOTE_AFTER, several follower polls
            assert stable(canary) == v2.digest
            assert canary.running_digest() == v2.digest
            for f, p in zip(followers, proxies, strict=True):
                assert f.running_digest() == v2.digest
                assert [r["to_digest"] for r in f.history()] == [v2.digest]
                assert not [r for r in p.requests if v3.digest in r[2]]
                assert created_for(f, t0, v3.digest) == []
            assert created_for(canary, t0, v3.digest)  # the check above can see one
        assert '"event": "promotion"' in outputs[0]  # the canary's log says it promoted
        state = (canary.state_dir / "state.db").read_bytes().decode(errors="replace")
        for secret in SECRET_FORMS:  # the push token (the bed's PAT) and its tokens
            assert secret not in outputs[0] and secret not in state, secret[:6]
    finally:
        for p in proxies:
            p.stop()
        for f in followers:
            f.teardown()


def test_kill_9_during_promotion_leaves_the_old_or_new_digest_and_a_restart_finishes(
        site: Site) -> None:
    v1 = push(site, "v1", extra_tags=("stable",))
    site.run_app(v1)
    v2 = push(site, "v2")
    site.config.update(canary_config(site, "1s"))
    with FaultProxy() as proxy:
        proxy.set("slow", only="/manifests/stable", delay=120)  # the registry never answers
        agent = site.popen("run", REGISTRY_URL=proxy.url)
        with daemons(agent):
            wait_until(lambda: promotion_step(site) == "promoting" or agent.poll() is not None,
                       timeout=60, interval=0.02, what="the canary to begin the promotion")
            assert agent.poll() is None, agent.communicate()
            time.sleep(0.3)  # it is asking the registry about stable now
            agent.kill()
            agent.wait(timeout=10)
            proxy.clear()
    assert stable(site) == v1.digest  # the old digest: never anything else
    assert site.running_digest() == v2.digest
    again = site.popen("run")
    with daemons(again):
        wait_until(lambda: stable(site) == v2.digest, timeout=30, what="the restart promotes")
        wait_until(lambda: promotion_step(site) == "promoted", timeout=10, what="recorded")
    rows = [r for r in site.history() if r["outcome"] == "promoted"]
    assert [(r["to_digest"], r["from_digest"]) for r in rows] == [(v2.digest, v1.digest)]
    shown = site.status()["promotion"]
    assert (shown["step"], shown["build"]["digest"], shown["tag"]) == (
        "promoted", v2.digest, "stable")
    back = site.cli("promote", v1.sha_tag)  # the operator moves the fleet back: older is ok
    assert back.returncode == 0 and back.stdout.startswith("promoted: stable -> "), back
    assert stable(site) == v1.digest
    assert site.history()[0]["trigger"] == "cli"
    assert site.cli("promote", "not a tag").returncode == 2


def test_a_build_that_broke_after_its_gate_is_not_promoted(site: Site) -> None:
    """Past its gate (and its watch) the build's /healthz starts answering 500 while it
    keeps running: at the due time the gate is asked again, and the promotion is dropped."""
    v1 = push(site, "v1", extra_tags=("stable",))
    site.run_app(v1)
    sick = push(site, "v2", mode="sick-later", die_after=4)
    site.config.update(canary_config(site, "5s"))
    agent = site.popen("run")
    with daemons(agent) as outputs:
        wait_until(lambda: promotion_step(site) in ("dropped", "promoted")
                   or agent.poll() is not None, timeout=60, what="the promotion to end")
    assert promotion_step(site) == "dropped", outputs
    assert stable(site) == v1.digest
    assert site.running_digest() == sick.digest  # the canary itself still runs it
    shown = site.status()["promotion"]
    assert (shown["step"], shown["build"]["digest"]) == ("dropped", sick.digest)
    assert "not running healthy on this host" in shown["reason"], shown
    assert "500" in shown["reason"], shown
    assert not [r for r in site.history() if r["outcome"] == "promoted"]
