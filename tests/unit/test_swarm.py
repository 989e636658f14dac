"""The swarm target's pure parts: its settings, how a service and its tasks read as the
state of one instance (``<service>@<digest>``), and the update body the agent posts."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from twilight_agent.adapters.docker import swarm_spec as ss
from twilight_agent.errors import ConfigError
from twilight_agent.settings import load_settings

IMAGE = "TWILIGHT_IMAGE=ghcr.io/lacatfly/twilight-drive\n"
OLD, NEW = "sha256:" + "a" * 64, "sha256:" + "b" * 64
REPO = "ghcr.io/lacatfly/twilight-drive"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith("TWILIGHT_"):
            monkeypatch.delenv(key)


def _load(tmp_path: Path, text: str) -> Any:
    p = tmp_path / "agent.env"
    p.write_text(IMAGE + text)
    return load_settings(p)


def test_swarm_settings(tmp_path: Path) -> None:
    s = _load(tmp_path, "TWILIGHT_SWARM_SERVICE=web\nTWILIGHT_SWARM_ORDER=start-first\n"
                        "TWILIGHT_SWARM_PARALLELISM=2\nTWILIGHT_SWARM_MONITOR=30s\n")
    assert (s.swarm_service, s.swarm_order, s.swarm_parallelism, s.swarm_monitor) == (
        "web", "start-first", 2, 30.0)
    assert s.has_target


@pytest.mark.parametrize(("extra", "needle"), [
    ("TWILIGHT_SWARM_SERVICE=web\nTWILIGHT_CONTAINER=app\n", "TWILIGHT_CONTAINER, not both"),
    ("TWILIGHT_SWARM_SERVICE=web\nTWILIGHT_COMPOSE_PROJECT=p\n", "not both"),
    ("TWILIGHT_SWARM_SERVICE=web\nTWILIGHT_PRE_DEPLOY=migrate\n", "TWILIGHT_PRE_DEPLOY"),
    ("TWILIGHT_SWARM_SERVICE=web\nTWILIGHT_SWAP=start-first\n", "TWILIGHT_SWARM_ORDER"),
    ("TWILIGHT_SWARM_SERVICE=we b\n", "not a service name"),
    ("TWILIGHT_SWARM_SERVICE=web\nTWILIGHT_SWARM_ORDER=sideways\n", "TWILIGHT_SWARM_ORDER"),
    ("TWILIGHT_SWARM_SERVICE=web\nTWILIGHT_SWARM_PARALLELISM=-1\n", "PARALLELISM"),
    ("TWILIGHT_CONTAINER=app\nTWILIGHT_SWARM_ORDER=start-first\n", "need TWILIGHT_SWARM_SERVICE"),
])
def test_bad_swarm_settings_are_one_line(tmp_path: Path, extra: str, needle: str) -> None:
    with pytest.raises(ConfigError) as exc:
        _load(tmp_path, extra)
    assert needle in str(exc.value) and "\n" not in str(exc.value)


def _svc(digest: str, update: str = "", replicas: int = 1) -> dict[str, Any]:
    return {"ID": "svc1", "Spec": {"TaskTemplate": {"ContainerSpec": {
        "Image": f"{REPO}:sha-1@{digest}"}}, "Mode": {"Replicated": {"Replicas": replicas}}},
        "UpdateStatus": {"State": update} if update else None}


def _task(digest: str, state: str, desired: str = "running", code: int | None = None,
          at: str = "1") -> dict[str, Any]:
    status: dict[str, Any] = {"State": state, "Err": "task: non-zero exit (3)"
                              if state == "failed" else ""}
    if code is not None:
        status["ContainerStatus"] = {"ExitCode": code}
    return {"ID": "t" * 25, "Slot": 1, "DesiredState": desired, "UpdatedAt": at,
            "Spec": {"ContainerSpec": {"Image": f"{REPO}@{digest}"}}, "Status": status}


def test_an_update_in_progress_is_not_passed_yet() -> None:
    st = ss.classify(_svc(NEW, "updating"), [_task(OLD, "running")], NEW)
    assert st.running and st.health == "starting" and not ss.settled(st)


def test_a_completed_update_with_every_task_running_is_running() -> None:
    st = ss.classify(_svc(NEW, "completed", 2), [_task(NEW, "running")] * 2, NEW)
    assert (st.status, st.health, st.restart_count) == ("running", None, 0)
    short = ss.classify(_svc(NEW, "completed", 2), [_task(NEW, "running")], NEW)
    assert short.health == "starting"


def test_a_stale_completed_status_right_after_the_update_waits_for_the_tasks() -> None:
    st = ss.classify(_svc(NEW, "completed"), [_task(OLD, "running")], NEW)
    assert not ss.settled(st)


def test_swarms_rollback_from_a_digest_reads_as_exited_with_its_tasks_exit_code() -> None:
    tasks = [_task(OLD, "running"), _task(NEW, "failed", "shutdown", code=3)]
    for update in ("rollback_started", "rollback_completed"):
        st = ss.classify(_svc(OLD, update), tasks, NEW)
        assert (st.status, st.exit_code) == ("exited", 3)
    back = ss.classify(_svc(OLD, "rollback_completed"), tasks, OLD)
    assert back.status == "running" and ss.settled(back)
    rolling_back = ss.classify(_svc(OLD, "rollback_started"), tasks, OLD)
    assert not ss.settled(rolling_back)


def test_a_paused_update_is_exited_and_another_digest_is_missing() -> None:
    assert ss.classify(_svc(NEW, "paused"), [], NEW).status == "exited"
    assert ss.classify(_svc(OLD, "completed"), [], NEW).status == "missing"
    assert ss.classify(None, [], NEW).status == "missing"


def test_failed_tasks_count_as_restarts_for_the_watch() -> None:
    tasks = [_task(NEW, "running"), _task(NEW, "failed", "shutdown", code=1)]
    assert ss.classify(_svc(NEW, "completed"), tasks, NEW).restart_count == 1


def test_update_body_keeps_the_services_config_except_what_the_agent_sets() -> None:
    spec = {"Name": "web", "TaskTemplate": {"ContainerSpec": {"Image": "x@" + OLD,
                                                              "Env": ["A=1"]}},
            "UpdateConfig": {"Parallelism": 2, "Delay": 10, "Monitor": 90 * ss.NS,
                             "Order": "stop-first", "FailureAction": "pause"}}
    body = ss.update_body(spec, f"{REPO}@{NEW}", gate_s=20)
    assert body["TaskTemplate"]["ContainerSpec"] == {"Image": f"{REPO}@{NEW}", "Env": ["A=1"]}
    assert body["UpdateConfig"] == {"Parallelism": 2, "Delay": 10, "Monitor": 90 * ss.NS,
                                    "Order": "stop-first", "FailureAction": "rollback"}
    body = ss.update_body(spec, f"{REPO}@{NEW}", order="start-first", parallelism=1,
                          monitor_s=120, gate_s=20, failure_action="pause")
    uc = body["UpdateConfig"]
    assert (uc["Order"], uc["Parallelism"], uc["Monitor"], uc["FailureAction"]) == (
        "start-first", 1, 120 * ss.NS, "pause")
    assert spec["TaskTemplate"]["ContainerSpec"]["Image"] == "x@" + OLD  # not mutated
    shorter = ss.update_body(spec, f"{REPO}@{NEW}", monitor_s=30, gate_s=65)
    assert shorter["UpdateConfig"]["Monitor"] == 65 * ss.NS  # never shorter than the gate


def test_no_update_config_gets_swarms_default_monitor_or_the_gate() -> None:
    body = ss.update_body({"TaskTemplate": {}}, f"{REPO}@{NEW}", gate_s=3)
    assert body["UpdateConfig"]["Monitor"] == int(ss.DEFAULT_MONITOR_S * ss.NS)


def test_task_line_and_published_port() -> None:
    line = ss.task_line(_task(NEW, "failed", "shutdown", code=3))
    assert line == "task tttttttttttt slot 1 failed task: non-zero exit (3) exit code 3"
    svc = {"Endpoint": {"Spec": {"Ports": [{"Protocol": "udp", "PublishedPort": 53},
                                            {"Protocol": "tcp", "PublishedPort": 8081,
                                             "PublishMode": "host"}]}}}
    assert ss.published_port(svc) == 8081
    assert ss.published_port({}) is None
