"""Compose as a first-class target: a service ``docker compose up -d`` created, swapped by the
agent, then handled by compose again the way an operator would (``ps``, ``up -d`` with the
rewritten ``.env``, ``down``). On the 26 lane with compose v2 (Debian 13's plugin); on the
20.10 lane with compose v1 (Debian 12's docker-compose 1.29) and v2.

Every deploy outcome (good, exit at boot, 500, agent SIGKILLed in verify) must keep the
service's networks and aliases, its named and anonymous volume data, the labels compose
wrote, and the MAC address the compose file sets.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from testbed import engines
from tests.integration.composebed import ComposeSite, lane_flavours
from tests.integration.deploybed import push, python_child
from tests.integration.test_recovery import CHILD
from twilight_agent import app

pytestmark = pytest.mark.integration


@pytest.fixture(params=lane_flavours())
def csite(request: pytest.FixtureRequest, bed: Any, repo: str, cleanup: str,
          tmp_path: Path) -> Iterator[ComposeSite]:
    s = ComposeSite(bed=bed, uid=cleanup, repo=repo, tmp=tmp_path, flavour=request.param)
    yield s
    s.down()
    s.teardown()


def test_compose_ps_lists_the_swapped_container_as_the_service(csite: ComposeSite) -> None:
    v1 = push(csite, "v1")
    old_id = csite.up(v1)
    old_name = csite.name
    v2 = push(csite, "v2")
    p = csite.cli("deploy")
    assert p.returncode == 0, p.stderr
    new = csite.inspect()
    assert new["Id"] != old_id and csite.running_digest() == v2.digest
    rows = csite.ps()
    assert [(r["service"], r["name"], r["state"]) for r in rows] == [
        ("app", old_name, "running")], rows
    assert new["Id"].startswith(rows[0]["id"])
    assert csite.env_tag() == v2.sha_tag


def test_compose_up_after_a_deploy_changes_nothing_the_first_time_too(
        csite: ComposeSite) -> None:
    v1 = push(csite, "v1")
    csite.up(v1)
    v2 = push(csite, "v2")
    p = csite.cli("deploy")
    assert p.returncode == 0, p.stderr
    deployed = csite.inspect()["Id"]
    assert csite.env_digest() == v2.digest
    csite.compose("-f", "compose.yml", "up", "-d")  # the operator, with the agent's .env
    assert csite.inspect()["Id"] == deployed  # not recreated: no restart nobody asked for
    assert len(csite.service_containers(include_parked=True)) == 1  # no second replica
    csite.wait_serving("v2", timeout=15)
    assert csite.running_digest() == v2.digest
    assert csite.data_intact()  # named and anonymous volume
    csite.compose("-f", "compose.yml", "up", "-d")
    assert csite.inspect()["Id"] == deployed
    assert [r["state"] for r in csite.ps()] == ["running"]


def test_compose_up_after_a_rollback_in_the_watch_changes_nothing(csite: ComposeSite) -> None:
    """The first container came from compose with no IMAGE_DIGEST in ``.env``; the commit
    wrote one, the watch rolled back: ``.env`` is put back as compose last saw it, so the
    restored container's config hash still matches (found by the chaos soak)."""
    v1 = push(csite, "v1")
    old_id = csite.up(v1)
    env_before = csite.env_file.read_bytes()
    bad = push(csite, "v2", mode="die-later", die_after=3)
    p = csite.cli("deploy", WATCH="15s")
    assert p.returncode == 1 and "watch" in p.stderr, (p.stdout, p.stderr)
    assert csite.inspect()["Id"] == old_id and csite.running_digest() == v1.digest
    assert csite.env_file.read_bytes() == env_before
    assert bad.digest in {q["digest"] for q in csite.status()["quarantined"]}
    csite.compose("-f", "compose.yml", "up", "-d")  # the operator, after the night
    assert csite.inspect()["Id"] == old_id  # not recreated
    assert len(csite.service_containers(include_parked=True)) == 1
    csite.wait_serving("v1", timeout=15)


