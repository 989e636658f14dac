"""SIGKILL of the agent in each phase of a deploy, then recovery: the service ends healthy on
the old or the new digest, no container or volume data is lost, history says what happened.

The agent runs in a child process built from the real adapters; a thin wrapper SIGKILLs
that process right after a chosen engine call returns (or a moment into verify), so the
kill lands in the same phase every run. Not covered here: dockerd restarting during
verify (the engine is shared with other tests while they run).
"""

from __future__ import annotations

import signal

import pytest

from tests.integration.deploybed import Site, push, python_child
from twilight_agent import app

pytestmark = pytest.mark.integration

CHILD = r"""
import os, signal, sys, threading
from pathlib import Path
from twilight_agent import app
from twilight_agent.settings import load_settings

settings = load_settings(Path(sys.argv[1]))
kind, arg = sys.argv[2].split(":")

def die():
    os.kill(os.getpid(), signal.SIGKILL)

class KillAfter:
    def __init__(self, inner, method):
        self.inner, self.method = inner, method
    def __getattr__(self, name):
        attr = getattr(self.inner, name)
        if name != self.method:
            return attr
        def call(*a, **k):
            out = attr(*a, **k)
            die()
            return out
        return call

class KillDuring:
    def __init__(self, inner, after_s):
        self.inner, self.after_s = inner, after_s
    def verify(self, *a, **k):
        threading.Timer(self.after_s, die).start()
        return self.inner.verify(*a, **k)

runtime = app.build_runtime(settings)
health = app.build_health(settings, runtime)
if kind == "after":
    runtime = KillAfter(runtime, arg)
else:
    health = KillDuring(health, float(arg))
agent = app.build_agent(settings, runtime=runtime, health=health)
agent.deploy()
print("not killed")
"""


def kill_agent_at(site: Site, where: str) -> None:
    proc = python_child(CHILD, site.tmp, str(site.write_config()), where)
    out, err = proc.communicate(timeout=90)
    assert proc.returncode == -signal.SIGKILL, (out, err)


def settle(site: Site, version: str) -> None:
    """What a user checks after recovery: one container under the original name, serving
    ``version``, volume data intact, nothing parked, no journal left open."""
    assert site.containers() == [site.name]
    info = site.inspect()
    assert info["State"]["Running"]
    assert info["HostConfig"]["RestartPolicy"]["Name"] == "unless-stopped"
    site.wait_serving(version, timeout=5)
    assert site.data_intact()
    assert site.status()["phase"] == "IDLE"


@pytest.mark.parametrize(("where", "expect"), [
    ("after:pull", "aborted"),        # pulled, nothing touched yet
    ("after:park", "rolled_back"),    # old container parked (renamed), still serving
    ("after:create_from", "rolled_back"),  # new container created, the old one serving
    ("after:stop", "rolled_back"),    # the old container stopped, the new one not started
    ("after:start", "rolled_back"),   # new container started, not verified
])
def test_kill_before_verify_is_undone_and_the_next_deploy_goes_through(
        site: Site, where: str, expect: str) -> None:
    v1 = push(site, "v1")
    site.run_app(v1)
    v2 = push(site, "v2")
    kill_agent_at(site, where)
    if where == "after:park":
        assert site.containers() == [f"{site.name}.twilight-prev"]
        assert site.serving() == "ok v1"  # stop-first stops the old one only later
    if where == "after:stop":
        assert site.serving() is None  # the kill left the service down
    p = site.cli("deploy")
    assert p.returncode == 0, p.stderr
    settle(site, "v2")
    assert site.running_digest() == v2.digest and site.env_tag() == v2.sha_tag
    recovered, deployed = site.history()[1], site.history()[0]
    assert recovered["outcome"] == expect
    assert recovered["reason"].startswith("recovered at start-up")
    assert recovered["to_digest"] == v2.digest and recovered["from_digest"] == v1.digest
    assert deployed["outcome"] == "deployed"
    assert site.status()["quarantined"] == []  # an interrupted deploy blames no image


def test_kill_after_park_with_the_parked_container_revived(site: Site) -> None:
    """As if dockerd restarted and started the parked container again."""
    v1 = push(site, "v1")
    site.run_app(v1)
    push(site, "v2")
    kill_agent_at(site, "after:stop")
    site.bed.docker.containers.get(f"{site.name}.twilight-prev").start()
    agent = app.build_agent(site.settings())
    agent.recover()
    settle(site, "v1")
    assert site.history()[0]["outcome"] == "rolled_back"


def test_kill_during_verify_verifies_again_and_commits(site: Site) -> None:
    v1 = push(site, "v1")
    site.run_app(v1)
    v2 = push(site, "v2")
    kill_agent_at(site, "during:0.5")
    assert sorted(site.containers()) == [site.name, f"{site.name}.twilight-prev"]
    app.build_agent(site.settings()).recover()  # what the daemon does at start-up
    settle(site, "v2")
    (row,) = site.history()
    assert row["outcome"] == "deployed" and "agent stopped in VERIFY" in row["reason"]
    assert site.env_tag() == v2.sha_tag
    p = site.cli("deploy")
    assert p.returncode == 0 and "up_to_date" in p.stdout
    assert site.running_digest() == v2.digest


@pytest.mark.parametrize("where", ["after:remove", "after:unpark"])
def test_kill_during_rollback_finishes_the_rollback(site: Site, where: str) -> None:
    v1 = push(site, "v1")
    site.run_app(v1)
    bad = push(site, "v2", mode="exit")
    kill_agent_at(site, where)
    p = site.cli("deploy")
    assert p.returncode == 0, p.stderr  # recovery, then: the only candidate is quarantined
    settle(site, "v1")
    assert site.running_digest() == v1.digest and site.env_tag() == v1.sha_tag
    (row,) = site.history()
    assert row["outcome"] == "rolled_back" and row["reason"].startswith("recovered")
    assert [q["digest"] for q in site.status()["quarantined"]] == [bad.digest]


def test_kill_during_commit_finishes_the_commit(site: Site) -> None:
    v1 = push(site, "v1")
    site.run_app(v1)
    v2 = push(site, "v2")
    kill_agent_at(site, "after:tag_image")  # .env written and image tagged; parked one left
    assert sorted(site.containers()) == [site.name, f"{site.name}.twilight-prev"]
    p = site.cli("deploy")
    assert p.returncode == 0 and "up_to_date" in p.stdout, p.stderr
    settle(site, "v2")
    assert site.running_digest() == v2.digest and site.env_tag() == v2.sha_tag
    (row,) = site.history()
    assert row["outcome"] == "deployed" and "agent stopped in COMMIT" in row["reason"]
    assert site.status()["previous"]["digest"] == v1.digest