def test_compose_pull_and_up_after_the_tag_moved_run_the_deployed_digest(
        csite: ComposeSite) -> None:
    csite.up(push(csite, "v1"))
    v2 = push(csite, "v2")
    p = csite.cli("deploy")
    assert p.returncode == 0, p.stderr
    deployed = csite.inspect()["Id"]
    moved = push(csite, "v3", revision=v2.revision)  # another build on the same sha tag
    assert moved.sha_tag == v2.sha_tag and moved.digest != v2.digest
    csite.compose("-f", "compose.yml", "pull")
    csite.compose("-f", "compose.yml", "up", "-d")
    assert csite.inspect()["Id"] == deployed
    assert csite.running_digest() == v2.digest
    csite.wait_serving("v2", timeout=15)


def test_a_compose_file_edited_before_the_deploy_is_still_applied_by_up(
        csite: ComposeSite) -> None:
    """The new container is the old one's config on the new build: when the compose file
    says something else by now, the labels must not claim otherwise, so up -d applies it."""
    csite.up(push(csite, "v1"))
    compose_file = csite.project_dir / "compose.yml"
    compose_file.write_text(compose_file.read_text().replace(
        "RUNTIME_VAR: hello", "RUNTIME_VAR: edited"))
    v2 = push(csite, "v2")
    p = csite.cli("deploy")
    assert p.returncode == 0, p.stderr
    deployed = csite.inspect()["Id"]
    assert not csite.labels_agree()
    csite.compose("-f", "compose.yml", "up", "-d")
    info = csite.inspect()
    assert info["Id"] != deployed and "RUNTIME_VAR=edited" in info["Config"]["Env"]
    assert csite.running_digest() == v2.digest and csite.labels_agree()


def test_compose_down_after_deploys_leaves_no_container(csite: ComposeSite) -> None:
    csite.up(push(csite, "v1"))
    push(csite, "v2")
    assert csite.cli("deploy").returncode == 0
    push(csite, "v3", mode="exit")
    assert csite.cli("deploy").returncode == 1  # rolled back: v2 serves again
    csite.wait_serving("v2", timeout=5)
    csite.compose("-f", "compose.yml", "down", "-t", "2")
    assert csite.project_containers() == []
    assert csite.bed.docker.networks.list(names=[f"{csite.uid}_front"]) == []


@pytest.mark.parametrize("outcome", ["good", "exit", "500", "sigkill-in-verify"])
def test_every_deploy_outcome_keeps_networks_volumes_labels_and_mac(
        csite: ComposeSite, outcome: str) -> None:
    v1 = push(csite, "v1")
    csite.up(v1)
    before = csite.kept()
    # The compose file's MAC is there to be kept. Compose v2 2.26 does not apply a service's
    # mac_address on an API 1.41 engine with two networks (v1 does; on 26 v2 does): pinned
    # here, so a compose that starts doing it turns this test red rather than unchecked.
    mac_applied = not (csite.flavour == "v2" and engines.running_key() == "20.10")
    assert before["mac_set"] is mac_applied, before
    mode = {"exit": "exit", "500": "500"}.get(outcome, "good")
    v2 = push(csite, "v2", mode=mode)
    if outcome == "sigkill-in-verify":
        proc = python_child(CHILD, csite.tmp, str(csite.write_config()), "during:0.5")
        out, err = proc.communicate(timeout=90)
        assert proc.returncode == -signal.SIGKILL, (out, err)
        app.build_agent(csite.settings()).recover()  # what the daemon does at start-up
        expect = v2
    else:
        p = csite.cli("deploy", HEALTH_TIMEOUT="4")
        assert p.returncode == (0 if outcome == "good" else 1), p.stderr
        expect = v2 if outcome == "good" else v1
    csite.wait_serving(expect.version, timeout=10)
    assert csite.running_digest() == expect.digest
    assert csite.service_containers(include_parked=True) == [csite.name]
    assert csite.data_intact()
    assert csite.kept() == before
    assert csite.labels_agree()  # the new build's, or the old one's back after a rollback
    assert csite.history()[0]["outcome"] == ("deployed" if expect is v2 else "rolled_back")
    assert [(r["service"], r["state"]) for r in csite.ps()] == [("app", "running")]
